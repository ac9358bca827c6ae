"""Webhooks as CloudEvents (``bridge.contract.events``) and the seen-ids window."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.config import WEBHOOK_FAMILIES
from bridge.contract.events import (
    FAMILIES,
    EventError,
    event_streams_events,
    form_data,
    trace_headers,
    webhook_event,
    with_trace,
)
from bridge.inbound.redelivery.window import RedeliveryWindow
from tests.helpers import ACCOUNT

WHEN = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))


def event(
    family: str,
    data: dict[str, Any],
    token: str | None = "tok",
    signed: bytes = b"s",
    received: datetime = WHEN,
) -> Any:
    return webhook_event(
        family,
        {"AccountSid": ACCOUNT, **data},
        idempotency_token=token,
        signed=signed,
        received=received,
    )


@pytest.mark.parametrize(
    ("family", "data", "event_type", "subject"),
    [
        ("messages", {"MessageSid": "SM1"}, "com.twilio.messaging.inbound-message.received", "SM1"),
        # Older callbacks say SmsSid/SmsStatus only.
        (
            "message-status",
            {"SmsSid": "SM1", "SmsStatus": "undelivered"},
            "com.twilio.messaging.message.undelivered",
            "SM1",
        ),
        ("voice", {"CallSid": "CA1"}, "com.twilio.voice.twiml.call.requested", "CA1"),
        (
            "call-status",
            {"CallSid": "CA1", "CallStatus": "in-progress"},
            "com.twilio.voice.status-callback.call.answered",
            "CA1",
        ),
        (
            "recording-status",
            {"CallSid": "CA1", "RecordingSid": "RE1", "RecordingStatus": "absent"},
            "com.twilio.voice.status-callback.recording.absent",
            "RE1",
        ),
        (
            "conference-status",
            {"ConferenceSid": "CF1", "StatusCallbackEvent": "conference-end"},
            "com.twilio.voice.status-callback.conference.conference-end",
            "CF1",
        ),
    ],
)
def test_each_family_gets_its_event_type_subject_and_key(
    family: str, data: dict[str, Any], event_type: str, subject: str
) -> None:
    ce = event(family, data)
    assert (ce.type, ce.subject, ce.key) == (event_type, subject, subject.encode())
    assert ce.source == f"/2010-04-01/Accounts/{ACCOUNT}"
    assert ce.time == "2026-11-23T09:00:00.123Z"
    assert json.loads(ce.value()) == {"AccountSid": ACCOUNT, **data}


def test_the_families_are_those_of_the_contract() -> None:
    assert set(FAMILIES) == {
        "messages",
        "message-status",
        "voice",
        "call-status",
        "recording-status",
        "conference-status",
    }
    assert WEBHOOK_FAMILIES == (*FAMILIES, "event-streams")


def test_binary_mode_headers_leave_out_absent_attributes() -> None:
    headers = dict(event("messages", {"MessageSid": "SM1"}).headers())
    assert headers["ce_specversion"] == b"1.0" and headers["ce_id"] == b"tok"
    assert headers["content-type"] == b"application/json"


def test_without_a_token_the_id_hashes_what_was_signed() -> None:
    sms = {"MessageSid": "SM1"}
    one = event("messages", sms, None, b"url\nparams")
    again = event("messages", sms, None, b"url\nparams", WHEN + timedelta(seconds=30))
    other = event("messages", sms, None, b"url\nother")
    assert one.id == again.id != other.id


@pytest.mark.parametrize(
    ("family", "data", "missing"),
    [
        ("messages", {"Body": "x"}, "MessageSid"),
        ("message-status", {"MessageSid": "SM1"}, "MessageStatus"),
        ("call-status", {"CallSid": "CA1", "CallStatus": ""}, "CallStatus"),
    ],
)
def test_missing_fields_are_named(family: str, data: dict[str, Any], missing: str) -> None:
    with pytest.raises(EventError, match=missing):
        event(family, data)


def test_account_is_required() -> None:
    with pytest.raises(EventError, match="AccountSid"):
        webhook_event(
            "voice", {"CallSid": "CA1"}, idempotency_token=None, signed=b"", received=WHEN
        )


def test_form_data_keeps_repeated_names_as_lists() -> None:
    assert form_data([("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")]) == {
        "a": ["1", "3", "4"],
        "b": "2",
    }


ES = {
    "specversion": "1.0",
    "id": "EZ1",
    "source": "/2010-04-01/Accounts/AC0/Calls/CA1.json",
    "type": "com.twilio.voice.status-callback.call.completed",
    "data": {"callSid": "CA1"},
}


def test_event_streams_single_event_is_published_as_it_is() -> None:
    [ce] = event_streams_events(json.dumps({**ES, "twilioextension": "x"}).encode())
    assert (ce.id, ce.type, ce.key) == ("EZ1", ES["type"], b"CA1")
    assert json.loads(ce.value()) == {"callSid": "CA1"}
    assert dict(ce.headers())["ce_twilioextension"] == b"x"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[]", "empty batch"),
        (b"{x", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({**ES, "id": ""}).encode(), "lacks id"),
        (json.dumps({**ES, "specversion": "0.3"}).encode(), "CloudEvents 1.0"),
    ],
)
def test_bad_event_streams_deliveries_are_refused(body: bytes, problem: str) -> None:
    with pytest.raises(EventError, match=problem):
        event_streams_events(body)


def test_seen_window_forgets_after_the_window() -> None:
    seen = RedeliveryWindow(10)
    seen.add("a", 100)
    assert seen.contains("a", 109.9) and not seen.contains("b", 105)
    assert not seen.contains("a", 110)
    assert len(seen) == 0


def test_seen_window_checks_late_arrivals_by_their_own_time() -> None:
    seen = RedeliveryWindow(10)
    seen.add("new", 100)
    seen.add("old", 50)  # from another replica, read late
    assert not seen.contains("old", 100)
    assert seen.contains("new", 100)
    seen.add("new", 95)  # an earlier sighting never shortens the window
    assert seen.contains("new", 109)


def test_the_trace_context_becomes_the_distributed_tracing_extension() -> None:
    plain = event("messages", {"AccountSid": ACCOUNT, "MessageSid": "SM1"})
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = [("traceparent", traceparent), ("tracestate", b"t=1"), ("baggage", b"u=2")]
    traced = with_trace(plain, context)
    headers = dict(traced.headers())
    assert (headers["ce_traceparent"], headers["ce_tracestate"]) == (traceparent, b"t=1")
    # Baggage is not part of the extension; everything else stays as it was.
    assert "ce_baggage" not in headers
    assert {k: v for k, v in headers.items() if not k.startswith("ce_trace")} == dict(
        plain.headers()
    )
    assert with_trace(plain, []) is plain


def test_trace_headers_are_found_in_any_case_and_named_in_lower_case() -> None:
    headers = [("id", "r-1"), ("TraceParent", "00-x"), ("tracestate", "t=1"), ("Baggage", "u")]
    assert trace_headers(headers) == (("traceparent", "00-x"), ("tracestate", "t=1"))
    everything = ("traceparent", "tracestate", "baggage")
    assert trace_headers(headers, everything)[-1] == ("baggage", "u")
    assert trace_headers([("id", b"r-1")]) == ()
