"""What makes a TwiML answer usable, and what an awaited event carries (contract.twiml)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.contract.events import webhook_event
from bridge.contract.twiml import DEFAULT_FALLBACKS, TwimlInvalid, awaiting, check_twiml
from tests.helpers import ACCOUNT


@pytest.mark.parametrize(
    "document",
    [
        b"<Response/>",
        b'<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hello</Say></Response>',
        b"<?xml version='1.0' encoding='utf-8'?>\n<Response>\n  <Hangup/>\n</Response>\n",
        "<Response><Message>Olá, caf\u00e9 ✓</Message></Response>".encode(),
        *(text.encode() for text in DEFAULT_FALLBACKS.values()),
    ],
)
def test_well_formed_utf8_with_a_response_root_is_accepted_as_it_is(document: bytes) -> None:
    assert check_twiml(document, 65_536) == document.decode()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"", "not well-formed XML: no element found"),
        (b"<Response><Say>Hi</Response>", "mismatched tag (line 1, column 19)"),
        (b"<Response/><Response/>", "junk after document element"),
        (b"Hello caller", "not well-formed"),
        (b"<Say>Hi</Say>", "the root element is <Say>, not <Response>"),
        (b"<response/>", "the root element is <response>"),
        (b"<Response>\xff</Response>", "not well-formed"),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><Response/>', "declared encoding"),
        (b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">]><Response>&a;&a;</Response>', "DOCTYPE"),
        (b"<Response>" + b"x" * 100 + b"</Response>", "121 bytes, over the limit of 120"),
    ],
)
def test_anything_else_is_refused_with_its_reason(document: bytes, reason: str) -> None:
    with pytest.raises(TwimlInvalid) as refused:
        check_twiml(document, 120)
    assert reason in str(refused.value)


def test_the_reason_never_quotes_the_document() -> None:
    secret = b"call-me-at-+14155550100"
    for document in (b"<Response>" + secret, b"<" + secret + b"/>"):
        with pytest.raises(TwimlInvalid) as refused:
            check_twiml(document, 1000)
        assert b"+14155550100" not in str(refused.value).encode()


def test_an_awaited_event_names_the_reply_topic_and_the_deadline() -> None:
    event = webhook_event(
        "voice",
        {"AccountSid": ACCOUNT, "CallSid": "CA1"},
        idempotency_token="tok",
        signed=b"",
        received=datetime(2026, 1, 1, tzinfo=UTC),
    )
    awaited = awaiting(event, "twilio.twiml", datetime(2026, 1, 1, 0, 0, 8, tzinfo=UTC))
    headers = dict(awaited.headers())
    assert headers["ce_twimlreplyto"] == b"twilio.twiml"
    assert headers["ce_twimldeadline"] == b"2026-01-01T00:00:08.000Z"
    assert (awaited.id, awaited.key, awaited.value()) == (event.id, event.key, event.value())
    assert "ce_twimlreplyto" not in dict(event.headers())
