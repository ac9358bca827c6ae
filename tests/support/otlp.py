"""An OTLP/HTTP trace receiver for the tracing integration tests: what a collector would get.

``async with OtlpReceiver() as otlp`` listens on a free port of 127.0.0.1; point the bridge's
``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``otlp.endpoint``. Every ``POST /v1/traces``
(``application/x-protobuf``, gzip or not) is decoded with ``opentelemetry-proto`` into
``ReceivedSpan``s, kept in ``otlp.spans`` in arrival order.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpReceiver", "ReceivedSpan"]

PROTOBUF = "application/x-protobuf"
AttributeValue = str | int | float | bool | None


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids in lower-case hex as in a ``traceparent``."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # "CONSUMER", "CLIENT", "SERVER", "INTERNAL", "PRODUCER"
    attributes: dict[str, AttributeValue]
    events: tuple[str, ...]
    resource: dict[str, AttributeValue]


def _value(pair: KeyValue) -> AttributeValue:
    field = pair.value.WhichOneof("value")
    found: Any = getattr(pair.value, field) if field else None
    return found if isinstance(found, str | int | float | bool) else str(found)


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest.FromString(body)
    found = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        attributes={kv.key: _value(kv) for kv in span.attributes},
                        events=tuple(event.name for event in span.events),
                        resource=resource,
                    )
                )
    return found


class OtlpReceiver:
    """An OTLP/HTTP collector stand-in that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds /v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            return web.Response(status=415)
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.spans += decode(body)
        self.exports += 1
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type=PROTOBUF)

    async def until(
        self, found: Callable[[list[ReceivedSpan]], bool], within_s: float
    ) -> list[ReceivedSpan]:
        """The spans received, once ``found(spans)`` holds; AssertionError after ``within_s``."""
        deadline = time.monotonic() + within_s
        while not found(self.spans):
            if time.monotonic() > deadline:
                names = [(s.kind, s.name) for s in self.spans]
                raise AssertionError(f"not received in {within_s} s; received: {names}")
            await asyncio.sleep(0.05)
        return self.spans
