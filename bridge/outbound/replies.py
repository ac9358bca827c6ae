"""The reply envelope for Twilio's answer, or for a failure to get one, and its shape (nulls
filtered out, body in the asked format). Pure, no I/O."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from pydantic_core import PydanticSerializationError

from bridge.contract.envelopes import (
    ErrorInfo,
    ErrorRecord,
    Reply,
    SourceRef,
    error_info,
    utc_timestamp,
)
from bridge.contract.errors import BridgeError
from bridge.kafka.records import Record
from bridge.outbound.formats import ReplyFormat, filter_nulls, render, resource_name
from bridge.twilio.calls import TwilioCall
from bridge.twilio.headers import select_headers
from bridge.twilio.pages import next_page
from bridge.twilio.responses import HttpResult, failure_from_response, parse_body

__all__ = [
    "error_record",
    "error_record_bytes",
    "error_reply",
    "reply_bytes",
    "reply_for_response",
    "shaped",
]


def reply_for_response(
    request_id: str,
    call: TwilioCall,
    result: HttpResult,
    *,
    response_headers: list[str] | str | None,
    metadata: dict[str, Any] | None,
    attempts: int,
    duration_ms: float,
    wait_ms: float = 0.0,
) -> Reply:
    """The reply for Twilio's answer: ``ok`` for 2xx/3xx, otherwise an error from its body."""
    body = parse_body(result)
    error = (
        None if result.status < 400 else error_info(failure_from_response(result, body).to_detail())
    )
    return Reply(
        id=request_id,
        status="ok" if error is None else "error",
        http_status=result.status,
        api=call.api,
        operation=call.operation,
        method=call.method,
        path=call.path,
        body=body,
        content_type=result.content_type,
        headers=select_headers(result.headers, response_headers),
        pages=1,
        next_page_uri=next_page(body),
        attempts=attempts,
        duration_ms=round(duration_ms, 3),
        wait_ms=round(wait_ms, 3),
        metadata=metadata,
        error=error,
        warnings=list(call.warnings),
    )


def error_reply(
    request_id: str,
    error: BridgeError,
    *,
    call: TwilioCall | None = None,
    metadata: dict[str, Any] | None = None,
    attempts: int = 0,
    duration_ms: float = 0.0,
    wait_ms: float = 0.0,
    warnings: Iterable[str] = (),
) -> Reply:
    """The reply for a request that failed before or while calling Twilio."""
    return Reply(
        id=request_id,
        status="error",
        api=call.api if call else None,
        operation=call.operation if call else None,
        method=call.method if call else None,
        path=call.path if call else None,
        attempts=attempts,
        duration_ms=round(duration_ms, 3),
        wait_ms=round(wait_ms, 3),
        metadata=metadata,
        error=error_info(error.to_detail()),
        warnings=[*(call.warnings if call else ()), *warnings],
    )


def shaped(reply: Reply, response_format: ReplyFormat, strip_nulls: bool) -> Reply:
    """The reply with its body's nulls left out when ``strip_nulls``, in ``response_format``.

    A body that cannot be written in that format stays JSON, with a warning saying why.
    """
    if not isinstance(reply.body, dict | list) or (response_format == "json" and not strip_nulls):
        return reply
    body = filter_nulls(reply.body) if strip_nulls else reply.body
    try:
        body, content_type = render(body, response_format, resource_name(reply.path or ""))
    except ValueError as exc:
        warning = f"response_format '{response_format}' not applied: {exc}"
        return reply.model_copy(update={"body": body, "warnings": [*reply.warnings, warning]})
    return reply.model_copy(update={"body": body, "content_type": content_type})


def reply_bytes(reply: Reply, limit: int) -> bytes:
    """The reply as JSON within ``limit`` bytes: without its body, then its metadata, if need be.

    A reply always arrives, saying what was left out and why: a body too large for the broker,
    or one nested too deeply to be written again.
    """
    try:
        value = reply.model_dump_json().encode()
    except PydanticSerializationError:
        why = "the reply body is nested too deeply to be serialised"
    else:
        if len(value) <= limit:
            return value
        why = f"the reply ({len(value)} bytes) exceeds the broker's message limit"
    slim = reply.model_copy(
        update={"body": None, "warnings": [*reply.warnings, f"body omitted: {why}"]}
    )
    value = slim.model_dump_json().encode()
    if len(value) <= limit:
        return value
    note = "metadata omitted: still too large without the body"
    bare = slim.model_copy(update={"metadata": None, "warnings": [*slim.warnings, note]})
    return bare.model_dump_json().encode()


def error_record_bytes(record: ErrorRecord, limit: int) -> bytes:
    """The error record as JSON within ``limit`` bytes; past it, the request copy is left out
    (``source`` still says where the request is, for a replay)."""
    value = record.model_dump_json().encode()
    if len(value) <= limit:
        return value
    return record.model_copy(update={"request": None, "raw": None}).model_dump_json().encode()


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def error_record(
    record: Record,
    error: ErrorInfo,
    *,
    request_id: str | None,
    document: dict[str, Any] | None,
) -> ErrorRecord:
    """The error-topic record for a failure of ``record``, with the request (or, when it did not
    parse, its raw bytes) for replay; without either, ``source`` still says where it is."""
    return ErrorRecord(
        id=request_id,
        error=error,
        source=SourceRef(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_b64(record.key),
            timestamp_ms=record.timestamp_ms,
        ),
        request=document,
        raw=None if document is not None else _b64(record.value),
        time=utc_timestamp(),
    )
