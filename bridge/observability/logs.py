"""Log lines: one JSON object per line (or plain text), with personal data masked.

Secrets never reach a log call (settings keep them in ``SecretStr``, the Twilio client never
logs a request), so masking here is the second line of defence: it hides what looks like a
phone number, a message body or an Auth Token in any message, argument or extra field,
unless ``show_pii`` allows phone numbers and bodies (tokens are masked always).
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from bridge.observability.tracing import tracer

__all__ = ["FIELDS", "JsonFormatter", "Masker", "configure_logging"]

MASK = "********"
# The fields a request's log line may carry, besides time, level, logger and message.
FIELDS = ("request_id", "operation", "outcome", "duration_ms", "kind", "topic", "family")

# E.164 (as Twilio takes numbers) and the written North American forms; dates, IP addresses,
# offsets and SIDs do not match.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{7,15}|(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})(?!\w)"
)
_BODY = re.compile(r"(\bBody\b[\"']?\s*[=:]\s*[\"']?)([^&\"'\n]*)", re.IGNORECASE)
# An Auth Token or API key secret: 32 lowercase hex not glued to a SID prefix.
_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z])")


class Masker:
    """Masks tokens always, phone numbers and bodies unless ``show_pii``."""

    def __init__(self, show_pii: bool = False) -> None:
        self.show_pii = show_pii

    def __call__(self, text: str) -> str:
        """``text`` with everything it must not show replaced by ``********``."""
        text = _TOKEN.sub(MASK, text)
        if self.show_pii:
            return text
        text = _BODY.sub(lambda m: m.group(1) + MASK, text)
        return _PHONE.sub(MASK, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``FIELDS`` given."""

    def __init__(self, mask: Masker) -> None:
        super().__init__()
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single JSON line, masked."""
        line: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": self._mask(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = self._mask(value) if isinstance(value, str) else value
        ids = tracer().ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if record.exc_info:
            line["exception"] = self._mask(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def _utc(record: logging.LogRecord) -> str:
    when = datetime.fromtimestamp(record.created, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class _TextFormatter(logging.Formatter):
    def __init__(self, mask: Masker) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{n}={record.__dict__[n]}" for n in FIELDS if record.__dict__.get(n) is not None]
        return self._mask(" ".join([text, *extras]))


def configure_logging(
    level: str, fmt: Literal["json", "text"] = "json", show_pii: bool = False
) -> None:
    """Send every log record to stderr in ``fmt``, at ``level``, masked."""
    mask = Masker(show_pii)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(mask) if fmt == "json" else _TextFormatter(mask))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every URL at INFO (phone numbers in query strings, a line per call); uvicorn's
    # own handlers would bypass the format.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
