from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
import pytest
from pydantic import SecretStr

from bridge.config import Credential, TrackingSettings, TwilioSettings
from bridge.contract.envelopes import AdvancedRequest, BasicRequest, parse_request
from bridge.contract.errors import RequestInvalid
from bridge.instances.accounts import account_of
from bridge.tracking.correlation import (
    Choice,
    callback_url,
    decide,
    new_token,
    partition_of,
    token_in,
    trackable,
)
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder
from bridge.twilio.catalog import Catalog
from tests.helpers import ACCOUNT, INSTANCE_ACCOUNT, INSTANCE_AUTH_TOKEN, stored_instance

PUBLIC = "https://hooks.example.com/bridge"
SETTINGS = TrackingSettings()
CATALOG = Catalog.load()


def _builder(**credential: object) -> CallBuilder:
    defaults: dict[str, object] = {"account_sid": ACCOUNT, "auth_token": SecretStr("t" * 32)}
    accounts = Accounts({"default": Credential.model_validate({**defaults, **credential})})
    return CallBuilder(CATALOG, accounts, TwilioSettings())


def _decide(
    envelope: dict[str, object], builder: CallBuilder | None = None, public_url: str | None = PUBLIC
) -> Choice:
    builder = builder or _builder()
    request = parse_request(orjson.dumps(envelope))
    call = builder.build(request)
    return decide(
        request, call, settings=SETTINGS, public_url=public_url, token="x" * 24, key=b"k", now=1.0
    )


def _message(**fields: object) -> dict[str, object]:
    body = {"To": "+14155550100", "From": "+14155550101", "Body": "hi"}
    return {"id": "r1", "mode": "basic", "operation": "CreateMessage", "body": body, **fields}


def test_a_tracked_message_gets_the_bridges_callback_with_an_opaque_token_only() -> None:
    choice = _decide(_message(track=True, metadata={"secret": "customer data"}))
    assert isinstance(choice.request, BasicRequest)
    url = choice.request.body["StatusCallback"]
    assert url == f"{PUBLIC}/webhooks/twilio/message-status?tracking={'x' * 24}"
    assert choice.send is not None
    assert (choice.send.key, choice.send.metadata) == (b"k", {"secret": "customer data"})
    assert token_in(url) == "x" * 24


def test_a_tracked_call_asks_for_every_status_event() -> None:
    body = {"To": "+14155550100", "From": "+14155550101", "Url": "https://x.example/t"}
    choice = _decide(
        {"id": "c", "mode": "basic", "operation": "CreateCall", "body": body, "track": True}
    )
    assert isinstance(choice.request, BasicRequest)
    assert choice.request.body["StatusCallbackEvent"] == [
        "initiated",
        "ringing",
        "answered",
        "completed",
    ]
    assert choice.request.body["StatusCallback"].startswith(
        f"{PUBLIC}/webhooks/twilio/call-status?"
    )


def test_an_advanced_post_to_messages_is_tracked_and_its_form_kept() -> None:
    envelope = {
        "id": "a",
        "mode": "advanced",
        "method": "POST",
        "path": f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
        "body": "To=%2B14155550100&Body=hi",
        "track": True,
    }
    choice = _decide(envelope)
    assert isinstance(choice.request, AdvancedRequest) and isinstance(choice.request.body, str)
    assert choice.request.body.startswith("To=%2B14155550100&Body=hi&StatusCallback=https%3A")
    assert dict(parse_qsl(choice.request.body))["StatusCallback"].endswith("x" * 24)


@pytest.mark.parametrize(
    ("envelope", "public_url", "said"),
    [
        ({"id": "l", "mode": "basic", "operation": "ListMessage", "track": True}, PUBLIC, "only"),
        (
            _message(track=True, body={"To": "+1415", "StatusCallback": "https://mine"}),
            PUBLIC,
            "sets StatusCallback",
        ),
        (_message(track=True), None, "BRIDGE_WEBHOOK__PUBLIC_URL"),
    ],
)
def test_tracking_that_cannot_be_done_is_a_validation_error_naming_track(
    envelope: dict[str, object], public_url: str | None, said: str
) -> None:
    with pytest.raises(RequestInvalid) as raised:
        _decide(envelope, public_url=public_url)
    assert list(raised.value.invalid) == ["track"] and said in raised.value.message


def test_an_account_without_its_auth_token_cannot_track() -> None:
    builder = _builder(auth_token=None, api_key_sid="SK" + "1" * 32, api_key_secret=SecretStr("s"))
    with pytest.raises(RequestInvalid, match="Auth Token"):
        _decide(_message(track=True), builder)


@pytest.mark.parametrize(
    "events", [{"mechanism": "polling"}, {"enabled": False}], ids=["polls", "events off"]
)
def test_an_instance_that_takes_no_webhooks_cannot_track(events: dict[str, object]) -> None:
    # Its callbacks would be refused (403 events_off): the send could never end.
    accounts = Accounts()
    quiet = stored_instance(
        "quiet", INSTANCE_ACCOUNT, INSTANCE_AUTH_TOKEN, events=events, track=True
    )
    hooked = stored_instance("hooked", INSTANCE_ACCOUNT, INSTANCE_AUTH_TOKEN)
    for instance in (quiet, hooked):
        accounts.put(account_of(instance, TwilioSettings()))
    builder = CallBuilder(CATALOG, accounts, TwilioSettings())
    with pytest.raises(RequestInvalid) as raised:
        _decide(_message(track=True, credential="quiet"), builder)
    assert list(raised.value.invalid) == ["track"]
    assert "'quiet' does not take events by webhook" in raised.value.message
    # Its default gives way, as it does to a request's own callback.
    assert _decide(_message(credential="quiet"), builder).send is None
    assert _decide(_message(track=True, credential="hooked"), builder).send is not None


def test_account_defaults_fill_in_what_the_envelope_leaves_out() -> None:
    builder = _builder(
        default_messaging_service_sid="MG" + "a" * 32,
        default_from="+14155550199",
        status_callback="https://own.example.com/status",
    )
    bare = _message(body={"To": "+14155550100", "Body": "hi"})
    choice = _decide(bare, builder)
    assert isinstance(choice.request, BasicRequest) and choice.send is None
    assert choice.request.body["MessagingServiceSid"] == "MG" + "a" * 32
    assert "From" not in choice.request.body
    assert choice.request.body["StatusCallback"] == "https://own.example.com/status"
    # The request's own values win.
    own = _decide(_message(), builder).request
    assert isinstance(own, BasicRequest) and own.body["From"] == "+14155550101"
    assert "MessagingServiceSid" not in own.body


def test_defaults_for_track_give_way_to_the_envelope_and_to_its_own_callback() -> None:
    builder = _builder(track=True)
    assert _decide(_message(), builder).send is not None
    assert _decide(_message(track=False), builder).send is None
    body = {"To": "+14155550100", "From": "+1", "StatusCallback": "https://mine.example"}
    assert _decide(_message(body=body), builder).send is None


def test_tokens_are_fresh_and_found_only_when_well_formed() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000 and all(token_in(callback_url(PUBLIC, "message", t)) for t in tokens)
    assert token_in(f"{PUBLIC}/webhooks/twilio/message-status?tracking=short") is None
    assert token_in(f"{PUBLIC}/webhooks/twilio/message-status") is None
    assert {partition_of(t, 12) for t in tokens} == set(range(12))


def test_only_creates_of_messages_and_calls_are_trackable() -> None:
    builder = _builder()
    fetch = BasicRequest(id="f", mode="basic", operation="FetchMessage", params={"Sid": "SM1"})
    assert trackable(builder.build(fetch)) is None
    create = BasicRequest(id="m", mode="basic", operation="CreateMessage", body={"To": "+1"})
    assert trackable(builder.build(create)) == "message"
