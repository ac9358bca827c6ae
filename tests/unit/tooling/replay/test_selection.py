"""Which error records a replay sends again, and what it sends."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from bridge.contract.envelopes import ErrorInfo, ErrorRecord, error_info
from bridge.contract.errors import (
    CallTimeout,
    ErrorDetail,
    RequestInvalid,
    TwilioCallFailed,
    UnknownOutcome,
)
from bridge.kafka.records import Record
from bridge.outbound.replies import error_record
from bridge.tooling.replay.selection import (
    KINDS,
    MAX_ID,
    Replay,
    Selection,
    Skip,
    Tally,
    build_selection,
    decide,
    parse_moment,
    replay_id,
)

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
DEFAULT = Selection()
ENVELOPE: dict[str, Any] = {
    "id": "order-1",
    "mode": "basic",
    "operation": "CreateMessage",
    "body": {"To": "+14155550100", "From": "+14155550101", "Body": "hi"},
}


def failure(
    detail: ErrorDetail | ErrorInfo,
    document: dict[str, Any] | None = ENVELOPE,
    *,
    raw: bytes | None = None,
    key: bytes | None = b"order-key",
    topic: str = "twilio.requests",
    time: str | None = None,
) -> bytes:
    """An error-topic value, built by the bridge's own error-record builder."""
    value = raw if raw is not None else json.dumps(document).encode()
    record = Record(topic, 0, 41, key, value, timestamp_ms=1_763_900_000_000)
    info = detail if isinstance(detail, ErrorInfo) else error_info(detail)
    request_id = document.get("id") if document else None
    request_id = request_id if isinstance(request_id, str) else None  # as the bridge reads it
    built = error_record(
        record, info, request_id=request_id, document=None if raw is not None else document
    )
    if time is not None:
        built = built.model_copy(update={"time": time})
    return built.model_dump_json().encode()


UNAVAILABLE = TwilioCallFailed("Service Unavailable", http_status=503, twilio_code=20503)
BAD_NUMBER = TwilioCallFailed("invalid To", http_status=400, twilio_code=21211)


def test_a_retryable_failure_is_replayed_as_it_came() -> None:
    outcome = decide(failure(UNAVAILABLE.to_detail()), DEFAULT, new_ids=False, to=None)
    assert outcome == Replay(
        topic="twilio.requests",
        key=b"order-key",
        value=orjson.dumps(ENVELOPE),
        request_id="order-1",
        kind="twilio",
    )


def test_new_ids_and_another_topic() -> None:
    outcome = decide(failure(CallTimeout("slow").to_detail()), DEFAULT, new_ids=True, to="redo")
    assert isinstance(outcome, Replay)
    assert (outcome.topic, outcome.request_id, outcome.kind) == (
        "redo",
        "order-1~replay-1",
        "timeout",
    )
    assert json.loads(outcome.value) == {**ENVELOPE, "id": "order-1~replay-1"}


def test_by_default_only_what_the_bridge_marked_retryable() -> None:
    for detail in (
        BAD_NUMBER.to_detail(),
        RequestInvalid("missing To", missing=["To"]).to_detail(),
        UnknownOutcome("died").to_detail(),
    ):
        assert decide(failure(detail), DEFAULT, new_ids=False, to=None) == Skip("not retryable")
    rate_limited = TwilioCallFailed("busy", http_status=429, twilio_code=20429).to_detail()
    assert isinstance(decide(failure(rate_limited), DEFAULT, new_ids=False, to=None), Replay)


def test_kinds_asked_for_are_replayed_retryable_or_not() -> None:
    chosen = Selection(kinds=frozenset({"validation", "unknown_outcome"}))
    invalid = failure(RequestInvalid("unknown credential").to_detail())
    assert isinstance(decide(invalid, chosen, new_ids=False, to=None), Replay)
    unknown = failure(UnknownOutcome("died").to_detail())
    assert isinstance(decide(unknown, chosen, new_ids=True, to=None), Replay)
    retryable = failure(UNAVAILABLE.to_detail())
    assert decide(retryable, chosen, new_ids=False, to=None) == Skip("other kind")


def test_records_without_a_usable_original_are_skipped() -> None:
    chosen = Selection(kinds=frozenset(KINDS))
    raw = failure(RequestInvalid("payload is not JSON").to_detail(), None, raw=b"\xff garbage")
    assert decide(raw, chosen, new_ids=False, to=None) == Skip("raw payload, not an envelope")
    kept = ErrorRecord.model_validate_json(failure(UNAVAILABLE.to_detail()))
    not_kept = kept.model_copy(update={"request": None, "raw": None}).model_dump_json().encode()
    assert decide(not_kept, chosen, new_ids=False, to=None) == Skip("original not kept")
    no_id = failure(RequestInvalid("missing id").to_detail(), {**ENVELOPE, "id": 7})
    assert decide(no_id, chosen, new_ids=False, to=None) == Skip("original has no usable id")
    for junk in (None, b"", b"not json", b'{"id": "x"}'):
        assert decide(junk, chosen, new_ids=False, to=None) == Skip("not an error record")


def test_filters_time_ids_and_source_topic() -> None:
    value = failure(UNAVAILABLE.to_detail(), time="2026-11-23T14:30:00.000Z", topic="bulk")
    hour = timedelta(hours=1)

    def verdict(selection: Selection) -> Replay | Skip:
        return decide(value, selection, new_ids=False, to=None)

    assert isinstance(verdict(Selection(since=NOW - hour, until=NOW)), Replay)
    assert verdict(Selection(since=NOW - hour / 4)) == Skip("outside the time range")
    # The end is exclusive: a run up to 14:30 and one from 14:30 never both take it.
    assert verdict(Selection(until=NOW - hour / 2)) == Skip("outside the time range")
    assert isinstance(verdict(Selection(since=NOW - hour / 2)), Replay)
    assert isinstance(verdict(Selection(ids=frozenset({"order-1", "x"}))), Replay)
    assert verdict(Selection(ids=frozenset({"x"}))) == Skip("other id")
    assert verdict(Selection(source_topics=frozenset({"twilio.requests"}))) == Skip(
        "other source topic"
    )
    assert isinstance(verdict(Selection(source_topics=frozenset({"bulk"}))), Replay)


def test_a_record_without_key_is_replayed_without_key() -> None:
    outcome = decide(failure(UNAVAILABLE.to_detail(), key=None), DEFAULT, new_ids=False, to=None)
    assert isinstance(outcome, Replay) and outcome.key is None


def test_replay_ids_count_up_and_stay_within_the_id_limit() -> None:
    assert replay_id("a") == "a~replay-1"
    assert replay_id("a~replay-1") == "a~replay-2"
    assert replay_id("a~replay-9~replay-1") == "a~replay-9~replay-2"
    assert replay_id("a~replay-x") == "a~replay-x~replay-1"
    long_id = "x" * (MAX_ID - 3)
    value = failure(UNAVAILABLE.to_detail(), {**ENVELOPE, "id": long_id})
    assert decide(value, DEFAULT, new_ids=True, to=None) == Skip("replay id over 256 characters")
    assert isinstance(decide(value, DEFAULT, new_ids=False, to=None), Replay)


def test_moments_are_iso_8601_or_a_duration_ago() -> None:
    assert parse_moment("2026-11-23T14:00Z", NOW) == datetime(2026, 11, 23, 14, tzinfo=UTC)
    assert parse_moment("2026-11-23T14:00", NOW) == datetime(2026, 11, 23, 14, tzinfo=UTC)
    assert parse_moment("2026-11-23T16:00+02:00", NOW) == datetime(2026, 11, 23, 14, tzinfo=UTC)
    assert parse_moment("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_moment("1.5d", NOW) == NOW - timedelta(hours=36)
    assert parse_moment("30s", NOW) == NOW - timedelta(seconds=30)
    with pytest.raises(ValueError, match="duration ago"):
        parse_moment("yesterday", NOW)


def test_build_selection_reads_the_command_line() -> None:
    selection = build_selection(
        kinds=["timeout,transport", "validation"],
        since="2h",
        until=None,
        ids=["a", "b,c"],
        source_topics=None,
        now=NOW,
    )
    assert selection == Selection(
        kinds=frozenset({"timeout", "transport", "validation"}),
        since=NOW - timedelta(hours=2),
        ids=frozenset({"a", "b", "c"}),
    )
    assert (
        build_selection(kinds=None, since=None, until=None, ids=None, source_topics=None, now=NOW)
        == Selection()
    )
    with pytest.raises(ValueError, match="unknown nope"):
        build_selection(
            kinds=["nope"], since=None, until=None, ids=None, source_topics=None, now=NOW
        )


def test_the_tally_counts_by_kind_and_reason() -> None:
    tally = Tally()
    replay = Replay("t", None, b"{}", "a", "twilio")
    for outcome in (replay, replay, Skip("not retryable"), Skip("raw payload, not an envelope")):
        tally.count(outcome)
    assert tally.read == 4
    assert tally.summary(dry_run=False).splitlines() == [
        "read         4",
        "replayed     2 (twilio 2)",
        "skipped      2 (not retryable 1, raw payload, not an envelope 1)",
    ]
    assert Tally().summary(dry_run=True).splitlines()[1] == "would replay 0"


def test_the_key_is_the_source_key() -> None:
    value = failure(UNAVAILABLE.to_detail(), key=b"\x00\xffbinary")
    record = ErrorRecord.model_validate_json(value)
    assert record.source.key == base64.b64encode(b"\x00\xffbinary").decode()
    outcome = decide(value, DEFAULT, new_ids=False, to=None)
    assert isinstance(outcome, Replay) and outcome.key == b"\x00\xffbinary"
