"""Twilio's answer to one HTTP call, and what its body says. Pure, no I/O.

Twilio's classic error body is ``{"code", "message", "more_info", "status"}``; newer APIs may
answer RFC 9457 problem details (``type``, ``title``, ``detail``, ``code``). Both are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.contract.errors import TwilioCallFailed

__all__ = ["HttpResult", "failure_from_response", "parse_body", "twilio_code"]


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
