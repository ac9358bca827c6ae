"""The AsyncAPI 3.0 document of every topic the bridge reads or writes. Pure: builds a dict.

The bridge is the application described: it *receives* request envelopes and *sends* replies,
error records and events. Each channel is one topic (Kafka bindings 0.5.0: topic, partitions
and configuration where the bridge creates the topic; message keys; consumer groups). Payload
schemas are the committed JSON Schema files next to the document (``./request.schema.json``
...), labelled JSON Schema draft 2020-12, which is what they are (pydantic's dialect). AsyncAPI
tools must know draft-07 only; the parser resolves the files but validates only the document
around them, and the tests check the files and every example against them.
Header and key schemas are AsyncAPI Schema Objects inline. Examples are made by the same code
that makes real records, so they show exactly what a consumer gets.

``twilio-bridge schemas`` renders it for the default topic names into ``schemas/``; pass other
settings to describe a deployment's topics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

import orjson

from bridge import __version__
from bridge.config import (
    AdminSettings,
    KafkaSettings,
    PollerSettings,
    TrackingSettings,
    TwimlSettings,
    WebhookSettings,
)
from bridge.contract.deliveries import DeliveryRecord
from bridge.contract.envelopes import ErrorInfo, ErrorRecord, Reply, SourceRef
from bridge.contract.errors import ErrorKind
from bridge.contract.event_schema import event_families, type_parameter
from bridge.contract.events import (
    EVENT_STREAMS,
    FAMILIES,
    CloudEvent,
    event_streams_events,
    webhook_event,
)
from bridge.contract.twiml import DEADLINE, REPLY_TO, TWIML_FAMILIES
from bridge.inbound.twiml.failures import invalid_answer, no_answer, source_of
from bridge.kafka.records import Record

__all__ = [
    "ASYNCAPI_FILE",
    "JSON_SCHEMA_FORMAT",
    "asyncapi_document",
    "event_data_file",
    "message_id",
]

ASYNCAPI_FILE = "asyncapi.json"
# Not one of the formats AsyncAPI tools must support (draft-07 is the newest of those), but
# the truth: the files are draft 2020-12 (pydantic's dialect: $defs, prefixItems...).
JSON_SCHEMA_FORMAT = "application/schema+json;version=2020-12"
_KAFKA = "0.5.0"
_INTERNAL = {"name": "internal", "description": "The bridge's own bookkeeping, not a contract."}
_SAMPLE_TIME = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
_ACCOUNT = "AC" + "0" * 31 + "1"


def event_data_file(family: str) -> str:
    """The file name of the JSON Schema of a family's event data."""
    return f"event-data.{family}.schema.json"


def message_id(family: str) -> str:
    """The components.messages key of a family's events (``messageStatusEvent``...)."""
    return _camel(family) + "Event"


def _camel(name: str) -> str:
    first, *rest = name.split("-")
    return first + "".join(part.capitalize() for part in rest)


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in path)}


def _payload(file: str) -> dict[str, Any]:
    return {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": {"$ref": f"./{file}"}}


def _kafka_message(key: dict[str, Any]) -> dict[str, Any]:
    return {"kafka": {"key": key, "bindingVersion": _KAFKA}}


def _kafka_channel(topic: str, **extra: Any) -> dict[str, Any]:
    return {"kafka": {"topic": topic, **extra, "bindingVersion": _KAFKA}}


# ---------------------------------------------------------------------------------- headers


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


_REQUEST_HEADERS = {
    "type": "object",
    "description": "Any headers. UTF-8 ones named by the envelope's request_headers are sent "
    "to Twilio as HTTP headers, except those that would change who the bridge is or how "
    "the body is framed (Authorization, Host, Content-Type, Content-Length...). W3C "
    "traceparent, tracestate and baggage are the parent of the request's span.",
    "additionalProperties": {"type": "string"},
}
# W3C Trace Context (and Baggage) on the records the bridge writes for a request.
_TRACE_HEADERS = {
    "traceparent": _string(
        "W3C Trace Context: the span of the request in the bridge (tracing on), else the "
        "request's own traceparent, passed through; absent when the request had none and "
        "tracing is off."
    ),
    "tracestate": _string("W3C Trace Context vendor state, with traceparent."),
    "baggage": _string("W3C Baggage of the request, passed on."),
}
_REPLY_HEADERS = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": _string("The request's id, to correlate without parsing the value."),
        "status": _string("The reply's status.", enum=["ok", "error"]),
        **_TRACE_HEADERS,
    },
}
_ERROR_HEADERS = {
    "type": "object",
    "required": ["id", "kind"],
    "properties": {
        "id": _string("The request's id; empty when the payload had no readable id."),
        "kind": _string("The error kind, as in the value.", enum=list(get_args(ErrorKind))),
        **_TRACE_HEADERS,
    },
}
_CLOUD_EVENT_HEADERS = {
    "type": "object",
    "description": "CloudEvents 1.0, Kafka protocol binding, binary mode: each attribute is "
    "a header ce_<name>, the value is the event's data.",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type"],
    "properties": {
        "ce_specversion": _string("CloudEvents version.", const="1.0"),
        "ce_id": _string(
            "Unique per event and the same on every delivery of it (a Twilio retry, a poll "
            "of a state already seen): deduplicate on (ce_source, ce_id).",
            minLength=1,
        ),
        "ce_source": _string("Who the event is from.", minLength=1),
        "ce_type": _string("What happened, named as Twilio Event Streams names it.", minLength=1),
        "ce_subject": _string("The SID of the resource the event is about; also the key."),
        "ce_time": _string("When it happened (RFC 3339).", format="date-time"),
        "ce_traceparent": _string(
            "CloudEvents distributed-tracing extension, as a W3C traceparent: the webhook's "
            "server span or the poll's span (tracing on), else the webhook request's own "
            "traceparent; absent when there is none."
        ),
        "ce_tracestate": _string("W3C tracestate, with ce_traceparent."),
        "content-type": _string("The media type of the value."),
    },
    "additionalProperties": _string("Other CloudEvents attributes: ce_<extension>."),
}


_TWIML_HEADERS = {
    f"ce_{REPLY_TO}": _string(
        "Present when a service's TwiML is awaited for this webhook (BRIDGE_TWIML__FAMILIES): "
        "the topic to answer on, with a record keyed by ce_id whose value is the TwiML."
    ),
    f"ce_{DEADLINE}": _string(
        "With ce_twimlreplyto: the instant after which an answer is no use (Twilio got the "
        "fallback).",
        format="date-time",
    ),
}


def _event_headers(family: str) -> dict[str, Any]:
    """The headers of one family: the CloudEvents ones, with its own type and source."""
    if family == EVENT_STREAMS:
        own: dict[str, Any] = {
            "properties": {
                "ce_type": _string("Twilio's event type, e.g. com.twilio.messaging.message.sent."),
                "ce_dataschema": _string("The schema of the data, when Twilio names one."),
                "content-type": _string(
                    "The event's datacontenttype as Twilio gave it (default application/json); "
                    "the value is the event's data written as JSON either way."
                ),
            },
        }
    else:
        template = FAMILIES[family][1]
        if "{" in template:
            prefix = template[: template.index("{")]
            event_type = _string(
                f"{template}: {type_parameter(family)} as Twilio sent it ('answered' for "
                "in-progress).",
                pattern="^" + prefix.replace(".", "\\.") + ".+$",
            )
        else:
            event_type = _string("The event type.", const=template)
        own = {
            "required": ["ce_subject", "ce_time"],
            "properties": {
                **(_TWIML_HEADERS if family in TWIML_FAMILIES else {}),
                "ce_type": event_type,
                "ce_source": _string(
                    "The account: /2010-04-01/Accounts/<AccountSid>.",
                    pattern="^/2010-04-01/Accounts/\\S",
                ),
                "ce_id": _string(
                    "Twilio's I-Twilio-Idempotency-Token; without one, a SHA-256 of what "
                    "Twilio signed; for a polled state, poll.<SID>.<status>."
                ),
                "ce_subject": _string(f"The {FAMILIES[family][0]}; also the key."),
                "ce_time": _string(
                    "When the bridge received the webhook (or polled the state), UTC.",
                    format="date-time",
                ),
                "content-type": _string("The value is JSON.", const="application/json"),
            },
        }
    return {"allOf": [_ref("components", "schemas", "cloudEventHeaders"), own]}


# --------------------------------------------------------------------------------- examples

_BASIC_REQUEST = {
    "id": "order-78456-sms",
    "mode": "basic",
    "api": "api.v2010",
    "operation": "CreateMessage",
    "params": {"AccountSid": _ACCOUNT},
    "body": {
        "From": "+14155552671",
        "To": "+919876543210",
        "Body": "Your order has shipped",
        "MediaUrl": ["https://demo.twilio.com/owl.png"],
    },
    "metadata": {"order": "ORD-78456"},
}
_ADVANCED_REQUEST = {
    "id": "raw-1",
    "mode": "advanced",
    "method": "POST",
    "path": f"/2010-04-01/Accounts/{_ACCOUNT}/Messages.json",
    "body": "From=%2B14155552671&To=%2B919876543210&Body=Hi",
}
_MESSAGE_SID = "SM" + "0" * 31 + "2"
_CALL_SID = "CA" + "0" * 31 + "3"
_SAMPLE_PARAMS: dict[str, dict[str, str]] = {
    "messages": {
        "MessageSid": _MESSAGE_SID,
        "SmsSid": _MESSAGE_SID,
        "From": "+919876543210",
        "To": "+14155552671",
        "Body": "Where is my order?",
        "NumMedia": "0",
    },
    "message-status": {
        "MessageSid": _MESSAGE_SID,
        "SmsSid": _MESSAGE_SID,
        "MessageStatus": "delivered",
        "SmsStatus": "delivered",
    },
    "voice": {
        "CallSid": _CALL_SID,
        "From": "+919876543210",
        "To": "+14155552671",
        "CallStatus": "ringing",
        "Direction": "inbound",
    },
    "call-status": {"CallSid": _CALL_SID, "CallStatus": "completed", "CallDuration": "42"},
    "recording-status": {
        "CallSid": _CALL_SID,
        "RecordingSid": "RE" + "0" * 31 + "4",
        "RecordingStatus": "completed",
        "RecordingDuration": "40",
    },
    "conference-status": {
        "ConferenceSid": "CF" + "0" * 31 + "5",
        "FriendlyName": "support-42",
        "StatusCallbackEvent": "participant-join",
        "CallSid": _CALL_SID,
    },
}
_EVENT_STREAMS_SAMPLE = {
    "specversion": "1.0",
    "type": "com.twilio.messaging.message.delivered",
    "source": f"/2010-04-01/Accounts/{_ACCOUNT}/Messages/{_MESSAGE_SID}.json",
    "id": "EZ" + "0" * 31 + "6",
    "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/4",
    "datacontenttype": "application/json",
    "time": "2025-01-15T09:30:00.000Z",
    "data": {"accountSid": _ACCOUNT, "messageSid": _MESSAGE_SID, "messageStatus": "DELIVERED"},
}


def _event_example(family: str) -> dict[str, Any] | None:
    """A record of ``family`` as the bridge makes it, or None without sample parameters."""
    event: CloudEvent
    if family == EVENT_STREAMS:
        event = event_streams_events(orjson.dumps(_EVENT_STREAMS_SAMPLE))[0]
    elif family in _SAMPLE_PARAMS:
        data = {"AccountSid": _ACCOUNT, **_SAMPLE_PARAMS[family]}
        event = webhook_event(
            family,
            data,
            idempotency_token=None,
            signed=b"https://bridge.example.com/webhooks/twilio/" + family.encode(),
            received=_SAMPLE_TIME,
        )
    else:
        return None
    key = event.key.decode() if event.key is not None else "null"
    return {
        "name": family,
        "summary": f"key {key}",
        "headers": {name: value.decode() for name, value in event.headers()},
        "payload": event.data,
    }


def _reply_examples() -> list[dict[str, Any]]:
    ok = Reply(
        id="order-78456-sms",
        status="ok",
        http_status=201,
        api="api.v2010",
        operation="CreateMessage",
        method="POST",
        path=f"/2010-04-01/Accounts/{_ACCOUNT}/Messages.json",
        body={"sid": _MESSAGE_SID, "status": "queued", "to": "+919876543210"},
        content_type="application/json",
        attempts=1,
        duration_ms=231.5,
        metadata={"order": "ORD-78456"},
    )
    failed = Reply(
        id="order-78457-sms",
        status="error",
        http_status=400,
        api="api.v2010",
        operation="CreateMessage",
        method="POST",
        path=f"/2010-04-01/Accounts/{_ACCOUNT}/Messages.json",
        attempts=1,
        duration_ms=88.0,
        error=ErrorInfo(
            kind="twilio",
            message="The 'To' number +1555 is not a valid phone number.",
            http_status=400,
            twilio_code=21211,
            more_info="https://www.twilio.com/docs/errors/21211",
        ),
    )
    return [
        {
            "name": reply.status,
            "headers": {"id": reply.id, "status": reply.status},
            "payload": reply.model_dump(mode="json"),
        }
        for reply in (ok, failed)
    ]


def _delivery_examples() -> list[dict[str, Any]]:
    sent = {"AccountSid": _ACCOUNT, "MessageSid": _MESSAGE_SID, "MessageStatus": "sent"}
    records = [
        DeliveryRecord(
            id="order-78456-sms",
            sid=_MESSAGE_SID,
            resource="message",
            status=status,
            final=final,
            sequence=n,
            source="callback",
            at=f"2025-01-15T09:30:0{n}.000Z",
            metadata={"order": "ORD-78456"},
            event={**sent, "MessageStatus": status},
        )
        for n, (status, final) in enumerate((("sent", False), ("delivered", True)), 1)
    ]
    return [
        {
            "name": record.status,
            "summary": "key: the request's key",
            "headers": {"id": record.id},
            "payload": record.model_dump(mode="json"),
        }
        for record in records
    ]


def _error_examples(topic: str, webhook: WebhookSettings, twiml: TwimlSettings) -> list[Any]:
    request = ErrorRecord(
        id="order-78457-sms",
        error=ErrorInfo(kind="validation", message="invalid request envelope: missing: operation"),
        source=SourceRef(topic=topic, partition=3, offset=1042, key="b3JkZXItNzg0NTc="),
        request={"id": "order-78457-sms", "mode": "basic"},
        time="2025-01-15T09:30:00.000Z",
    )
    event_id = "idempotency-token-of-the-webhook"
    call = Record(webhook.topic_for("voice"), 0, 311, _CALL_SID.encode(), None)
    answer = Record(twiml.topic, 0, 97, event_id.encode(), b"<Say>Hello</Say>")
    reason = "the root element is <Say>, not <Response>"
    records = [
        ("validation", request),
        ("twiml-timeout", no_answer(event_id, "voice", source_of(call), twiml.timeout_s)),
        ("twiml-invalid", invalid_answer(event_id, "voice", answer, reason, twiml.max_bytes)),
    ]
    return [
        {
            "name": name,
            "headers": {"id": record.id or "", "kind": record.error.kind},
            "payload": record.model_copy(update={"time": request.time}).model_dump(mode="json"),
        }
        for name, record in records
    ]


# ------------------------------------------------------------------------------- the document


def _messages(
    kafka: KafkaSettings, webhook: WebhookSettings, twiml: TwimlSettings
) -> dict[str, Any]:
    request_key = _string(
        "Optional. Requests with the same key (in one partition) are called one after the "
        "other, in order; requests without a key run concurrently. The reply and the error "
        "record carry the same key."
    )
    same_key = _string("The request's key, as it was (absent when the request had none).")
    messages: dict[str, Any] = {
        "request": {
            "name": "request",
            "title": "Request envelope",
            "summary": "One Twilio REST call: an operation by its operationId (basic) or a "
            "method and path (advanced).",
            "contentType": "application/json",
            "headers": _ref("components", "schemas", "requestHeaders"),
            "payload": _payload("request.schema.json"),
            "correlationId": {"location": "$message.payload#/id"},
            "bindings": _kafka_message(request_key),
            "examples": [
                {"name": "basic", "payload": _BASIC_REQUEST},
                {"name": "advanced", "payload": _ADVANCED_REQUEST},
            ],
        },
        "reply": {
            "name": "reply",
            "title": "Reply",
            "summary": "Exactly one per request that had an id: status ok or error.",
            "contentType": "application/json",
            "headers": _ref("components", "schemas", "replyHeaders"),
            "payload": _payload("reply.schema.json"),
            "correlationId": {"location": "$message.header#/id"},
            "bindings": _kafka_message(same_key),
            "examples": _reply_examples(),
        },
        "errorRecord": {
            "name": "errorRecord",
            "title": "Error record",
            "summary": "Every failure, with the request (or its raw bytes, base64) and where "
            "it was read, for operators and replay; also each webhook that got the fallback "
            "TwiML: kind timeout (source: the event) or validation (source and raw: the answer).",
            "contentType": "application/json",
            "headers": _ref("components", "schemas", "errorHeaders"),
            "payload": _payload("error-record.schema.json"),
            "correlationId": {"location": "$message.header#/id"},
            "bindings": _kafka_message(same_key),
            "examples": _error_examples(kafka.request_topics[0], webhook, twiml),
        },
    }
    messages["deliveryRecord"] = {
        "name": "deliveryRecord",
        "title": "Delivery record",
        "summary": "A new status of a tracked send (envelope field track), from a status "
        "callback or a fetch from Twilio; exactly one per request is final.",
        "contentType": "application/json",
        "headers": _ref("components", "schemas", "deliveryHeaders"),
        "payload": _payload("delivery-record.schema.json"),
        "correlationId": {"location": "$message.header#/id"},
        "bindings": _kafka_message(
            _string("The request's key, as it was (absent when the request had none).")
        ),
        "examples": _delivery_examples(),
    }
    for family in event_families():
        resource = "resource SID" if family == EVENT_STREAMS else FAMILIES[family][0]
        key_text = f"The {resource} (= ce_subject), so one resource's events keep their order."
        if family == EVENT_STREAMS:
            key_text += " Absent when the event names no resource."
        example = _event_example(family)
        messages[message_id(family)] = {
            "name": message_id(family),
            "title": f"{family} event",
            "summary": "A Twilio Event Streams event, as Twilio sent it."
            if family == EVENT_STREAMS
            else f"One '{family}' webhook (or polled state) as a CloudEvent.",
            "contentType": "application/json",
            "headers": _ref("components", "schemas", message_id(family) + "Headers"),
            "payload": _payload(event_data_file(family)),
            "correlationId": {"location": "$message.header#/ce_id"},
            "bindings": _kafka_message(_string(key_text)),
            **({"examples": [example]} if example is not None else {}),
        }
    messages["twimlAnswer"] = {
        "name": "twimlAnswer",
        "title": "TwiML answer",
        "summary": "A service's answer to a webhook whose event carries ce_twimlreplyto: the "
        "TwiML Twilio gets, if it comes before ce_twimldeadline and is usable (well-formed UTF-8 "
        "XML without a DOCTYPE, root <Response>, at most BRIDGE_TWIML__MAX_BYTES); else Twilio "
        "gets the fallback and the error topic a record.",
        "contentType": "application/xml",
        "headers": _ref("components", "schemas", "twimlAnswerHeaders"),
        "payload": {"type": "string", "description": "The TwiML document, UTF-8."},
        "bindings": _kafka_message(
            _string("The ce_id of the event answered: the first answer for an id is used.")
        ),
        "examples": [
            {
                "name": "voice",
                "summary": "key: the event's ce_id",
                "headers": {"content-type": "application/xml"},
                "payload": "<Response><Say>Thanks for calling. Connecting you now.</Say>"
                "<Dial>+14155552671</Dial></Response>",
            }
        ],
    }
    messages["seenId"] = {
        "name": "seenId",
        "title": "Published event id",
        "summary": "An event id some replica published, so no replica publishes it again "
        "within the window; the value is empty.",
        "contentType": "application/octet-stream",
        "payload": {"type": "string", "maxLength": 0},
        "bindings": _kafka_message(_string("The event id (ce_id).")),
        "tags": [_INTERNAL],
    }
    messages["instanceAudit"] = {
        "name": "instanceAudit",
        "title": "Instance change",
        "summary": "One change made through the instances API: who, what, when; secrets by "
        "name only, values masked.",
        "contentType": "application/json",
        "headers": _ref("components", "schemas", "cloudEventHeaders"),
        "payload": _payload("instance-audit-data.schema.json"),
        "correlationId": {"location": "$message.header#/ce_id"},
        "bindings": _kafka_message(_string("The instance's name (= ce_subject).")),
    }
    messages["instance"] = {
        "name": "instance",
        "title": "Instance record",
        "summary": "The latest state of an instance, its secrets sealed (AES-256-GCM); a "
        "tombstone deletes it.",
        "contentType": "application/json",
        "payload": {"type": ["object", "null"]},
        "bindings": _kafka_message(_string("The instance's name.")),
        "tags": [_INTERNAL],
    }
    messages["trackingState"] = {
        "name": "trackingState",
        "title": "Tracking state",
        "summary": "A tracked send (kind send, then state; a tombstone once finished) or what "
        "was learnt about it (kind event: Twilio's answer, a callback; a tombstone once the "
        "send's state stands for it).",
        "contentType": "application/json",
        "payload": {"type": ["object", "null"]},
        "bindings": _kafka_message(
            _string("The send's correlation token; token/nonce for an event.")
        ),
        "tags": [_INTERNAL],
    }
    messages["pollerState"] = {
        "name": "pollerState",
        "title": "Poller state",
        "summary": "How far polling a credential got; the latest record per key counts.",
        "contentType": "application/json",
        "payload": _ref("components", "schemas", "pollerState"),
        "bindings": _kafka_message(_string("The credential's name.")),
        "tags": [_INTERNAL],
    }
    return messages


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "requestHeaders": _REQUEST_HEADERS,
        "replyHeaders": _REPLY_HEADERS,
        "errorHeaders": _ERROR_HEADERS,
        "cloudEventHeaders": _CLOUD_EVENT_HEADERS,
        "twimlAnswerHeaders": {
            "type": "object",
            "properties": {"content-type": _string("The value is TwiML.", const="application/xml")},
        },
    }
    for family in event_families():
        schemas[message_id(family) + "Headers"] = _event_headers(family)
    schemas["deliveryHeaders"] = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": _string("The request's id, to correlate without parsing."),
            "traceparent": _string(
                "W3C Trace Context of the tracked send's request (its span in the bridge, "
                "or the request's own traceparent): the statuses join the send's trace."
            ),
            "tracestate": _string("W3C tracestate, with traceparent."),
        },
    }
    schemas["pollerState"] = {
        "type": "object",
        "required": ["since", "watermark"],
        "properties": {
            "since": _string("Where this credential's polling began.", format="date-time"),
            "watermark": _string("The latest update seen.", format="date-time"),
        },
    }
    return schemas


def _channel(
    address: str, description: str, messages: list[str], *, internal: bool = False, **kafka: Any
) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "description": description,
        "messages": {name: _ref("components", "messages", name) for name in messages},
        "bindings": _kafka_channel(address, **kafka),
    }
    if internal:
        channel["tags"] = [_INTERNAL]
        channel["x-internal"] = True
    return channel


def _channels(
    kafka: KafkaSettings,
    webhook: WebhookSettings,
    poller: PollerSettings,
    admin: AdminSettings,
    tracking: TrackingSettings,
    twiml: TwimlSettings,
) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    for n, topic in enumerate(kafka.request_topics):
        channels["requests" if n == 0 else f"requests{n + 1}"] = _channel(
            topic,
            "Request envelopes (BRIDGE_KAFKA__REQUEST_TOPICS: one or more topics).",
            ["request"],
        )
    channels["replies"] = _channel(
        kafka.reply_topic,
        "Exactly one reply per request with an id (BRIDGE_KAFKA__REPLY_TOPIC).",
        ["reply"],
    )
    channels["errors"] = _channel(
        kafka.error_topic,
        "Every failure, for operators and replay (BRIDGE_KAFKA__ERROR_TOPIC).",
        ["errorRecord"],
    )
    for family in event_families():
        source = (
            "Twilio Event Streams deliveries (a webhook sink), one record per event"
            if family == EVENT_STREAMS
            else f"'{family}' webhooks"
        )
        channels[_camel(family) + "Events"] = _channel(
            webhook.topic_for(family),
            f"{source} (POST /webhooks/twilio/{family}; topic: BRIDGE_WEBHOOK__TOPIC_PREFIX "
            f"+ family, or BRIDGE_WEBHOOK__TOPICS).",
            [message_id(family)],
        )
    channels["deliveries"] = _channel(
        tracking.topic,
        "The statuses of tracked sends, keyed like their requests (BRIDGE_TRACKING__TOPIC).",
        ["deliveryRecord"],
    )
    channels["trackingState"] = _channel(
        tracking.state_topic,
        "Internal: tracked sends not yet final and what was learnt about them; partitions "
        "decide which replica judges and reconciles which send (BRIDGE_TRACKING__STATE_TOPIC). "
        "Created by the bridge when missing.",
        ["trackingState"],
        internal=True,
        partitions=tracking.partitions,
        topicConfiguration={
            "cleanup.policy": ["compact", "delete"],
            "retention.ms": int((tracking.give_up_after_s + 86_400) * 1000),
        },
    )
    channels["twimlAnswers"] = _channel(
        twiml.topic,
        "Services' TwiML answers to the webhooks of BRIDGE_TWIML__FAMILIES "
        "(BRIDGE_TWIML__TOPIC; the events name it in ce_twimlreplyto). Every replica reads "
        "every new record and answers the webhooks it holds. Created by the bridge when "
        "missing, with one partition; more may be added at any time.",
        ["twimlAnswer"],
    )
    channels["seenIds"] = _channel(
        webhook.dedupe_topic,
        "Internal: ids of published events, shared by the replicas to publish each event "
        "once (BRIDGE_WEBHOOK__DEDUPE_TOPIC). Created by the bridge when missing.",
        ["seenId"],
        internal=True,
        partitions=1,
        topicConfiguration={
            "cleanup.policy": ["delete"],
            "retention.ms": int(webhook.dedupe_window_s * 1000),
        },
    )
    channels["instanceAudit"] = _channel(
        admin.audit_topic,
        "Every change made through the instances API (BRIDGE_ADMIN__AUDIT_TOPIC). Created by "
        "the bridge when missing.",
        ["instanceAudit"],
    )
    channels["instances"] = _channel(
        admin.topic,
        "Internal: the instances, read by every replica (BRIDGE_ADMIN__TOPIC). Created by "
        "the bridge when missing.",
        ["instance"],
        internal=True,
        partitions=1,
        topicConfiguration={"cleanup.policy": ["compact"]},
    )
    channels["pollerState"] = _channel(
        poller.state_topic,
        "Internal: the poller's progress per credential; partitions decide which replica "
        "polls which credential (BRIDGE_POLLER__STATE_TOPIC). Created by the bridge when "
        "missing.",
        ["pollerState"],
        internal=True,
        partitions=poller.partitions,
        topicConfiguration={"cleanup.policy": ["compact"]},
    )
    return channels


def _operation(
    action: str, channel: str, messages: list[str], summary: str, **extra: Any
) -> dict[str, Any]:
    return {
        "action": action,
        "channel": _ref("channels", channel),
        "summary": summary,
        "messages": [_ref("channels", channel, "messages", m) for m in messages],
        **extra,
    }


def _operations(kafka: KafkaSettings, channels: dict[str, Any]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for name, channel in channels.items():
        if not name.startswith("requests"):
            continue
        operations["receive" + name[0].upper() + name[1:]] = _operation(
            "receive",
            name,
            ["request"],
            f"Call Twilio for each request on {channel['address']}; reply on the reply "
            "topic, and record failures on the error topic.",
            reply={
                "channel": _ref("channels", "replies"),
                "messages": [_ref("channels", "replies", "messages", "reply")],
            },
            bindings={
                "kafka": {
                    "groupId": {"type": "string", "const": kafka.group_id},
                    "bindingVersion": _KAFKA,
                }
            },
        )
    operations["sendReplies"] = _operation(
        "send", "replies", ["reply"], "One reply per request with an id."
    )
    operations["sendErrors"] = _operation(
        "send", "errors", ["errorRecord"], "Every failed request, or unreadable record."
    )
    for family in event_families():
        operations["send" + message_id(family)[0].upper() + message_id(family)[1:] + "s"] = (
            _operation(
                "send",
                _camel(family) + "Events",
                [message_id(family)],
                f"Publish '{family}' events once Twilio's delivery was checked.",
            )
        )
    operations["sendDeliveries"] = _operation(
        "send", "deliveries", ["deliveryRecord"], "Publish each new status of a tracked send."
    )
    operations["receiveTwimlAnswers"] = _operation(
        "receive",
        "twimlAnswers",
        ["twimlAnswer"],
        "Every replica reads the new records of every partition (no consumer group) and "
        "answers the webhook it holds for each key; other keys are another replica's.",
    )
    operations["sendInstanceAudit"] = _operation(
        "send", "instanceAudit", ["instanceAudit"], "Record each change of an instance."
    )
    internal = {"tags": [_INTERNAL], "x-internal": True}
    for channel, message, summary in (
        ("instances", "instance", "Write an instance's new state."),
        ("seenIds", "seenId", "Share the id of each event published."),
    ):
        name = channel[0].upper() + channel[1:]
        operations["send" + name] = _operation("send", channel, [message], summary, **internal)
        operations["receive" + name] = _operation(
            "receive",
            channel,
            [message],
            "Every replica reads the whole topic (no consumer group) and follows it.",
            **internal,
        )
    operations["sendTrackingState"] = _operation(
        "send",
        "trackingState",
        ["trackingState"],
        "Record a tracked send before its create call, and what is learnt after.",
        **internal,
    )
    operations["receiveTrackingState"] = _operation(
        "receive",
        "trackingState",
        ["trackingState"],
        "Own the sends of the assigned partitions: apply their events, reconcile them.",
        bindings={
            "kafka": {
                "groupId": {"type": "string", "const": f"{kafka.group_id}.tracking"},
                "bindingVersion": _KAFKA,
            }
        },
        **internal,
    )
    operations["sendPollerState"] = _operation(
        "send", "pollerState", ["pollerState"], "Record a credential's progress.", **internal
    )
    operations["receivePollerState"] = _operation(
        "receive",
        "pollerState",
        ["pollerState"],
        "Own the credentials of the assigned partitions; read their state.",
        bindings={
            "kafka": {
                "groupId": {"type": "string", "const": f"{kafka.group_id}.poller"},
                "bindingVersion": _KAFKA,
            }
        },
        **internal,
    )
    return operations


def asyncapi_document(
    kafka: KafkaSettings | None = None,
    webhook: WebhookSettings | None = None,
    poller: PollerSettings | None = None,
    admin: AdminSettings | None = None,
    tracking: TrackingSettings | None = None,
    twiml: TwimlSettings | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for these settings (default: the default topic names)."""
    kafka = kafka or KafkaSettings()
    webhook = webhook or WebhookSettings()
    poller = poller or PollerSettings()
    tracking = tracking or TrackingSettings()
    twiml = twiml or TwimlSettings()
    channels = _channels(kafka, webhook, poller, admin or AdminSettings(), tracking, twiml)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "twilio-kafka-bridge",
            "version": __version__,
            "description": "Puts Twilio behind Kafka: request envelopes become Twilio REST "
            "calls with exactly one reply each; Twilio webhooks, Event Streams and polled "
            "states become CloudEvents, one topic per event family (the message poller "
            "publishes on the webhooks' topics, in the same shape); a service may answer voice "
            "and message webhooks with TwiML on the TwiML topic. Topic names are the "
            "defaults; all are configurable. Channels tagged internal are the bridge's own "
            "bookkeeping. Payload schemas are the JSON Schema (2020-12) files beside this "
            "document; generated by `twilio-bridge schemas`.",
            "license": {"name": "Apache-2.0"},
            "tags": [_INTERNAL],
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": kafka.bootstrap_servers,
                "protocol": "kafka",
                "description": "The Kafka cluster (BRIDGE_KAFKA__BOOTSTRAP_SERVERS).",
            }
        },
        "channels": channels,
        "operations": _operations(kafka, channels),
        "components": {
            "messages": _messages(kafka, webhook, twiml),
            "schemas": _schemas(),
        },
    }
