"""Log lines: one JSON object per line, personal data and tokens masked, the trace and span ids
while a span is active."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.observability.logs import MASK, JsonFormatter, Masker, configure_logging
from bridge.observability.tracing import tracer

TOKEN = "0123456789abcdef0123456789abcdef"
SID = "SM0123456789abcdef0123456789abcdef"


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bridge.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    "text",
    [
        "to +14155550100 failed",
        "to 415-555-0100 failed",
        "to (415) 555-0100 failed",
        "from whatsapp:+447700900123",
        "Body=Your code is 123456&To=x",
        'form {"Body": "hello there"}',
        f"token {TOKEN} leaked",
    ],
)
def test_personal_data_and_tokens_are_masked(text: str) -> None:
    masked = Masker()(text)
    assert MASK in masked
    for secret in ("4155550100", "555", "123456", "hello there", "7700900123", TOKEN):
        assert secret not in masked


def test_counts_sids_and_durations_are_left_alone() -> None:
    text = f"sent {SID} in 250 ms, offset 12345678 on 2026-11-23 from 192.168.100.200"
    assert Masker()(text) == text


def test_show_pii_shows_numbers_and_bodies_but_never_tokens() -> None:
    masked = Masker(show_pii=True)(f"to +14155550100 Body=hi token {TOKEN}")
    assert "+14155550100" in masked and "Body=hi" in masked
    assert TOKEN not in masked


def test_json_line_carries_request_fields_and_masks_them() -> None:
    record = _record(
        "send to %s failed",
        "+14155550100",
        request_id="req-1",
        operation="CreateMessage",
        outcome="validation",
        duration_ms=12.5,
        topic="twilio.requests",
    )
    line = JsonFormatter(Masker()).format(record)
    assert "\n" not in line
    event = json.loads(line)
    assert event["time"].endswith("Z") and event["level"] == "WARNING"
    assert event["message"] == f"send to {MASK} failed"
    assert {k: event[k] for k in ("request_id", "operation", "outcome", "duration_ms")} == {
        "request_id": "req-1",
        "operation": "CreateMessage",
        "outcome": "validation",
        "duration_ms": 12.5,
    }


def test_exceptions_stay_on_one_line_and_are_masked() -> None:
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "bridge", logging.ERROR, __file__, 1, "boom", (), exc_info=__import__("sys").exc_info()
        )
    event = json.loads(JsonFormatter(Masker()).format(record))
    assert "ValueError" in event["exception"] and TOKEN not in event["exception"]


def test_configure_logging_routes_every_logger_through_one_masked_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        logging.getLogger("uvicorn.error").warning("client +14155550100 went away")
        logging.getLogger("httpx").info("HTTP Request: POST https://api.twilio.com/...")
        lines = capsys.readouterr().err.splitlines()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert [json.loads(line)["message"] for line in lines] == [f"client {MASK} went away"]


def test_json_lines_carry_the_trace_and_span_ids_inside_a_span_only(
    spans: InMemorySpanExporter,
) -> None:
    formatter = JsonFormatter(Masker())
    outside = json.loads(formatter.format(_record("before")))
    with tracer().consumer("process twilio.requests", [], {}):
        inside = json.loads(formatter.format(_record("sending")))
    after = json.loads(formatter.format(_record("after")))
    [span] = spans.get_finished_spans()
    assert span.context is not None
    assert (inside["trace_id"], inside["span_id"]) == (
        format(span.context.trace_id, "032x"),
        format(span.context.span_id, "016x"),
    )
    for line in (outside, after):
        assert "trace_id" not in line and "span_id" not in line


def test_json_lines_carry_no_ids_with_tracing_off() -> None:
    assert not tracer().enabled
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracer().consumer("process twilio.requests", [("traceparent", traceparent)], {}):
        line = json.loads(JsonFormatter(Masker()).format(_record("sending")))
    assert "trace_id" not in line and "span_id" not in line
