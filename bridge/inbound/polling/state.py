"""What the message poller publishes and remembers. Pure: no I/O, times are the caller's.

The poller lists a credential's Messages (and optionally Calls) sent since a little before its
watermark, and publishes each resource state it has not published yet as the CloudEvent the
matching webhook would have produced: the same family, type, source, subject and key, with the
resource written as the webhook's parameters. A state's id is the SID and status, so the same
state polled twice (or by a new owner after a restart) is recognised in the shared seen-ids
window and published once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from bridge.contract.events import CloudEvent, webhook_event

__all__ = ["PollState", "call_event", "message_event", "parse_twilio_time"]

# Webhook parameter → resource field, for the fields both carry.
_MESSAGE_FIELDS = {
    "AccountSid": "account_sid",
    "ApiVersion": "api_version",
    "MessageSid": "sid",
    "SmsSid": "sid",
    "From": "from",
    "To": "to",
    "MessagingServiceSid": "messaging_service_sid",
}
_INBOUND_FIELDS = {"Body": "body", "NumMedia": "num_media", "NumSegments": "num_segments"}
_CALL_FIELDS = {
    "AccountSid": "account_sid",
    "ApiVersion": "api_version",
    "CallSid": "sid",
    "CallStatus": "status",
    "From": "from",
    "To": "to",
    "Direction": "direction",
    "CallDuration": "duration",
    "ParentCallSid": "parent_call_sid",
}


def parse_twilio_time(text: str | None) -> datetime | None:
    """A 2010 API date (RFC 2822, ``Fri, 24 May 2019 17:44:50 +0000``) as UTC, if it is one."""
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class PollState:
    """A credential's polling progress, kept in Kafka: where it began and how far it got."""

    since: datetime
    watermark: datetime

    def query_from(self, lookback: timedelta) -> datetime:
        """List resources sent from here: statuses change for a while after sending."""
        return max(self.since, self.watermark - lookback)

    def advanced(self, resources: Iterable[Mapping[str, Any]]) -> PollState:
        """The state after seeing ``resources``: the watermark is the latest update seen."""
        times = [parse_twilio_time(r.get("date_updated")) for r in resources]
        latest = max((t for t in times if t is not None), default=self.watermark)
        return PollState(self.since, max(self.watermark, latest))

    def to_json(self) -> bytes:
        """The Kafka value of the state record."""
        return orjson.dumps({"since": _iso(self.since), "watermark": _iso(self.watermark)})

    @classmethod
    def from_json(cls, value: bytes) -> PollState:
        """Read a state record back; raises ValueError when it is not one."""
        try:
            doc = orjson.loads(value)
            since, watermark = doc["since"], doc["watermark"]
            return cls(datetime.fromisoformat(since), datetime.fromisoformat(watermark))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a poller state: {exc}") from None


def message_event(resource: Mapping[str, Any], received: datetime) -> tuple[str, CloudEvent]:
    """(family, event) for a Message resource: inbound ones as ``messages``, others as status."""
    params = _params(resource, _MESSAGE_FIELDS)
    status = _text(resource.get("status"))
    if resource.get("direction") == "inbound":
        family = "messages"
        params |= _params(resource, _INBOUND_FIELDS)
    else:
        family = "message-status"
        params |= {"MessageStatus": status, "SmsStatus": status}
        if resource.get("error_code") is not None:
            params["ErrorCode"] = _text(resource["error_code"])
    return family, _event(family, params, f"{params.get('MessageSid')}.{status}", received)


def call_event(resource: Mapping[str, Any], received: datetime) -> tuple[str, CloudEvent]:
    """(family, event) for a Call resource, shaped like its status callback."""
    params = _params(resource, _CALL_FIELDS)
    state = f"{params.get('CallSid')}.{params.get('CallStatus')}"
    return "call-status", _event("call-status", params, state, received)


def _event(family: str, params: dict[str, str], state: str, received: datetime) -> CloudEvent:
    return webhook_event(
        family, params, idempotency_token=f"poll.{state}", signed=b"", received=received
    )


def _params(resource: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, str]:
    return {
        param: _text(resource[name])
        for param, name in fields.items()
        if resource.get(name) is not None
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
