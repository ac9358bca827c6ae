"""Twilio webhooks through the real bridge process to Tansu, signed by Twilio's own validator.

Every valid delivery must arrive on its family's topic as a binary-mode CloudEvent before
Twilio gets its 2xx; every forged or malformed one is refused and publishes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from twilio.request_validator import RequestValidator

from bridge.config import WEBHOOK_FAMILIES
from bridge.tooling.local.tansu import TansuBroker, create_topics
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.support.harness import BridgeProcess, Topics, collect

SIGNER = RequestValidator(AUTH_TOKEN)
MESSAGE_SID = "SM" + "1" * 32
CALL_SID = "CA" + "2" * 32
BASE = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01"}
# One webhook per form family, as Twilio sends them, and the CloudEvent type each must get.
WEBHOOKS: dict[str, tuple[dict[str, str], str, str]] = {
    "messages": (
        {"MessageSid": MESSAGE_SID, "From": "+14155550100", "To": "+14155550101", "Body": "hi"},
        "com.twilio.messaging.inbound-message.received",
        MESSAGE_SID,
    ),
    "message-status": (
        {"MessageSid": MESSAGE_SID, "MessageStatus": "delivered"},
        "com.twilio.messaging.message.delivered",
        MESSAGE_SID,
    ),
    "voice": (
        {"CallSid": CALL_SID, "CallStatus": "ringing", "From": "+14155550100"},
        "com.twilio.voice.twiml.call.requested",
        CALL_SID,
    ),
    "call-status": (
        {"CallSid": CALL_SID, "CallStatus": "completed", "CallDuration": "42"},
        "com.twilio.voice.status-callback.call.completed",
        CALL_SID,
    ),
    "recording-status": (
        {"CallSid": CALL_SID, "RecordingSid": "RE" + "3" * 32, "RecordingStatus": "completed"},
        "com.twilio.voice.status-callback.recording.completed",
        "RE" + "3" * 32,
    ),
    "conference-status": (
        {"ConferenceSid": "CF" + "4" * 32, "StatusCallbackEvent": "participant-join"},
        "com.twilio.voice.status-callback.conference.participant-join",
        "CF" + "4" * 32,
    ),
}
FORM = "application/x-www-form-urlencoded"


class Bridge:
    """A running bridge process and what a test needs to call it."""

    def __init__(self, process: BridgeProcess, bootstrap: str, prefix: str) -> None:
        self.process, self.bootstrap, self.prefix = process, bootstrap, prefix
        self.http = httpx.AsyncClient(base_url=process.http_url, timeout=30)

    def url(self, family: str, query: str = "") -> str:
        path = f"{self.process.http_url}/webhooks/twilio/{family}"
        return f"{path}?{query}" if query else path

    async def post_form(
        self, family: str, params: dict[str, str], *, token: str | None = None, **headers: str
    ) -> httpx.Response:
        """POST a form webhook signed like Twilio (or with ``token`` instead)."""
        signer = RequestValidator(token) if token else SIGNER
        signature = signer.compute_signature(self.url(family), params)
        return await self.http.post(
            f"/webhooks/twilio/{family}",
            content=urlencode(params),
            headers={"content-type": FORM, "x-twilio-signature": signature, **headers},
        )

    async def events(self, family: str, want: int, settle_s: float = 1.0) -> list[Any]:
        return await collect(self.bootstrap, self.prefix + family, want, 20, settle_s=settle_s)


async def _start(bootstrap: str, tmp_path: Path, **env: str) -> Bridge:
    topics = Topics.fresh()
    await topics.create(bootstrap)
    prefix = f"ev-{topics.group}."
    await create_topics(bootstrap, [prefix + family for family in WEBHOOK_FAMILIES])
    process = BridgeProcess(
        bootstrap,
        "http://127.0.0.1:9",  # outbound is not used here
        topics,
        tmp_path / "bridge.log",
        {"BRIDGE_WEBHOOK__TOPIC_PREFIX": prefix, **env},
    ).start()
    await process.wait_ready()
    return Bridge(process, bootstrap, prefix)


@pytest_asyncio.fixture
async def bridge(tansu: Any, tmp_path: Path) -> AsyncIterator[Bridge]:
    started = await _start(tansu.bootstrap_servers, tmp_path)
    yield started
    await started.http.aclose()
    assert started.process.stop() == 0, started.process.log()[-3000:]


async def test_each_family_is_published_as_a_cloudevent_before_twilio_hears_back(
    bridge: Bridge,
) -> None:
    for family, (params, event_type, subject) in WEBHOOKS.items():
        token = str(uuid.uuid4())
        answer = await bridge.post_form(
            family, {**BASE, **params}, **{"I-Twilio-Idempotency-Token": token}
        )
        assert answer.status_code == 200, (family, answer.text)
        if family in ("messages", "voice"):
            assert answer.headers["content-type"].startswith("text/xml")
            assert answer.text.endswith("<Response/>")
        # The 2xx came after Kafka's acknowledgement: the event is there already.
        [event] = await bridge.events(family, 1, settle_s=0)
        assert event.key == subject.encode()
        headers = {k: v.decode() for k, v in event.headers.items()}
        assert headers == {
            "ce_specversion": "1.0",
            "ce_id": token,
            "ce_source": f"/2010-04-01/Accounts/{ACCOUNT}",
            "ce_type": event_type,
            "ce_subject": subject,
            "ce_time": headers["ce_time"],
            "content-type": "application/json",
        }
        assert headers["ce_time"].endswith("Z")
        assert event.value == {**BASE, **params}


async def test_get_and_repeated_keys_and_unicode_are_signed_and_kept(bridge: Bridge) -> None:
    params = [("AccountSid", ACCOUNT), ("MessageSid", MESSAGE_SID), ("Body", "héllo ✓ 1+1")]
    params += [("MediaUrl0", "https://x/a"), ("Tag", "b"), ("Tag", "a")]
    query = urlencode(params)
    signature = SIGNER.compute_signature(bridge.url("messages", query), {})
    answer = await bridge.http.get(
        f"/webhooks/twilio/messages?{query}", headers={"x-twilio-signature": signature}
    )
    assert answer.status_code == 200, answer.text
    [event] = await bridge.events("messages", 1)
    assert event.value["Body"] == "héllo ✓ 1+1"
    assert event.value["Tag"] == ["b", "a"]
    # Without an idempotency token the id is a hash of what Twilio signed: stable on retry.
    assert len(event.headers["ce_id"]) == 64


async def test_event_streams_batch_is_published_event_by_event(bridge: Bridge) -> None:
    batch = [
        {
            "specversion": "1.0",
            "id": f"EZ{n:032d}",
            "source": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{MESSAGE_SID}.json",
            "type": "com.twilio.messaging.message.delivered",
            "time": "2026-11-23T10:00:00.000Z",
            "dataschema": "https://events-schemas.twilio.com/Messaging.MessageStatus/2",
            "datacontenttype": "application/json",
            "data": {"messageSid": MESSAGE_SID, "accountSid": ACCOUNT, "n": n},
        }
        for n in range(2)
    ]
    body = json.dumps(batch).encode()
    url = bridge.url("event-streams", f"bodySHA256={hashlib.sha256(body).hexdigest()}")
    answer = await bridge.http.post(
        url,
        content=body,
        headers={
            "content-type": "application/json",
            "x-twilio-signature": SIGNER.compute_signature(url, {}),
        },
    )
    assert answer.status_code == 200, answer.text
    events = await bridge.events("event-streams", 2)
    assert [e.value for e in events] == [item["data"] for item in batch]
    assert [e.headers["ce_id"].decode() for e in events] == [item["id"] for item in batch]
    assert {e.key for e in events} == {MESSAGE_SID.encode()}
    assert events[0].headers["ce_dataschema"].decode() == batch[0]["dataschema"]


async def test_shared_key_signatures_use_the_configured_secret(tansu: Any, tmp_path: Path) -> None:
    key_id, secret = "webhooks_sharedkey_01", "shared-secret-not-the-token"
    started = await _start(
        tansu.bootstrap_servers, tmp_path, **{f"BRIDGE_WEBHOOK__SHARED_KEYS__{key_id}": secret}
    )
    try:
        params = {**BASE, **WEBHOOKS["message-status"][0]}
        url = started.url("message-status")
        settings = f"key={key_id},algorithm=HMAC_SHA256"
        for signer, expected in ((secret, 200), (AUTH_TOKEN, 403)):
            signature = RequestValidator(signer).compute_signature(url, params, "HMAC_SHA256")
            answer = await started.http.post(
                url,
                content=urlencode(params),
                headers={
                    "content-type": FORM,
                    "x-twilio-signature": signature,
                    "x-twilio-webhooks-signature-settings": settings,
                },
            )
            assert answer.status_code == expected, answer.text
        assert len(await started.events("message-status", 1)) == 1
        assert secret not in started.process.log()
    finally:
        await started.http.aclose()
        assert started.process.stop() == 0


async def test_a_retried_delivery_is_acknowledged_without_a_second_event(bridge: Bridge) -> None:
    params = {**BASE, **WEBHOOKS["message-status"][0]}
    retry = {"I-Twilio-Idempotency-Token": "idem-1"}
    for _ in range(3):
        answer = await bridge.post_form("message-status", params, **retry)
        assert answer.status_code == 200
    events = await bridge.events("message-status", 1, settle_s=2)
    assert len(events) == 1


@pytest.mark.parametrize(
    "forgery",
    ["unsigned", "wrong token", "changed value", "added param", "other account"],
)
async def test_forged_webhooks_are_refused_and_publish_nothing(
    bridge: Bridge, forgery: str
) -> None:
    params = {**BASE, **WEBHOOKS["messages"][0]}
    signature = SIGNER.compute_signature(bridge.url("messages"), params)
    sent = dict(params)
    headers = {"content-type": FORM, "x-twilio-signature": signature}
    if forgery == "unsigned":
        del headers["x-twilio-signature"]
    elif forgery == "wrong token":
        headers["x-twilio-signature"] = RequestValidator("not-the-token").compute_signature(
            bridge.url("messages"), params
        )
    elif forgery == "changed value":
        sent["Body"] = "send me money"
    elif forgery == "added param":
        sent["Extra"] = "1"
    else:
        sent["AccountSid"] = "AC" + "f" * 32
    answer = await bridge.http.post(
        "/webhooks/twilio/messages", content=urlencode(sent), headers=headers
    )
    assert answer.status_code == 403, answer.text
    assert AUTH_TOKEN not in answer.text
    # A valid one afterwards is the only event on the topic.
    assert (await bridge.post_form("messages", params)).status_code == 200
    events = await bridge.events("messages", 1)
    assert [e.value for e in events] == [params]
    assert AUTH_TOKEN not in bridge.process.log()


async def test_malformed_requests_get_the_right_status_and_publish_nothing(
    bridge: Bridge,
) -> None:
    http = bridge.http
    path = "/webhooks/twilio/messages"
    assert (await http.put(path, content=b"x")).status_code == 405
    assert (await http.post("/webhooks/twilio/sms", content=b"x")).status_code == 404
    answer = await http.post(path, content=b"x", headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and "content type" in answer.text
    big = b"Body=" + b"x" * 1_100_000
    assert (await http.post(path, content=big, headers={"content-type": FORM})).status_code == 413
    url = bridge.url("event-streams")
    bad_json = await http.post(
        url,
        content=b"{not json",
        headers={
            "content-type": "application/json",
            "x-twilio-signature": SIGNER.compute_signature(url, {}),
        },
    )
    assert bad_json.status_code in (400, 403)  # refused either way; never a 500
    # Signed, but not a webhook of its family: no MessageSid.
    answer = await bridge.post_form("messages", {**BASE, "Body": "no sid"})
    assert answer.status_code == 400 and "MessageSid" in answer.text
    for family in ("messages", "event-streams"):
        assert await bridge.events(family, 0, settle_s=1) == []


async def test_a_webhook_during_a_broker_outage_gets_503_and_its_retry_is_published_once(
    tmp_path: Path,
) -> None:
    async with TansuBroker(log_dir=tmp_path) as broker:
        bridge = await _start(broker.bootstrap_servers, tmp_path, BRIDGE_WEBHOOK__ACK_TIMEOUT_S="2")
        try:
            params = {**BASE, **WEBHOOKS["call-status"][0]}
            retry = {"I-Twilio-Idempotency-Token": "idem-outage"}
            broker.suspend()
            try:
                answer = await bridge.post_form("call-status", params, **retry)
                assert answer.status_code == 503, answer.text
            finally:
                broker.resume()
            # Twilio retries the delivery; the first publish may land meanwhile, never twice.
            for _ in range(50):
                answer = await bridge.post_form("call-status", params, **retry)
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.5)
            assert answer.status_code == 200, answer.text
            events = await bridge.events("call-status", 1, settle_s=3)
            assert [e.headers["ce_id"] for e in events] == [b"idem-outage"]
        finally:
            await bridge.http.aclose()
            assert bridge.process.stop() == 0, bridge.process.log()[-3000:]
