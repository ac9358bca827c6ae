"""``twilio-bridge demo``: the whole outbound path on this machine, nothing to configure.

Starts an embedded Kafka-protocol broker (Tansu) and a Twilio mock (Prism serving Twilio's
official OpenAPI spec), runs the bridge in-process, sends the operations of the SAP Twilio
adapter guide plus two broken envelopes, prints each request and its reply, then a signed
inbound SMS (published as a CloudEvent) and an incoming call answered with the TwiML of a
responder on Kafka, and stops.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bridge.app.service import Bridge
from bridge.config import (
    Credential,
    HttpSettings,
    KafkaSettings,
    Settings,
    TwilioSettings,
    TwimlSettings,
)
from bridge.inbound.webhooks.signature import sign
from bridge.observability.logs import configure_logging
from bridge.tooling.local.tansu import TansuBroker, create_topics
from bridge.tooling.local.twilio_mock import PrismMock
from bridge.twilio.encoding import FORM

__all__ = ["SAMPLES", "demo"]

ACCOUNT = "AC" + "0" * 32
HEX = "0123456789abcdef0123456789abcdef"

SAMPLES: list[dict[str, Any]] = [
    {
        "id": "demo-send-sms",
        "mode": "basic",
        "operation": "CreateMessage",
        "body": {
            "From": "+14155552671",
            "To": "+919876543210",
            "Body": "Your order has shipped",
            "MediaUrl": ["https://demo.twilio.com/owl.png"],
        },
        "metadata": {"order": "ORD-78456"},
    },
    {
        "id": "demo-send-sms-advanced",
        "mode": "advanced",
        "method": "POST",
        "path": f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
        "body": "From=%2B14155552671&To=%2B919876543210&Body=Hi",
    },
    {
        "id": "demo-list-calls-to",
        "mode": "basic",
        "operation": "ListCall",
        "query": {"To": "+919876543210", "PageSize": 20},
    },
    {
        "id": "demo-get-recording",
        "mode": "basic",
        "operation": "FetchRecording",
        "params": {"Sid": "RE" + HEX},
    },
    {
        "id": "demo-get-media",
        "mode": "basic",
        "operation": "FetchMedia",
        "params": {"MessageSid": "MM" + HEX, "Sid": "ME" + HEX},
    },
    {
        "id": "demo-add-participant",
        "mode": "basic",
        "operation": "CreateParticipant",
        "params": {"ConferenceSid": "CF" + HEX},
        "body": {"From": "+14155552671", "To": "+919876543210", "EarlyMedia": True},
    },
    {
        "id": "demo-list-call-events",
        "mode": "basic",
        "operation": "ListCallEvent",
        "params": {"CallSid": "CA" + HEX},
    },
    {"id": "demo-balance", "mode": "basic", "operation": "FetchBalance"},
    {"id": "demo-typo", "mode": "basic", "operation": "CreateMesage", "body": {"To": "+1"}},
    {"id": "demo-missing-to", "mode": "basic", "operation": "CreateMessage", "body": {}},
]
JUNK = b"this is not JSON"
TOPICS = (
    "twilio.requests",
    "twilio.replies",
    "twilio.errors",
    "twilio.events.messages",
    "twilio.events.voice",
)
DEMO_TOKEN = "demo-auth-token"
INBOUND_SMS = {
    "AccountSid": ACCOUNT,
    "MessageSid": "SM" + "d" * 32,
    "From": "+14155550100",
    "To": "+14155552671",
    "Body": "Where is my order?",
    "NumMedia": "0",
}
INCOMING_CALL = {
    "AccountSid": ACCOUNT,
    "CallSid": "CA" + "d" * 32,
    "From": "+14155550100",
    "To": "+14155552671",
    "CallStatus": "ringing",
    "Direction": "inbound",
}


def _show(title: str, document: Any) -> None:
    print(f"\n── {title}")
    print(json.dumps(document, indent=2, ensure_ascii=False)[:1500])


def _reply_summary(reply: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "status", "http_status", "operation", "method", "path", "attempts", "error")
    summary = {k: reply[k] for k in keep if reply.get(k) is not None}
    body = reply.get("body")
    if isinstance(body, dict):
        summary["body"] = {k: body[k] for k in list(body)[:6]}
    if reply.get("warnings"):
        summary["warnings"] = reply["warnings"]
    return summary


async def _collect(consumer: AIOKafkaConsumer, want: int, deadline_s: float) -> list[Any]:
    found: list[Any] = []
    deadline = time.monotonic() + deadline_s
    while len(found) < want and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        found += [json.loads(r.value) for records in batch.values() for r in records]
    return found


async def _inbound(bootstrap: str, http_url: str) -> bool:
    """Send a signed inbound-SMS webhook as Twilio would and show the CloudEvent on Kafka."""
    url = f"{http_url}/webhooks/twilio/messages"
    headers = {
        "content-type": FORM,
        "x-twilio-signature": sign(url, list(INBOUND_SMS.items()), DEMO_TOKEN),
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, content=urlencode(INBOUND_SMS), headers=headers)
        forged = await http.post(
            url, content=urlencode({**INBOUND_SMS, "Body": "x"}), headers=headers
        )
    _show(f"webhook POST {url} (signed)", INBOUND_SMS)
    _show("answer to Twilio", f"{answer.status_code} {answer.text}")
    _show("the same webhook with its Body changed", f"{forged.status_code} {forged.text}")
    events = AIOKafkaConsumer(
        "twilio.events.messages", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await events.start()
    try:
        batch = await events.getmany(timeout_ms=5000)
    finally:
        await events.stop()
    records = [r for rs in batch.values() for r in rs]
    for record in records:
        headers_text = {k: v.decode() for k, v in record.headers}
        _show(
            "CloudEvent on twilio.events.messages",
            {
                "key": record.key.decode() if record.key else None,
                "headers": headers_text,
                "value": json.loads(record.value),
            },
        )
    return answer.status_code == 200 and forged.status_code == 403 and len(records) == 1


async def _answer_calls(bootstrap: str, seen: list[dict[str, str]]) -> None:
    """The demo's answering service: greets each awaited call by its number, as README's
    responder does; ``seen`` gets the headers of each event it read."""
    consumer = AIOKafkaConsumer(
        "twilio.events.voice",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await asyncio.gather(consumer.start(), producer.start())
    try:
        async for event in consumer:
            seen.append({k: v.decode() for k, v in event.headers})
            ce = {k[3:]: v.decode() for k, v in event.headers if k.startswith("ce_")}
            if "twimlreplyto" not in ce:
                continue
            caller = escape(json.loads(event.value)["From"])
            twiml = f"<Response><Say>Hello! You are calling from {caller}.</Say></Response>"
            await producer.send_and_wait(
                ce["twimlreplyto"],
                twiml.encode(),
                key=ce["id"].encode(),
                headers=[("content-type", b"application/xml")],
            )
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


async def _incoming_call(bootstrap: str, http_url: str) -> bool:
    """A signed "A call comes in" webhook, answered with the TwiML of ``_answer_calls``."""
    url = f"{http_url}/webhooks/twilio/voice"
    headers = {
        "content-type": FORM,
        "x-twilio-signature": sign(url, list(INCOMING_CALL.items()), DEMO_TOKEN),
    }
    seen: list[dict[str, str]] = []
    responder = asyncio.create_task(_answer_calls(bootstrap, seen))
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            started = time.monotonic()
            answer = await http.post(url, content=urlencode(INCOMING_CALL), headers=headers)
            took_ms = (time.monotonic() - started) * 1000
    finally:
        responder.cancel()
        await asyncio.gather(responder, return_exceptions=True)
    _show(f"webhook POST {url} (an incoming call, signed)", INCOMING_CALL)
    for headers in seen:
        _show(
            "the CloudEvent's headers, as the responder on twilio.events.voice read them", headers
        )
    _show(
        f"answer to Twilio after {took_ms:.0f} ms: the responder's TwiML, read from twilio.twiml",
        f"{answer.status_code} {answer.text}",
    )
    return answer.status_code == 200 and "<Say>Hello! You are calling" in answer.text


async def _metrics(http_url: str) -> bool:
    """Show what ``/metrics`` counted during the demo; True when it parses."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{http_url}/metrics")).text
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        _show("/metrics does not parse", str(exc))
        return False
    counted = {
        f"{s.name}{{{','.join(f'{k}={v}' for k, v in s.labels.items())}}}": s.value
        for family in families
        if family.type == "counter"
        for s in family.samples
        if s.name.endswith("_total") and s.value
    }
    _show(f"/metrics: {len(families)} metric families; the counters that moved", counted)
    return True


async def demo(*, verbose: bool = False) -> int:
    """Run the demo; returns the process exit code."""
    configure_logging("INFO" if verbose else "WARNING", "text")
    print("twilio-bridge demo: starting an embedded Kafka broker (Tansu)…")
    async with TansuBroker() as broker:
        print("starting the Twilio mock (Prism with Twilio's official OpenAPI spec;")
        print("  the first run installs it with npm into the cache, about a minute)…")
        try:
            mock_cm = PrismMock(["twilio_api_v2010.json"])
            mock = await mock_cm.__aenter__()
        except RuntimeError as exc:
            print(f"cannot start the Twilio mock: {exc}", file=sys.stderr)
            return 1
        try:
            return await _exchange(broker.bootstrap_servers, mock.base_url)
        finally:
            await mock_cm.__aexit__(None, None, None)


def _settings(bootstrap: str, base_url: str) -> Settings:
    """The bridge's settings for the demo: the local broker and mock, calls answered from Kafka."""
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            idempotent_producer=False,
            group_id="demo",
            # Tansu holds a new group's first join for half the session timeout.
            session_timeout_ms=6000,
        ),
        twilio=TwilioSettings(base_url=base_url),
        http=HttpSettings(host="127.0.0.1", port=0, drain_delay_s=0),
        credentials={"default": Credential(account_sid=ACCOUNT, auth_token=DEMO_TOKEN, poll=True)},
        twiml=TwimlSettings(families=["voice"]),
    )


async def _exchange(bootstrap: str, base_url: str) -> int:
    await create_topics(bootstrap, TOPICS)
    bridge = Bridge(_settings(bootstrap, base_url))
    await bridge.start()
    serving = asyncio.create_task(bridge.serve())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    replies = AIOKafkaConsumer(
        "twilio.replies", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    errors = AIOKafkaConsumer(
        "twilio.errors", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await asyncio.gather(producer.start(), replies.start(), errors.start())
    try:
        print(f"bridge running; sending {len(SAMPLES)} envelopes and one junk payload")
        for sample in SAMPLES:
            await producer.send_and_wait(
                "twilio.requests", json.dumps(sample).encode(), key=sample["id"].encode()
            )
        await producer.send_and_wait("twilio.requests", JUNK, key=b"junk")
        got = {r["id"]: r for r in await _collect(replies, len(SAMPLES), 60)}
        for sample in SAMPLES:
            _show(f"request {sample['id']}", sample)
            reply = got.get(sample["id"])
            _show("reply", _reply_summary(reply) if reply else "(no reply within 60 s)")
        error_records = await _collect(errors, 3, 10)
        junk = [e for e in error_records if e.get("raw")]
        _show("error topic: the junk payload", junk[0] if junk else "(missing)")
        ok = sum(1 for r in got.values() if r["status"] == "ok")
        print(f"\n{len(got)}/{len(SAMPLES)} replies ({ok} ok), {len(error_records)} error records")
        http_url = f"http://127.0.0.1:{bridge.http.port}"
        event = await _inbound(bootstrap, http_url)
        call = await _incoming_call(bootstrap, http_url)
        metrics = await _metrics(http_url)
        done = len(got) == len(SAMPLES) and junk and event and call and metrics
        return 0 if done else 1
    finally:
        bridge.stopping.set()
        await serving
        await asyncio.gather(producer.stop(), replies.stop(), errors.stop())
