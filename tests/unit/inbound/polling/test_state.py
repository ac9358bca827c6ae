"""What the poller publishes and remembers (``bridge.inbound.polling.state``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.contract.events import webhook_event
from bridge.inbound.polling.state import PollState, call_event, message_event, parse_twilio_time
from tests.helpers import ACCOUNT

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MESSAGE = {
    "account_sid": ACCOUNT,
    "api_version": "2010-04-01",
    "sid": "SM1",
    "from": "+14155550100",
    "to": "+14155550101",
    "status": "delivered",
    "direction": "outbound-api",
    "messaging_service_sid": None,
    "error_code": None,
    "body": "hi",
    "date_updated": "Mon, 23 Nov 2026 09:59:58 +0000",
}


def test_a_polled_status_is_the_event_its_status_callback_would_be() -> None:
    family, polled = message_event(MESSAGE, NOW)
    # What Twilio posts to a message's StatusCallback for the same state.
    callback = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "MessageSid": "SM1",
        "SmsSid": "SM1",
        "MessageStatus": "delivered",
        "SmsStatus": "delivered",
        "From": "+14155550100",
        "To": "+14155550101",
    }
    webhook = webhook_event(family, callback, idempotency_token="t", signed=b"", received=NOW)
    assert family == "message-status"
    assert (polled.type, polled.source, polled.subject, polled.key) == (
        webhook.type,
        webhook.source,
        webhook.subject,
        webhook.key,
    )
    assert polled.data == callback
    assert polled.id == "poll.SM1.delivered"


def test_an_inbound_message_is_a_messages_event_with_its_body() -> None:
    family, event = message_event({**MESSAGE, "direction": "inbound", "status": "received"}, NOW)
    assert family == "messages"
    assert event.type == "com.twilio.messaging.inbound-message.received"
    assert event.data["Body"] == "hi" and "MessageStatus" not in event.data


def test_a_failed_message_carries_its_error_code() -> None:
    _, event = message_event({**MESSAGE, "status": "failed", "error_code": 30003}, NOW)
    assert event.data["ErrorCode"] == "30003"
    assert event.type == "com.twilio.messaging.message.failed"


def test_a_polled_call_is_a_call_status_event() -> None:
    call = {"account_sid": ACCOUNT, "sid": "CA1", "status": "in-progress", "duration": None}
    family, event = call_event(call, NOW)
    assert family == "call-status"
    assert event.type == "com.twilio.voice.status-callback.call.answered"
    assert event.key == b"CA1" and event.id == "poll.CA1.in-progress"


def test_state_advances_to_the_latest_update_and_survives_kafka() -> None:
    start = datetime(2026, 11, 23, tzinfo=UTC)
    state = PollState(start, start).advanced(
        [MESSAGE, {**MESSAGE, "date_updated": "not a date"}, {"sid": "SM2"}]
    )
    assert state.watermark == datetime(2026, 11, 23, 9, 59, 58, tzinfo=UTC)
    assert PollState.from_json(state.to_json()) == state
    assert state.advanced([]) == state  # nothing new never moves it back


def test_the_query_looks_back_but_never_before_the_start() -> None:
    start = datetime(2026, 11, 23, tzinfo=UTC)
    state = PollState(start, start + timedelta(hours=2))
    assert state.query_from(timedelta(minutes=15)) == start + timedelta(hours=1, minutes=45)
    assert state.query_from(timedelta(hours=5)) == start


@pytest.mark.parametrize("value", [b"{}", b"nope", b'{"since": 1, "watermark": 2}'])
def test_a_record_that_is_not_a_state_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        PollState.from_json(value)


def test_twilio_times_parse_as_utc() -> None:
    assert parse_twilio_time("Fri, 24 May 2019 17:44:50 +0000") == datetime(
        2019, 5, 24, 17, 44, 50, tzinfo=UTC
    )
    assert parse_twilio_time(None) is None and parse_twilio_time("soon") is None
