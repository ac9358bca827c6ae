"""Classify Twilio's answer (or a failure to get one) into the reply envelope. Pure, no I/O.

Twilio's classic error body is ``{"code", "message", "more_info", "status"}``; newer APIs may
answer RFC 9457 problem details (``type``, ``title``, ``detail``, ``code``). Both are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic_core import PydanticSerializationError

from bridge.calls import TwilioCall
from bridge.envelopes import ErrorRecord, Reply, error_info
from bridge.errors import BridgeError, TwilioCallFailed
from bridge.headers import select_headers

__all__ = [
    "HttpResult",
    "error_reply",
    "failure_from_response",
    "next_page",
    "parse_body",
    "reply_for_response",
    "twilio_code",
    "error_record_bytes",
    "reply_bytes",
]


@dataclass(frozen=True, slots=True)
class HttpResult:
    """Twilio's answer to one HTTP call."""

    status: int
    headers: tuple[tuple[str, str], ...]
    content: bytes
    content_type: str | None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


def parse_body(result: HttpResult) -> Any:
    """The answer's body: parsed JSON when it is JSON, else text; None when empty."""
    if not result.content:
        return None
    if result.content_type and "json" in result.content_type:
        try:
            return orjson.loads(result.content)
        except orjson.JSONDecodeError:
            pass
    return result.content.decode("utf-8", errors="replace")


def next_page(body: Any) -> str | None:
    """The next page of a list answer: 2010 ``next_page_uri`` or v1/v2 ``meta.next_page_url``."""
    if not isinstance(body, dict):
        return None
    uri = body.get("next_page_uri")
    meta = body.get("meta")
    if uri is None and isinstance(meta, dict):
        uri = meta.get("next_page_url")
    return uri if isinstance(uri, str) and uri else None


def twilio_code(result: HttpResult) -> int | None:
    """Twilio's error code from an error response's body, when it has one."""
    fields = parse_body(result)
    code = fields.get("code") if isinstance(fields, dict) else None
    return code if isinstance(code, int) else None


def failure_from_response(result: HttpResult, body: Any) -> TwilioCallFailed:
    """The error a Twilio error response stands for, with Twilio's own code and message."""
    fields: dict[str, Any] = body if isinstance(body, dict) else {}
    code = fields.get("code")
    message = fields.get("message") or fields.get("detail") or fields.get("title")
    more_info = fields.get("more_info") or fields.get("type")
    return TwilioCallFailed(
        str(message) if message else f"Twilio answered HTTP {result.status}",
        http_status=result.status,
        twilio_code=code if isinstance(code, int) else None,
        more_info=str(more_info) if more_info else None,
    )


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
