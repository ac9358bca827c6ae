"""The local real components themselves: Tansu through aiokafka, Prism with Twilio's spec."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bridge.tooling.local.tansu import TansuBroker, create_topics
from bridge.tooling.local.twilio_mock import PrismMock, ensure_spec
from bridge.tooling.local.twilio_spec import patch_form_arrays
from tests.helpers import ACCOUNT

AUTH = (ACCOUNT, "test-auth-token")
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
SMS = {"From": "+14155552671", "To": "+919876543210", "Body": "Your order has shipped"}


async def _consume_one(bootstrap: str, topic: str, within_s: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            records = [r for rs in batch.values() for r in rs]
            if records:
                return list(records)
        return []
    finally:
        await consumer.stop()


def _process_state(pid: int) -> str:
    """``T`` for a stopped process (from /proc/PID/stat)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def _state_becomes(pid: int, state: str, within_s: float = 2) -> bool:
    # A signal is delivered asynchronously: the state changes soon after kill(), not at once.
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if _process_state(pid) == state:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_tansu_round_trip_with_headers(tansu: TansuBroker) -> None:
    topic = f"local-{uuid.uuid4().hex[:8]}"
    await create_topics(tansu.bootstrap_servers, [topic], partitions=2)
    await create_topics(tansu.bootstrap_servers, [topic])  # already there: no error
    producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1", headers=[("id", b"req-1")])
    finally:
        await producer.stop()
    (record,) = await _consume_one(tansu.bootstrap_servers, topic)
    assert (record.key, record.value) == (b"k1", b"hello")
    assert list(record.headers) == [("id", b"req-1")]


async def test_tansu_suspend_holds_requests_until_resume(tmp_path: Path) -> None:
    broker = TansuBroker(log_dir=tmp_path).start()  # the sync API, on a broker of its own
    try:
        topic = "outage"
        await create_topics(broker.bootstrap_servers, [topic])
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            broker.suspend()
            assert await _state_becomes(broker.pid, "T")
            admin = AIOKafkaAdminClient(
                bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=500
            )
            try:
                with pytest.raises((KafkaError, TimeoutError)):
                    await admin.start()
                    await admin.list_topics()
            finally:
                await admin.close()
            sending = asyncio.ensure_future(producer.send_and_wait(topic, b"during outage"))
            done, _ = await asyncio.wait([sending], timeout=0.5)
            assert not done, "a suspended broker acknowledged a record"
            broker.resume()
            await asyncio.wait_for(sending, 20)
        finally:
            await producer.stop()
        (record,) = await _consume_one(broker.bootstrap_servers, topic)
        assert record.value == b"during outage"
    finally:
        broker.stop()
    broker.stop()  # idempotent


async def test_prism_accepts_create_message_with_repeated_media_url(prism: PrismMock) -> None:
    media = ["https://demo.twilio.com/owl.png", "https://demo.twilio.com/cat.png"]
    request = httpx.Request(
        "POST", prism.url_for("api") + MESSAGES, data={**SMS, "MediaUrl": media}
    )
    assert request.read().count(b"MediaUrl=") == 2  # Twilio's encoding: repeated keys
    async with httpx.AsyncClient(auth=AUTH) as client:
        response = await client.send(request)
        assert response.status_code == 201, response.text
        assert response.json()["sid"].startswith("SM")
    async with httpx.AsyncClient() as anonymous:
        refused = await anonymous.post(prism.url_for("api") + MESSAGES, data=SMS)
        assert refused.status_code == 401


async def test_prism_rejects_create_message_without_to(prism: PrismMock) -> None:
    body = {k: v for k, v in SMS.items() if k != "To"}
    async with httpx.AsyncClient(auth=AUTH) as client:
        response = await client.post(prism.url_for("api") + MESSAGES, data=body)
    assert response.status_code == 422
    assert "'To'" in response.text


async def test_prism_routes_domains_through_one_base_url(prism: PrismMock) -> None:
    assert {"api", "verify", "messaging", "conversations", "content", "voice"} <= set(prism.domains)
    verify = prism.base_url.format(domain="verify")
    async with httpx.AsyncClient(auth=AUTH) as client:
        created = await client.post(verify + "/v2/Services", data={"FriendlyName": "Shop"})
        assert created.status_code == 201, created.text
        assert created.json()["sid"].startswith("VA")
        # A verify path under another domain does not exist there.
        wrong = await client.post(prism.url_for("api") + "/v2/Services", data={"A": "b"})
        assert wrong.status_code == 404
    with pytest.raises(AttributeError):
        _ = prism.plain_base_url


async def test_prism_single_spec_serves_plain_and_domain_urls(tmp_path: Path) -> None:
    async with PrismMock(["twilio_api_v2010.json"], log_dir=tmp_path) as mock:
        async with httpx.AsyncClient(auth=AUTH) as client:
            for base in (mock.plain_base_url, mock.url_for("api")):
                response = await client.post(base + MESSAGES, data=SMS)
                assert response.status_code == 201, (base, response.text)
    assert mock.log_path.read_text()


def test_patch_only_adds_form_array_encodings() -> None:
    source = json.loads((ensure_spec() / "twilio_api_v2010.json").read_text())
    patched = patch_form_arrays(json.loads(json.dumps(source)))
    operation = patched["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["post"]
    form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert form["encoding"]["MediaUrl"] == {"style": "form", "explode": True}
    assert "Body" not in form["encoding"]
    for item in patched["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                for media in op.get("requestBody", {}).get("content", {}).values():
                    media.pop("encoding", None)
    assert patched == source


def test_the_demo_command_runs_end_to_end() -> None:
    """Quick start command 1, as a user runs it: every reply, the junk, the signed webhook, the
    call answered from Kafka."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "demo"], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "10/10 replies" in done.stdout
    assert "com.twilio.messaging.inbound-message.received" in done.stdout
    assert "200 <Response><Say>Hello! You are calling from +14155550100." in done.stdout
    # /metrics parsed, with every family of tests/integration/test_operations.py.
    families = re.search(r"/metrics: (\d+) metric families", done.stdout)
    assert families is not None and int(families.group(1)) >= 16, done.stdout[-3000:]
    assert "twilio_bridge_twilio_requests_total{api=api.v2010" in done.stdout
