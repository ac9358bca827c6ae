"""The OpenTelemetry tracer (``bridge.observability.otel``): parents taken from Kafka and HTTP
headers, context handed on, only allowed attributes, masked values, failures, the SDK set up
from ``OTEL_*``, and a shutdown that never waits longer than it is given."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge import __version__
from bridge.observability.logs import MASK
from bridge.observability.otel import DEFAULT_SERVICE_NAME, OtelTracer
from bridge.observability.tracing import tracer
from tests.helpers import parent_of, span_ids, traceparent_of

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
PHONE = "+15551234567"


def only(spans: InMemorySpanExporter) -> ReadableSpan:
    [span] = spans.get_finished_spans()
    return span


# --- parents ---------------------------------------------------------------------------------


def test_a_consumed_record_with_context_gives_a_child_of_it(spans: InMemorySpanExporter) -> None:
    headers = [("id", b"req-1"), ("traceparent", TRACEPARENT.encode())]
    with tracer().consumer("process twilio.requests", headers, {}):
        pass
    span = only(spans)
    assert span.kind is SpanKind.CONSUMER
    assert span_ids(span)[0] == TRACE_ID
    assert parent_of(span) == PARENT_ID
    assert span.parent is not None and span.parent.is_remote


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("id", b"req-1")],
        [("traceparent", b"not a traceparent")],
        [("traceparent", b"00-00000000000000000000000000000000-b7ad6b7169203331-01")],
    ],
    ids=["none", "other headers", "malformed", "zero trace id"],
)
def test_a_record_without_usable_context_starts_a_trace(
    spans: InMemorySpanExporter, headers: list[tuple[str, bytes]]
) -> None:
    with tracer().consumer("process twilio.requests", headers, {}):
        pass
    span = only(spans)
    assert span.parent is None
    assert span_ids(span)[0] != "0" * 32


def test_the_span_hands_on_its_own_context_and_the_requests_state_and_baggage(
    spans: InMemorySpanExporter,
) -> None:
    headers = [
        ("traceparent", TRACEPARENT.encode()),
        ("tracestate", b"vendor=abc"),
        ("baggage", b"tenant=t1"),
    ]
    with tracer().consumer("process twilio.requests", headers, {}) as span:
        handed = dict(span.headers())
        http = span.http_headers()
    own = traceparent_of(only(spans))
    assert handed == {
        "traceparent": own.encode(),
        "tracestate": b"vendor=abc",
        "baggage": b"tenant=t1",
    }
    assert http == {k: v.decode() for k, v in handed.items()}


def test_a_served_request_is_a_child_of_its_http_headers(spans: InMemorySpanExporter) -> None:
    with tracer().server("POST /webhooks/{family}", {"Traceparent": TRACEPARENT}, {}):
        pass
    span = only(spans)
    assert span.kind is SpanKind.SERVER
    assert (span_ids(span)[0], parent_of(span)) == (TRACE_ID, PARENT_ID)


def test_client_and_internal_spans_are_children_of_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracer().consumer("process t", [], {}):
        with tracer().client("POST /x", {}) as client:
            sent = client.http_headers()["traceparent"]
        with tracer().internal("poll", {}):
            pass
    client_span, internal_span, process = spans.get_finished_spans()
    assert (client_span.kind, internal_span.kind) == (SpanKind.CLIENT, SpanKind.INTERNAL)
    for child in (client_span, internal_span):
        assert span_ids(child)[0] == span_ids(process)[0]
        assert parent_of(child) == span_ids(process)[1]
    # What goes to Twilio names the client span, not the process span.
    assert sent == traceparent_of(client_span)


def test_outside_any_span_a_client_span_starts_a_trace(spans: InMemorySpanExporter) -> None:
    with tracer().client("GET /x", {}):
        pass
    assert only(spans).parent is None


async def test_concurrent_requests_keep_their_own_parents(spans: InMemorySpanExporter) -> None:
    async def request(trace_id: str) -> None:
        traceparent = f"00-{trace_id}-{PARENT_ID}-01".encode()
        with tracer().consumer("process t", [("traceparent", traceparent)], {}):
            await asyncio.sleep(0.01)  # the other request runs meanwhile
            with tracer().client("POST /x", {}):
                await asyncio.sleep(0.01)

    ids = ("1" * 32, "2" * 32)
    await asyncio.gather(*(request(i) for i in ids))
    by_trace: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        by_trace.setdefault(span_ids(span)[0], []).append(span)
    assert sorted(by_trace) == sorted(ids)
    for family in by_trace.values():
        [client] = [s for s in family if s.kind is SpanKind.CLIENT]
        [process] = [s for s in family if s.kind is SpanKind.CONSUMER]
        assert parent_of(client) == span_ids(process)[1]


def test_the_current_span_and_its_ids(spans: InMemorySpanExporter) -> None:
    assert tracer().ids() is None
    assert not tracer().current().recording
    with tracer().consumer("process t", [], {}):
        current = tracer().current()
        assert current.recording
        ids = tracer().ids()
    assert ids == span_ids(only(spans))
    assert dict(current.headers())["traceparent"] == traceparent_of(only(spans)).encode()
    # Leaving the span leaves no context behind.
    assert tracer().ids() is None
    assert not trace.get_current_span().get_span_context().is_valid


# --- what a span holds -----------------------------------------------------------------------


def test_only_allowed_attributes_are_kept_and_strings_are_masked(
    spans: InMemorySpanExporter,
) -> None:
    started = {
        "messaging.system": "kafka",
        "messaging.destination.name": None,
        "phone": PHONE,
        "http.request.body": "hello",
    }
    with tracer().consumer("process t", [], started) as span:
        span.set("twilio.operation", f"to {PHONE}")
        span.set("messaging.kafka.offset", 42)
        span.set("messaging.kafka.message.key", "order-1")
        span.set("twilio.error_code", None)
        span.event("retry", {"twilio.attempt": 2, "error.type": f"{PHONE}", "body": "hi"})
    recorded = only(spans)
    assert dict(recorded.attributes or {}) == {
        "messaging.system": "kafka",
        "twilio.operation": f"to {MASK}",
        "messaging.kafka.offset": 42,
    }
    [event] = recorded.events
    assert event.name == "retry"
    assert dict(event.attributes or {}) == {"twilio.attempt": 2, "error.type": MASK}


def test_fail_marks_the_span_with_the_error_type(spans: InMemorySpanExporter) -> None:
    with tracer().client("POST /x", {}) as span:
        span.fail("429")
    recorded = only(spans)
    assert recorded.status.status_code is StatusCode.ERROR
    assert (recorded.attributes or {})["error.type"] == "429"


class CallTimeout(Exception):
    """An error whose text holds what a span must not."""


def test_an_exception_leaves_its_type_on_the_span_and_not_its_text(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(CallTimeout), tracer().client("POST /x", {}):
        raise CallTimeout(f"no answer for {PHONE}")
    recorded = only(spans)
    assert recorded.status.status_code is StatusCode.ERROR
    assert dict(recorded.attributes or {}) == {"error.type": "CallTimeout"}
    assert recorded.events == ()
    assert recorded.end_time is not None


# --- the SDK set up from OTEL_* --------------------------------------------------------------


def test_the_service_is_named_the_bridge_unless_otel_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    default = OtelTracer.from_environ({}, ["console"])
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sms-gateway")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    named = OtelTracer.from_environ({}, ["console"])
    try:
        first, second = (t._provider.resource.attributes for t in (default, named))
        assert first["service.name"] == DEFAULT_SERVICE_NAME
        assert first["service.version"] == __version__
        assert second["service.name"] == "sms-gateway"
        assert second["deployment.environment"] == "test"
    finally:
        default.shutdown(1.0)
        named.shutdown(1.0)


def test_each_exporter_asked_for_gets_a_batch_processor() -> None:
    both = OtelTracer.from_environ({}, ["otlp", "console"])
    try:
        processors = both._provider._active_span_processor._span_processors
        assert [type(p) for p in processors] == [BatchSpanProcessor, BatchSpanProcessor]
        assert both.enabled
    finally:
        both.shutdown(1.0)


@pytest.mark.parametrize(
    ("environ", "exporters", "said"),
    [
        ({}, ["jaeger"], "OTEL_TRACES_EXPORTER names 'jaeger'"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, ["otlp"], "'http/json' is not supported"),
    ],
)
def test_an_unknown_exporter_or_protocol_is_a_value_error(
    environ: dict[str, str], exporters: list[str], said: str
) -> None:
    with pytest.raises(ValueError, match=said):
        OtelTracer.from_environ(environ, exporters)


def test_grpc_needs_its_own_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc", None)
    with pytest.raises(ImportError) as raised:
        OtelTracer.from_environ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, ["otlp"])
    assert (raised.value.name or "").startswith("opentelemetry.exporter.otlp.proto.grpc")


class StuckExporter(SpanExporter):
    """A collector that never answers until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exporting = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.release.wait(60)
        return SpanExportResult.SUCCESS


def test_shutdown_waits_no_longer_than_it_is_given() -> None:
    stuck = StuckExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(stuck, schedule_delay_millis=10))
    otel = OtelTracer(provider)
    try:
        with otel.internal("poll", {}):
            pass
        assert stuck.exporting.wait(30)
        started = time.monotonic()
        otel.shutdown(0.2)
        # The export is still stuck (it waits up to 60 s): shutdown gave up on it.
        assert time.monotonic() - started < 30
        assert not stuck.release.is_set()
    finally:
        stuck.release.set()
