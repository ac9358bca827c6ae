"""The error records of awaited webhooks that got the fallback. Pure.

They go to the error topic beside the outbound flow's, with kinds that already say what
happened: ``timeout`` (no answer in time; ``source`` is the event that was not answered) and
``validation`` (the answer cannot be given to Twilio; ``source`` is the answer, ``raw`` its
bytes). ``id`` is the event's id, which is also the record's key.
"""

from __future__ import annotations

import base64

from bridge.contract.envelopes import ErrorInfo, ErrorRecord, SourceRef, utc_timestamp
from bridge.kafka.records import Record

__all__ = ["invalid_answer", "no_answer", "source_of"]


def source_of(record: Record) -> SourceRef:
    """Where ``record`` is in Kafka."""
    key = base64.b64encode(record.key).decode() if record.key is not None else None
    return SourceRef(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        timestamp_ms=record.timestamp_ms,
    )


def no_answer(event_id: str, family: str, event: SourceRef, timeout_s: float) -> ErrorRecord:
    """The record of an event whose answer did not come within ``timeout_s``."""
    message = (
        f"no TwiML answer within {timeout_s:g} s of the {family} webhook; Twilio got the fallback"
    )
    return ErrorRecord(
        id=event_id,
        error=ErrorInfo(kind="timeout", message=message),
        source=event,
        time=utc_timestamp(),
    )


def invalid_answer(
    event_id: str, family: str, answer: Record, reason: str, raw_limit: int
) -> ErrorRecord:
    """The record of an answer Twilio cannot be given; its bytes in ``raw`` up to ``raw_limit``."""
    value = answer.value or b""
    message = f"the TwiML answer to the {family} webhook cannot be used: {reason}; Twilio got "
    return ErrorRecord(
        id=event_id,
        error=ErrorInfo(kind="validation", message=message + "the fallback"),
        source=source_of(answer),
        raw=base64.b64encode(value).decode() if len(value) <= raw_limit else None,
        time=utc_timestamp(),
    )
