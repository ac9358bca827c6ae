"""Tracing off (``bridge.observability.tracing``): spans that record nothing but hand a request's
trace context on, and which ``OTEL_*`` settings turn tracing on."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from bridge.observability.tracing import (
    Tracer,
    configure_tracing,
    exporters_asked,
    install,
    tracer,
)

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CONTEXT = (("traceparent", TRACEPARENT), ("tracestate", b"vendor=x"), ("baggage", b"user=1"))
EXTRA = "install the 'otel' extra: pip install 'twilio-kafka-bridge[otel]'"


@pytest.fixture
def restored() -> Iterator[None]:
    """Whatever a test installs, the bridge's tracer is the one before it afterwards."""
    before = tracer()
    try:
        yield
    finally:
        installed = install(before)
        if installed is not before:
            installed.shutdown(1.0)


# --- tracing off -----------------------------------------------------------------------------


def test_tracing_is_off_by_default() -> None:
    assert type(tracer()) is Tracer
    assert not tracer().enabled


def test_off_a_records_trace_context_passes_through_unchanged() -> None:
    headers = [("id", b"req-1"), *CONTEXT, ("kind", b"x")]
    span = Tracer().consumer("process twilio.requests", headers, {"messaging.system": "kafka"})
    with span as entered:
        assert entered.headers() == CONTEXT
        assert not entered.recording
        # Nothing for Twilio: with tracing off the bridge adds no span of its own.
        assert entered.http_headers() == {}


def test_off_trace_headers_are_read_in_any_case_as_with_tracing_on() -> None:
    headers = [(name.title(), value) for name, value in CONTEXT]
    with Tracer().consumer("process twilio.requests", headers, {}) as entered:
        assert entered.headers() == CONTEXT


def test_off_a_record_without_trace_context_gives_a_span_without_headers() -> None:
    off = Tracer()
    span = off.consumer("process twilio.requests", [("id", b"req-1")], {})
    with span:
        span.set("twilio.operation", "CreateMessage")
        span.event("retry", {"twilio.attempt": 1})
        span.fail("http_5xx")
        assert span.headers() == ()
        assert off.current().headers() == ()
    assert off.ids() is None


def test_off_a_served_request_carries_its_own_context_on() -> None:
    span = Tracer().server("POST /webhooks", {"traceparent": TRACEPARENT.decode()}, {})
    assert (span.recording, span.headers()) == (False, (("traceparent", TRACEPARENT),))
    assert Tracer().server("POST /webhooks", {}, {}).headers() == ()


def test_off_every_other_span_is_empty() -> None:
    off = Tracer()
    started = (
        off.client("POST /x", {}),
        off.internal("poll", {}),
        off.current(),
    )
    for span in started:
        assert (span.recording, span.headers(), span.http_headers()) == (False, (), {})


def test_install_gives_back_the_tracer_it_replaces(restored: None) -> None:
    before = tracer()
    mine = Tracer()
    assert install(mine) is before
    assert tracer() is mine


# --- which OTEL_* settings turn tracing on ---------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "asked"),
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console "}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": ""}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
        ({"OTEL_SDK_DISABLED": " TRUE ", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        # Other signals' exporters are not the bridge's business.
        ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"}, ()),
    ],
)
def test_exporters_asked(environ: dict[str, str], asked: tuple[str, ...]) -> None:
    assert exporters_asked(environ) == asked


def test_nothing_asked_leaves_tracing_off(restored: None, caplog: pytest.LogCaptureFixture) -> None:
    before = tracer()
    with caplog.at_level(logging.INFO, "bridge.observability.tracing"):
        assert configure_tracing({"OTEL_TRACES_EXPORTER": "none"}) is before
    assert tracer() is before and not before.enabled
    assert caplog.records == []


def test_an_exporter_asked_for_turns_tracing_on(
    restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "bridge.observability.tracing"):
        configured = configure_tracing({"OTEL_TRACES_EXPORTER": "console"})
    assert configured.enabled and tracer() is configured
    assert "tracing on: spans exported by console" in caplog.text


def test_without_the_otel_extra_the_log_names_it_and_tracing_stays_off(
    restored: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As on an install without the extra: the OpenTelemetry packages cannot be imported.
    monkeypatch.delitem(sys.modules, "bridge.observability.otel")
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    before = tracer()
    with caplog.at_level(logging.INFO, "bridge.observability.tracing"):
        assert configure_tracing({"OTEL_TRACES_EXPORTER": "otlp"}) is before
    assert tracer() is before and not tracer().enabled
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "OTEL_* asks for otlp, opentelemetry is missing" in record.getMessage()
    assert EXTRA in record.getMessage()


def test_grpc_without_its_exporter_names_that_package(
    restored: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc", None)
    environ = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with caplog.at_level(logging.INFO, "bridge.observability.tracing"):
        assert not configure_tracing(environ).enabled
    assert "pip install opentelemetry-exporter-otlp-proto-grpc" in caplog.text
    assert EXTRA not in caplog.text


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER names 'zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTLP protocol 'http/json' is not supported",
        ),
    ],
)
def test_an_exporter_the_bridge_does_not_know_leaves_tracing_off(
    restored: None, caplog: pytest.LogCaptureFixture, environ: dict[str, str], said: str
) -> None:
    with caplog.at_level(logging.INFO, "bridge.observability.tracing"):
        assert not configure_tracing(environ).enabled
    assert f"tracing is off: {said}" in caplog.text
