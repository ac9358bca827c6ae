"""Header selection as the SAP Twilio adapter does it: a list, 'A|B', or '*' for all.

Headers that would let an envelope change who we are or how bytes are framed are never
forwarded to Twilio, whatever the selection says.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FORBIDDEN_REQUEST_HEADERS", "select_headers", "selection"]

FORBIDDEN_REQUEST_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "cookie",
        "expect",
    }
)


def selection(spec: list[str] | str | None) -> frozenset[str] | None:
    """Lower-cased names to keep; ``None`` means all ('*'), an empty set means none."""
    if spec is None:
        return frozenset()
    names = spec.split("|") if isinstance(spec, str) else spec
    cleaned = {name.strip().lower() for name in names if name.strip()}
    return None if "*" in cleaned else frozenset(cleaned)


def select_headers(
    headers: Iterable[tuple[str, str]],
    spec: list[str] | str | None,
    forbidden: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The headers ``spec`` selects, minus ``forbidden`` ones; repeated names are comma-joined."""
    wanted = selection(spec)
    if wanted is not None and not wanted:
        return {}
    kept: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in forbidden or (wanted is not None and lower not in wanted):
            continue
        kept[lower] = f"{kept[lower]}, {value}" if lower in kept else value
    return kept
