"""Twilio's list pages: which fields describe the page, where the items are, what comes next.

Pure, no I/O. 2010 API lists carry ``next_page_uri`` (relative) and paging fields beside the
items; v1/v2 lists carry ``meta.next_page_url`` (absolute) and the items under ``meta.key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PAGING_FIELDS", "next_page", "split_page"]

# Top-level fields of a 2010 list page that describe the page, not the items; ``meta`` holds
# the same for the v1/v2 product APIs.
PAGING_FIELDS = frozenset(
    {
        "page",
        "page_size",
        "num_pages",
        "total",
        "start",
        "end",
        "uri",
        "first_page_uri",
        "next_page_uri",
        "previous_page_uri",
        "last_page_uri",
        "meta",
    }
)


def split_page(body: Mapping[str, Any]) -> tuple[str, list[Any], dict[str, Any]] | None:
    """(items key, items, paging fields) when ``body`` is a list page, else ``None``."""
    lists = [key for key, value in body.items() if isinstance(value, list)]
    if len(lists) != 1:
        return None
    key = lists[0]
    items = body[key]
    if not all(isinstance(item, dict) for item in items):
        return None
    paging = {name: value for name, value in body.items() if name != key}
    if not PAGING_FIELDS.issuperset(paging):
        return None
    return key, items, paging


def next_page(body: Any) -> str | None:
    """The next page of a list answer: 2010 ``next_page_uri`` or v1/v2 ``meta.next_page_url``."""
    if not isinstance(body, dict):
        return None
    uri = body.get("next_page_uri")
    meta = body.get("meta")
    if uri is None and isinstance(meta, dict):
        uri = meta.get("next_page_url")
    return uri if isinstance(uri, str) and uri else None
