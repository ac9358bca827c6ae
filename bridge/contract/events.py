"""Twilio webhooks as CloudEvents 1.0 for Kafka (binary mode). Pure: no I/O.

One webhook is one event: its parameters become the event's JSON ``data``; the ``type`` follows
Twilio Event Streams names where one exists; ``subject`` and the Kafka key are the resource SID,
so one message's or call's events stay in order on one partition. The ``id`` is Twilio's
``I-Twilio-Idempotency-Token`` (the same on a retried delivery) or, without one, a hash of
what Twilio signed, so a retry gets the same id either way and consumers can deduplicate.

Event Streams deliveries are CloudEvents already (structured JSON, one or a batch): each is
published as it is, its attributes as ``ce_*`` headers and its ``data`` as the value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

import orjson

from bridge.contract.envelopes import utc_timestamp

__all__ = [
    "ALIASES",
    "EVENT_STREAMS",
    "FAMILIES",
    "TRACE_CONTEXT",
    "CloudEvent",
    "EventError",
    "event_streams_events",
    "form_data",
    "trace_headers",
    "webhook_event",
    "with_trace",
]

# Family → (SID parameter for subject and key, how to name the event type).
FAMILIES: dict[str, tuple[str, str]] = {
    "messages": ("MessageSid", "com.twilio.messaging.inbound-message.received"),
    "message-status": ("MessageSid", "com.twilio.messaging.message.{MessageStatus}"),
    "voice": ("CallSid", "com.twilio.voice.twiml.call.requested"),
    "call-status": ("CallSid", "com.twilio.voice.status-callback.call.{CallStatus}"),
    "recording-status": (
        "RecordingSid",
        "com.twilio.voice.status-callback.recording.{RecordingStatus}",
    ),
    "conference-status": (
        "ConferenceSid",
        "com.twilio.voice.status-callback.conference.{StatusCallbackEvent}",
    ),
}
EVENT_STREAMS = "event-streams"
# Event Streams calls an answered call "answered"; the status callback says "in-progress".
_STATUS_NAMES = {"in-progress": "answered"}
# Older callbacks name the message SmsSid/SmsStatus only.
ALIASES = {"MessageSid": "SmsSid", "MessageStatus": "SmsStatus"}
_REQUIRED_ATTRIBUTES = ("id", "source", "type")


class EventError(ValueError):
    """The delivery cannot become an event; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One event, ready for Kafka: binary-mode headers, key and value."""

    id: str
    source: str
    type: str
    data: Any
    subject: str | None = None
    time: str | None = None
    datacontenttype: str = "application/json"
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> bytes | None:
        """The Kafka key: the resource SID, so one resource's events keep their order."""
        return self.subject.encode() if self.subject else None

    def value(self) -> bytes:
        """The Kafka value: the event's data as JSON."""
        return orjson.dumps(self.data)

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka protocol binding, binary mode: ``ce_*`` attributes and ``content-type``."""
        attributes = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            **self.extensions,
        }
        headers = [(f"ce_{k}", str(v).encode()) for k, v in attributes.items() if v is not None]
        return [*headers, ("content-type", self.datacontenttype.encode())]


# W3C Trace Context: its headers, which are also the attributes of the CloudEvents
# distributed-tracing extension.
TRACE_CONTEXT = ("traceparent", "tracestate")


_Value = TypeVar("_Value", str, bytes)


def trace_headers(
    headers: Iterable[tuple[str, _Value]], names: Sequence[str] = TRACE_CONTEXT
) -> tuple[tuple[str, _Value], ...]:
    """The headers among ``headers`` that ``names`` (W3C trace context by default) names,
    matched in any case as OpenTelemetry's propagators match them, named in lower case."""
    return tuple((k.lower(), v) for k, v in headers if k.lower() in names)


def with_trace(event: CloudEvent, headers: Sequence[tuple[str, bytes]]) -> CloudEvent:
    """``event`` carrying the W3C trace context in ``headers`` as the distributed-tracing
    extension (``ce_traceparent``, ``ce_tracestate``); unchanged when there is none."""
    trace = {k: v.decode("latin-1") for k, v in trace_headers(headers)}
    return replace(event, extensions={**event.extensions, **trace}) if trace else event


def form_data(params: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Form parameters as a JSON object; a repeated name becomes a list, in order."""
    data: dict[str, str | list[str]] = {}
    for name, value in params:
        current = data.get(name)
        if current is None:
            data[name] = value
        elif isinstance(current, list):
            current.append(value)
        else:
            data[name] = [current, value]
    return data


def webhook_event(
    family: str,
    data: Mapping[str, Any],
    *,
    idempotency_token: str | None,
    signed: bytes,
    received: datetime,
) -> CloudEvent:
    """The CloudEvent for one webhook of ``family`` with parameters ``data``.

    ``signed`` is what Twilio signed (URL and parameters, or body): the id when Twilio sent
    no idempotency token. Raises ``EventError`` when a field the event needs is missing.
    """
    sid_param, type_template = FAMILIES[family]
    account = _text(data.get("AccountSid"))
    if not account:
        raise EventError("AccountSid is missing")
    subject = _field(data, sid_param)
    if not subject:
        raise EventError(f"{sid_param} is missing")
    event_type = type_template
    if "{" in type_template:
        name = type_template[type_template.index("{") + 1 : -1]
        status = _field(data, name)
        if not status:
            raise EventError(f"{name} is missing")
        event_type = type_template.replace("{" + name + "}", _STATUS_NAMES.get(status, status))
    event_id = idempotency_token or hashlib.sha256(family.encode() + b"\n" + signed).hexdigest()
    return CloudEvent(
        id=event_id,
        source=f"/2010-04-01/Accounts/{account}",
        type=event_type,
        subject=subject,
        time=utc_timestamp(received),
        data=dict(data),
    )


def event_streams_events(body: bytes) -> list[CloudEvent]:
    """The events of an Event Streams delivery (one structured CloudEvent or a batch)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"body is not JSON: {exc}") from None
    items = document if isinstance(document, list) else [document]
    if not items:
        raise EventError("empty batch")
    return [_structured(item, n) for n, item in enumerate(items)]


def _structured(item: Any, n: int) -> CloudEvent:
    if not isinstance(item, dict):
        raise EventError(f"event {n} is not a JSON object")
    missing = [name for name in _REQUIRED_ATTRIBUTES if not _text(item.get(name))]
    if missing:
        raise EventError(f"event {n} lacks {', '.join(missing)}")
    if item.get("specversion") != "1.0":
        raise EventError(f"event {n} is not CloudEvents 1.0")
    known = {"specversion", "id", "source", "type", "subject", "time", "data"}
    known |= {"datacontenttype", "data_base64", "dataschema"}
    # Extension attributes travel as headers too: CloudEvents names are lower-case a-z0-9.
    extensions = {
        k: str(v) for k, v in item.items() if k not in known and k.isalnum() and v is not None
    }
    if item.get("dataschema"):
        extensions["dataschema"] = str(item["dataschema"])
    data = item.get("data")
    subject = _text(item.get("subject")) or _resource_sid(data)
    return CloudEvent(
        id=str(item["id"]),
        source=str(item["source"]),
        type=str(item["type"]),
        subject=subject or None,
        time=_text(item.get("time")) or None,
        data=data,
        datacontenttype=_text(item.get("datacontenttype")) or "application/json",
        extensions=extensions,
    )


def _resource_sid(data: Any) -> str:
    """The SID an Event Streams payload is about (``messageSid``, ``callSid``...), if any."""
    if not isinstance(data, dict):
        return ""
    for name in ("messageSid", "callSid", "conferenceSid", "recordingSid", "sid"):
        if isinstance(data.get(name), str):
            return str(data[name])
    return ""


def _field(data: Mapping[str, Any], name: str) -> str:
    return _text(data.get(name)) or _text(data.get(ALIASES.get(name, "")))


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else None
    return value.strip() if isinstance(value, str) else ""
