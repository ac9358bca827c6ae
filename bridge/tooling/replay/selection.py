"""What a replay sends again: one decision per error record, and the tally. Pure, no I/O.

An error record (``bridge.contract.envelopes.ErrorRecord``) keeps the request as it came, its
key and the topic it came from. A record is replayed when it passes every filter and its
original is usable: an envelope object with an id. A payload that was not JSON (``raw``), or a
request left out of its error record, is skipped and counted, never sent.
"""

from __future__ import annotations

import base64
import re
import typing
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from pydantic import ValidationError

from bridge.contract.envelopes import ErrorRecord
from bridge.contract.errors import ErrorKind

__all__ = [
    "KINDS",
    "MAX_ID",
    "Replay",
    "Selection",
    "Skip",
    "Tally",
    "build_selection",
    "decide",
    "parse_moment",
    "replay_id",
]

KINDS: tuple[str, ...] = typing.get_args(ErrorKind)
MAX_ID = 256  # the envelope's limit on ids

# Why a record was not replayed: the summary's words.
NOT_AN_ERROR_RECORD = "not an error record"
OTHER_SOURCE = "other source topic"
OUTSIDE_TIME = "outside the time range"
OTHER_ID = "other id"
NOT_RETRYABLE = "not retryable"
OTHER_KIND = "other kind"
RAW = "raw payload, not an envelope"
NOT_KEPT = "original not kept"
NO_ID = "original has no usable id"
ID_TOO_LONG = f"replay id over {MAX_ID} characters"

_REPLAYED = re.compile(r"(?P<base>.*)~replay-(?P<n>[0-9]+)", re.DOTALL)
_AGO = re.compile(r"(?P<amount>[0-9]+(?:\.[0-9]+)?)(?P<unit>[smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Selection:
    """The filters. ``kinds`` None: the errors the bridge marked retryable (429, Twilio 5xx,
    timeouts, transport failures); empty sets for ids and source topics: any."""

    kinds: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Replay:
    """A request to publish again: where, under which key, and what."""

    topic: str
    key: bytes | None
    value: bytes
    request_id: str
    kind: str


@dataclass(frozen=True)
class Skip:
    """A record not replayed, and why."""

    reason: str


def replay_id(request_id: str) -> str:
    """``<id>~replay-1`` for a first replay, ``<id>~replay-<n+1>`` for a replay of replay n.

    The same error record always gets the same new id, so a record sent twice (a run
    interrupted between the broker's acknowledgement and the commit) is a duplicate that the
    bridge's outbound dedupe answers once.
    """
    found = _REPLAYED.fullmatch(request_id)
    if found is None:
        return f"{request_id}~replay-1"
    return f"{found['base']}~replay-{int(found['n']) + 1}"


def parse_moment(text: str, now: datetime) -> datetime:
    """ISO 8601 (UTC unless it names an offset), or a duration before ``now``: ``90m``,
    ``2h``, ``1.5d``, ``30s``. Raises ValueError naming the accepted forms."""
    ago = _AGO.fullmatch(text.strip())
    if ago is not None:
        return now - timedelta(**{_UNITS[ago["unit"]]: float(ago["amount"])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-11-23T14:00Z) nor a duration ago "
            "(30s, 90m, 2h, 1d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _listed(values: list[str] | None) -> frozenset[str]:
    """Repeated and comma-separated values, as one set."""
    return frozenset(v.strip() for arg in values or () for v in arg.split(",") if v.strip())


def build_selection(
    *,
    kinds: list[str] | None,
    since: str | None,
    until: str | None,
    ids: list[str] | None,
    source_topics: list[str] | None,
    now: datetime,
) -> Selection:
    """The selection the command line asks for; ValueError names what it cannot use."""
    chosen = _listed(kinds) or None
    if chosen is not None and not chosen <= set(KINDS):
        unknown = ", ".join(sorted(chosen - set(KINDS)))
        raise ValueError(f"--kind: unknown {unknown}; the kinds are {', '.join(KINDS)}")
    return Selection(
        kinds=chosen,
        since=parse_moment(since, now) if since else None,
        until=parse_moment(until, now) if until else None,
        ids=_listed(ids),
        source_topics=_listed(source_topics),
    )


def _filtered_out(record: ErrorRecord, selection: Selection) -> str | None:
    """Why ``record`` does not pass the filters, or None."""
    if selection.source_topics and record.source.topic not in selection.source_topics:
        return OTHER_SOURCE
    if selection.since is not None or selection.until is not None:
        try:
            recorded = datetime.fromisoformat(record.time)
        except ValueError:
            return NOT_AN_ERROR_RECORD
        if recorded.tzinfo is None:
            recorded = recorded.replace(tzinfo=UTC)
        if (selection.since is not None and recorded < selection.since) or (
            selection.until is not None and recorded >= selection.until
        ):
            return OUTSIDE_TIME
    if selection.ids and record.id not in selection.ids:
        return OTHER_ID
    if selection.kinds is None:
        return None if record.error.retryable else NOT_RETRYABLE
    return None if record.error.kind in selection.kinds else OTHER_KIND


def decide(
    value: bytes | None, selection: Selection, *, new_ids: bool, to: str | None
) -> Replay | Skip:
    """What to do with one record of the error topic."""
    try:
        record = ErrorRecord.model_validate_json(value or b"")
    except ValidationError:
        return Skip(NOT_AN_ERROR_RECORD)
    reason = _filtered_out(record, selection)
    if reason is not None:
        return Skip(reason)
    request = record.request
    if request is None:
        return Skip(RAW if record.raw is not None else NOT_KEPT)
    request_id = request.get("id")
    if not isinstance(request_id, str) or not request_id:
        return Skip(NO_ID)
    if new_ids:
        request_id = replay_id(request_id)
        if len(request_id) > MAX_ID:
            return Skip(ID_TOO_LONG)
        request = {**request, "id": request_id}
    key = base64.b64decode(record.source.key) if record.source.key is not None else None
    return Replay(
        topic=to or record.source.topic,
        key=key,
        value=orjson.dumps(request),
        request_id=request_id,
        kind=record.error.kind,
    )


@dataclass
class Tally:
    """What a run read, replayed (by error kind) and skipped (by reason)."""

    read: int = 0
    replayed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def count(self, outcome: Replay | Skip) -> None:
        self.read += 1
        if isinstance(outcome, Replay):
            self.replayed[outcome.kind] += 1
        else:
            self.skipped[outcome.reason] += 1

    def summary(self, *, dry_run: bool) -> str:
        """Three lines: read, replayed by kind, skipped by reason."""

        def counts(counter: Counter[str]) -> str:
            parts = ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))
            return f"{counter.total()}" + (f" ({parts})" if parts else "")

        verb = "would replay" if dry_run else "replayed"
        return (
            f"{'read':<13}{self.read}\n"
            f"{verb:<13}{counts(self.replayed)}\n"
            f"{'skipped':<13}{counts(self.skipped)}"
        )
