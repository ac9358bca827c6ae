"""A tracked send and what each thing learnt about it does to it. Pure: times are the caller's.

``TrackedSend`` is the state kept in the state topic under the send's correlation token: who
asked (request id, Kafka key, metadata), what was sent (message or call, which account) and how
far it got (SID, last published status, sequence). ``Event`` is what the flows learn after
the send: Twilio's answer to the create call, or a status callback. Each function returns the
send's next state and the delivery record to publish, if any.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from bridge.contract.deliveries import DeliveryRecord, Resource, Source
from bridge.tracking.statuses import EXPIRED, Progress, Verdict, judge

__all__ = [
    "Event",
    "TrackedSend",
    "answered",
    "callback_status",
    "expired",
    "finished",
    "learnt",
]

EventType = Literal["answer", "callback"]
# Channels whose messages are read after they are delivered: their state waits for 'read'.
_READ_RECEIPTS = ("whatsapp:", "rcs:")
# Callback parameter -> resource field, for the status, SID and error of each resource.
_PARAMS: dict[Resource, tuple[str, str]] = {
    "message": ("MessageStatus", "MessageSid"),
    "call": ("CallStatus", "CallSid"),
}


@dataclass(frozen=True, slots=True)
class TrackedSend:
    """One tracked send, as the state topic keeps it."""

    token: str
    request_id: str
    key: bytes | None
    metadata: dict[str, Any] | None
    resource: Resource
    account_sid: str
    credential: str
    created_at: float  # epoch seconds
    reads: bool = False  # a delivered message may still be read (WhatsApp, RCS)
    sid: str | None = None
    status: str | None = None  # the last status published
    final: bool = False
    sequence: int = 0
    applied: int = -1  # offset of the last event applied, in the state topic
    # The W3C trace context of the send's request (traceparent, tracestate): its delivery
    # records carry it, so they join the trace of the send.
    trace: tuple[tuple[str, str], ...] = ()

    def record_headers(self) -> list[tuple[str, bytes]]:
        """The headers of the send's delivery records: the request id and the trace context."""
        return [("id", self.request_id.encode()), *((k, v.encode()) for k, v in self.trace)]

    @staticmethod
    def reads_after_delivery(to: object) -> bool:
        """Whether a message to ``to`` gets a ``read`` status after ``delivered``."""
        return isinstance(to, str) and to.startswith(_READ_RECEIPTS)

    def to_json(self) -> bytes:
        """The value of the state record."""
        document = {
            "token": self.token,
            "id": self.request_id,
            "key": base64.b64encode(self.key).decode() if self.key is not None else None,
            "metadata": self.metadata,
            "resource": self.resource,
            "account_sid": self.account_sid,
            "credential": self.credential,
            "created_at": self.created_at,
            "reads": self.reads,
            "sid": self.sid,
            "status": self.status,
            "final": self.final,
            "sequence": self.sequence,
            "applied": self.applied,
        }
        if self.trace:
            document["trace"] = dict(self.trace)
        return orjson.dumps(document)

    @classmethod
    def from_json(cls, value: bytes) -> TrackedSend:
        """A state record read back; raises ValueError when it is not one."""
        try:
            doc = orjson.loads(value)
            key = doc["key"]
            return cls(
                token=str(doc["token"]),
                request_id=str(doc["id"]),
                key=base64.b64decode(key) if key is not None else None,
                metadata=doc["metadata"],
                resource=_resource(doc["resource"]),
                account_sid=str(doc["account_sid"]),
                credential=str(doc["credential"]),
                created_at=float(doc["created_at"]),
                reads=bool(doc["reads"]),
                sid=doc["sid"],
                status=doc["status"],
                final=bool(doc["final"]),
                sequence=int(doc["sequence"]),
                applied=int(doc["applied"]),
                trace=tuple((str(k), str(v)) for k, v in (doc.get("trace") or {}).items()),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a tracked send: {exc}") from None


def _resource(value: Any) -> Resource:
    if value == "message" or value == "call":
        return value  # type: ignore[no-any-return]
    raise ValueError(f"unknown resource {value!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """What became known about a send: Twilio's answer to its create call, or a callback."""

    type: EventType
    account_sid: str | None = None
    sid: str | None = None
    # answer: Twilio refused the create call (nothing was sent, nothing will come)
    refused: bool = False
    params: Mapping[str, Any] | None = None  # a callback's parameters, as Twilio sent them

    def to_json(self) -> bytes:
        """The value of the event record."""
        return orjson.dumps(
            {
                "type": self.type,
                "account_sid": self.account_sid,
                "sid": self.sid,
                "refused": self.refused,
                "params": dict(self.params) if self.params is not None else None,
            }
        )

    @classmethod
    def from_json(cls, value: bytes) -> Event:
        """An event record read back; raises ValueError when it is not one."""
        try:
            doc = orjson.loads(value)
            kind = doc["type"]
            if kind not in ("answer", "callback"):
                raise ValueError(f"unknown event type {kind!r}")
            params = doc["params"]
            return cls(
                type=kind,
                account_sid=doc["account_sid"],
                sid=doc["sid"],
                refused=bool(doc["refused"]),
                params=params if isinstance(params, dict) else None,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a tracking event: {exc}") from None


def finished(send: TrackedSend) -> bool:
    """True once nothing more can be published for ``send``: its state can go."""
    return send.final and not (send.reads and send.status == "delivered")


def answered(send: TrackedSend, event: Event, offset: int) -> TrackedSend | None:
    """``send`` once Twilio answered its create call; None when Twilio refused it."""
    if event.refused:
        return None
    return replace(send, sid=send.sid or event.sid, applied=offset)


def learnt(
    send: TrackedSend,
    status: str,
    fields: Mapping[str, Any],
    *,
    source: Source,
    at: str,
    offset: int | None = None,
) -> tuple[Verdict, TrackedSend, DeliveryRecord | None]:
    """``send`` after learning ``status`` from a callback's parameters or a fetched resource's
    fields; the record to publish when the status moves it forward."""
    sid = send.sid or _sid(send.resource, fields)
    applied = send.applied if offset is None else offset
    verdict, final = judge(Progress(send.resource, send.status, send.final), status)
    if verdict != "publish":
        return verdict, replace(send, sid=sid, applied=applied), None
    ended = send.final or final
    after = replace(
        send, sid=sid, status=status, final=ended, sequence=send.sequence + 1, applied=applied
    )
    code, message = _error(fields)
    record = DeliveryRecord(
        id=send.request_id,
        sid=sid,
        resource=send.resource,
        status=status,
        final=final,
        error_code=code,
        error_message=message,
        sequence=after.sequence,
        source=source,
        at=at,
        metadata=send.metadata,
        event=dict(fields),
    )
    return verdict, after, record


def callback_status(resource: Resource, params: Mapping[str, Any]) -> str | None:
    """The status a callback reports (``MessageStatus``, older ``SmsStatus``; ``CallStatus``)."""
    name = _PARAMS[resource][0]
    status = params.get(name) or (params.get("SmsStatus") if resource == "message" else None)
    return status if isinstance(status, str) else None


def expired(send: TrackedSend, at: str) -> DeliveryRecord:
    """The final record of a send the bridge gave up on."""
    return DeliveryRecord(
        id=send.request_id,
        sid=send.sid,
        resource=send.resource,
        status=EXPIRED,
        final=True,
        sequence=send.sequence + 1,
        source="reconcile",
        at=at,
        metadata=send.metadata,
    )


def _sid(resource: Resource, fields: Mapping[str, Any]) -> str | None:
    sid = fields.get(_PARAMS[resource][1]) or fields.get("sid")
    return sid if isinstance(sid, str) else None


def _error(fields: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(error code, message) from a callback (ErrorCode) or a resource (error_code)."""
    code = fields.get("ErrorCode", fields.get("error_code"))
    message = fields.get("ErrorMessage", fields.get("error_message"))
    try:
        number = int(code) if code not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    return number, message if isinstance(message, str) else None
