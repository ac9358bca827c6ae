"""The OpenTelemetry tracer: spans exported by the SDK, as the standard ``OTEL_*`` variables say.

Imported only when tracing is asked for (``configure_tracing``); it needs the ``otel`` extra.
The SDK reads its own variables: the sampler (``OTEL_TRACES_SAMPLER``, ``_ARG``), the resource
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), the propagators (``OTEL_PROPAGATORS``,
W3C Trace Context and Baggage by default), the batch processor (``OTEL_BSP_*``) and the
exporter's endpoint, headers and timeout (``OTEL_EXPORTER_OTLP_*``). Spans are exported from the
batch processor's own thread: a slow or unreachable collector costs dropped spans, never a wait
on the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from bridge import __version__
from bridge.observability.logs import Masker
from bridge.observability.tracing import ATTRIBUTES, AttributeValue, Span, Tracer

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["DEFAULT_SERVICE_NAME", "OtelTracer"]

DEFAULT_SERVICE_NAME = "twilio-kafka-bridge"
_SCOPE = "twilio_kafka_bridge"
_masker = Masker()


@lru_cache(maxsize=4096)
def _mask(value: str) -> str:
    # Most attribute values recur on every span (topics, operations, URL templates, hosts):
    # each is put through the masker's three expressions once, not ~15 times per request.
    return _masker(value)


class _KafkaHeaders(Getter[Sequence[tuple[str, bytes]]]):
    """Reads W3C headers from a Kafka record's headers (a list of name, bytes)."""

    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier if k.lower() == key]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_KAFKA_HEADERS = _KafkaHeaders()


def _shown(value: AttributeValue) -> AttributeValue:
    """A value as a span may hold it: a string through the masker."""
    return _mask(value) if isinstance(value, str) else value


def _allowed(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {
        name: _shown(value)
        for name, value in attributes.items()
        if value is not None and name in ATTRIBUTES
    }


class _Resource(Resource):
    """A resource hashed once: the OTLP encoder hashes the resource of every span it encodes,
    and ``Resource`` hashes by dumping its attributes to JSON each time."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class _OtelSpan(Span):
    """An OpenTelemetry span; entering it makes it the current span of the running task."""

    __slots__ = ("_context", "_span", "_token")

    def __init__(self, span: trace.Span, context: otel_context.Context) -> None:
        super().__init__()
        self._span = span
        self._context = context
        self._token: object | None = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(self._context)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:
            # The type only: an exception's text is not vetted for what a span may hold.
            self.fail(kind.__qualname__)
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        self._span.end()

    @property
    def recording(self) -> bool:
        return self._span.is_recording()

    def set(self, name: str, value: AttributeValue | None) -> None:
        if value is not None and name in ATTRIBUTES:
            self._span.set_attribute(name, _shown(value))

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self._span.add_event(name, _allowed(attributes or {}))

    def fail(self, error_type: str) -> None:
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR))

    def headers(self) -> tuple[tuple[str, bytes], ...]:
        return tuple((k, v.encode()) for k, v in self.http_headers().items())

    def http_headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=self._context)
        return carrier


class OtelTracer(Tracer):
    """Spans of the OpenTelemetry SDK, exported in batches."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(_SCOPE, __version__)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], exporters: Iterable[str]) -> OtelTracer:
        """A tracer exporting through ``exporters``; raises ``ImportError`` for an exporter
        whose package is missing and ``ValueError`` for one the bridge does not know."""
        resource = Resource.create({SERVICE_VERSION: __version__})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=_Resource(resource))
        for name in exporters:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return True

    def consumer(
        self,
        name: str,
        headers: Iterable[tuple[str, bytes]],
        attributes: Mapping[str, AttributeValue | None],
    ) -> Span:
        parent = propagate.extract(list(headers), getter=_KAFKA_HEADERS)
        return self._start(name, SpanKind.CONSUMER, attributes, parent)

    def server(
        self,
        name: str,
        headers: Mapping[str, str],
        attributes: Mapping[str, AttributeValue | None],
    ) -> Span:
        parent = propagate.extract({k.lower(): v for k, v in headers.items()})
        return self._start(name, SpanKind.SERVER, attributes, parent)

    def client(self, name: str, attributes: Mapping[str, AttributeValue | None]) -> Span:
        return self._start(name, SpanKind.CLIENT, attributes, otel_context.get_current())

    def internal(self, name: str, attributes: Mapping[str, AttributeValue | None]) -> Span:
        return self._start(name, SpanKind.INTERNAL, attributes, otel_context.get_current())

    def current(self) -> Span:
        span = trace.get_current_span()
        if not span.is_recording():
            return super().current()
        return _OtelSpan(span, otel_context.get_current())

    def ids(self) -> tuple[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

    def shutdown(self, timeout_s: float) -> None:
        # The provider's shutdown waits for the exporter, which may be retrying against an
        # unreachable collector: give it ``timeout_s`` in a thread of its own, then go on.
        worker = threading.Thread(target=self._provider.shutdown, daemon=True)
        worker.start()
        worker.join(timeout_s)

    def _start(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue | None],
        parent: otel_context.Context,
    ) -> Span:
        span = self._tracer.start_span(name, parent, kind, _allowed(attributes))
        return _OtelSpan(span, trace.set_span_in_context(span, parent))


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    """The exporter ``OTEL_TRACES_EXPORTER`` names: ``otlp`` (over the protocol
    ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` names, ``http/protobuf`` by default) or
    ``console``."""
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER names {name!r}; the bridge knows otlp, console")
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    if protocol in (None, "", "http/protobuf"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        return OTLPSpanExporter()
    if protocol == "grpc":
        # Not in the 'otel' extra (grpcio is a large native dependency): installed on its own.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]  # noqa: PLC0415
            OTLPSpanExporter as GrpcSpanExporter,
        )

        exporter: SpanExporter = GrpcSpanExporter()
        return exporter
    raise ValueError(f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc")
