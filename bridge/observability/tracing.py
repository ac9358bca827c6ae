"""Tracing: OpenTelemetry spans when an exporter is configured, next to nothing otherwise.

The bridge's code asks ``tracer()`` for spans and never imports OpenTelemetry itself: with
tracing off (the default) the tracer is ``Tracer``, whose spans do nothing but carry a request's
own W3C ``traceparent``/``tracestate`` through to its reply, so the requester's trace goes on
even through a bridge that exports nothing. ``configure_tracing`` installs the OpenTelemetry
tracer (``bridge.observability.otel``, the ``otel`` extra) when the standard ``OTEL_*``
variables ask for an exporter.

Spans hold only the attributes named in ``ATTRIBUTES``, and string values pass the log masker
too: a span never carries a secret, a message body, a phone number, a full URL or a Kafka key
(a Twilio URL shows as its template: ``TwilioCall.url_template``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from bridge.contract.events import TRACE_CONTEXT, trace_headers

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "ATTRIBUTES",
    "NOTABLE_WAIT_MS",
    "TRACE_HEADERS",
    "AttributeValue",
    "Span",
    "Tracer",
    "configure_tracing",
    "exporters_asked",
    "install",
    "tracer",
]

log = logging.getLogger(__name__)

AttributeValue = str | int | float | bool
# The W3C Trace Context headers and W3C Baggage, as the bridge reads and writes them.
TRACE_HEADERS: Final = (*TRACE_CONTEXT, "baggage")

# Every attribute a span of the bridge may hold (OpenTelemetry semantic conventions for
# messaging, HTTP client and HTTP server, and the bridge's own ``twilio.*``). Anything else is
# dropped, so no code path can put a phone number, a body, a token or a key on a span.
ATTRIBUTES: Final = frozenset(
    {
        "messaging.system",
        "messaging.operation.type",
        "messaging.operation.name",
        "messaging.destination.name",
        "messaging.destination.partition.id",
        "messaging.kafka.offset",
        "messaging.message.id",
        "http.request.method",
        "http.request.resend_count",
        "http.response.status_code",
        "http.route",
        "url.template",
        "url.scheme",
        "server.address",
        "server.port",
        "error.type",
        "twilio.operation",
        "twilio.api",
        "twilio.error_code",
        "twilio.attempt",
        "twilio.wait_ms",
        "twilio.webhook.family",
        "twilio.request.mode",
        "twilio.reply.status",
    }
)


# A wait shorter than this is no event on a span: nearly every request has one, and each event
# costs span work and export bytes for nothing to see.
NOTABLE_WAIT_MS: Final = 1.0


class Span:
    """A span that records nothing: what every span is with tracing off.

    It still hands on the W3C trace context it was started from (``headers``), so a reply
    carries its request's ``traceparent`` whether or not this bridge exports spans."""

    __slots__ = ("_carried",)

    def __init__(self, carried: tuple[tuple[str, bytes], ...] = ()) -> None:
        self._carried = carried

    def __enter__(self) -> Span:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    @property
    def recording(self) -> bool:
        """True when attributes and events set on this span are exported."""
        return False

    def set(self, name: str, value: AttributeValue | None) -> None:
        """Set one attribute (dropped unless its name is in ``ATTRIBUTES``)."""

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """Record a moment in the span (a wait, a retry)."""

    def fail(self, error_type: str) -> None:
        """Mark the span as failed, with ``error.type``."""

    def headers(self) -> tuple[tuple[str, bytes], ...]:
        """The trace context to put in a Kafka record's headers."""
        return self._carried

    def http_headers(self) -> dict[str, str]:
        """The trace context to put in an HTTP request's headers."""
        return {}


_NOTHING: Final = Span()


class Tracer:
    """Starts spans; this one, with tracing off, starts spans that record nothing."""

    @property
    def enabled(self) -> bool:
        """True when spans are recorded and exported."""
        return False

    def consumer(
        self,
        name: str,
        headers: Iterable[tuple[str, bytes]],
        attributes: Mapping[str, AttributeValue | None],
    ) -> Span:
        """The span of one consumed record, a child of the context in its ``headers``."""
        carried = trace_headers(headers, TRACE_HEADERS)
        return Span(carried) if carried else _NOTHING

    def server(
        self,
        name: str,
        headers: Mapping[str, str],
        attributes: Mapping[str, AttributeValue | None],
    ) -> Span:
        """The span of one HTTP request served, a child of the context in its ``headers``."""
        carried = tuple((k, headers[k].encode()) for k in TRACE_HEADERS if k in headers)
        return Span(carried) if carried else _NOTHING

    def client(self, name: str, attributes: Mapping[str, AttributeValue | None]) -> Span:
        """The span of one HTTP request sent, a child of the current span."""
        return _NOTHING

    def internal(self, name: str, attributes: Mapping[str, AttributeValue | None]) -> Span:
        """A span of the bridge's own work (a poll), a child of the current span if any."""
        return _NOTHING

    def current(self) -> Span:
        """The span the running code is in (one that records nothing when there is none)."""
        return _NOTHING

    def ids(self) -> tuple[str, str] | None:
        """(trace id, span id) of the current span, in hex, for log lines; None without one."""
        return None

    def shutdown(self, timeout_s: float) -> None:
        """Export what is still buffered, waiting at most ``timeout_s``."""


_tracer: Tracer = Tracer()


def tracer() -> Tracer:
    """The bridge's tracer: ``Tracer`` (off) unless ``install`` put another in its place."""
    return _tracer


def install(new: Tracer) -> Tracer:
    """Make ``new`` the bridge's tracer; returns the one it replaces."""
    global _tracer
    old, _tracer = _tracer, new
    return old


def exporters_asked(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the ``OTEL_*`` variables ask for; none means tracing is off.

    ``OTEL_TRACES_EXPORTER`` names them (``none`` for none); without it, an OTLP endpoint asks
    for ``otlp``. Unlike the SDK's own default (``otlp`` always), nothing set means off: a
    bridge should not try to reach a collector nobody configured."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    names = environ.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ("otlp",) if any(environ.get(v) for v in endpoints) else ()
    asked = tuple(n.strip().lower() for n in names.split(",") if n.strip())
    return tuple(n for n in asked if n != "none")


def configure_tracing(environ: Mapping[str, str] | None = None) -> Tracer:
    """Install the OpenTelemetry tracer when ``environ`` (the process's) asks for an exporter.

    Without the ``otel`` extra installed, say which extra to install and go on untraced:
    tracing must never stop the bridge from carrying messages."""
    environ = os.environ if environ is None else environ
    asked = exporters_asked(environ)
    if not asked:
        return tracer()
    try:
        from bridge.observability.otel import OtelTracer  # noqa: PLC0415 (the optional extra)

        new = OtelTracer.from_environ(environ, asked)
    except ImportError as exc:
        missing = exc.name or "opentelemetry"
        grpc = missing.startswith("opentelemetry.exporter.otlp.proto.grpc")
        remedy = (
            "pip install opentelemetry-exporter-otlp-proto-grpc"
            if grpc
            else "install the 'otel' extra: pip install 'twilio-kafka-bridge[otel]'"
        )
        log.error(
            "tracing is off: OTEL_* asks for %s, %s is missing; %s", _listed(asked), missing, remedy
        )
        return tracer()
    except ValueError as exc:
        log.error("tracing is off: %s", exc)
        return tracer()
    install(new)
    log.info("tracing on: spans exported by %s", _listed(asked))
    return new


def _listed(exporters: tuple[str, ...]) -> str:
    return ", ".join(exporters)
