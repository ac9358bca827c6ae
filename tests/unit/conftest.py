"""Fixtures the unit tests of several subpackages share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.observability.otel import OtelTracer
from bridge.observability.tracing import install


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test: the bridge's tracer is an ``OtelTracer`` whose spans end, as
    each one ends, in the exporter returned; the tracer before it comes back afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = install(OtelTracer(provider))
    try:
        yield exporter
    finally:
        install(previous)
        provider.shutdown()
