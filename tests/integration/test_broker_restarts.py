"""The broker dies and comes back: Tansu on S3 storage (moto), SIGKILLed and restarted on the
same port, under the real bridge process; and a bridge started while no broker is there.

Each envelope forwards its id as ``I-Request-Id``, which ``fast_mock`` counts, so a second
POST for one request would show. Replies are counted as they are read (``TopicReader``): Tansu
on S3 can answer ListOffsets with a stale end offset.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from twilio.request_validator import RequestValidator

from bridge.tooling.local.s3 import S3Storage
from bridge.tooling.local.tansu import TansuBroker, create_topics, free_port
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.perf.webhook_load import FORM, inbound_sms
from tests.support.harness import (
    BridgeProcess,
    TopicReader,
    Topics,
    counted_post,
    forward_id,
    produce,
)

pytestmark = pytest.mark.long

ADMIN = {"Authorization": "Bearer admin-" + uuid.uuid4().hex}
SIGNER = RequestValidator(AUTH_TOKEN)


@pytest_asyncio.fixture
async def s3(tmp_path: Path) -> AsyncIterator[S3Storage]:
    """An S3 endpoint with a bucket, for one test's broker."""
    async with S3Storage(log_dir=tmp_path) as storage:
        yield storage


def on_s3(s3: S3Storage, tmp_path: Path, port: int | None = None) -> TansuBroker:
    return TansuBroker(
        log_dir=tmp_path, storage_engine=s3.storage_engine, env=s3.environment(), port=port
    )


async def readyz_until(bridge: BridgeProcess, status: int, within_s: float) -> float:
    """Seconds until ``/readyz`` answers ``status``; AssertionError after ``within_s``."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() - started < within_s:
            try:
                if (await http.get(f"{bridge.http_url}/readyz")).status_code == status:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never {status}:\n" + bridge.log()[-3000:])


async def post_webhooks(bridge: BridgeProcess, count: int, tag: str) -> list[int]:
    """Post ``count`` signed inbound-SMS webhooks at once, each with its own idempotency token
    (the same ones again when called again with ``tag``); their statuses."""
    url = f"{bridge.http_url}/webhooks/twilio/messages"

    async def post(http: httpx.AsyncClient, n: int) -> int:
        sid = "SM" + hashlib.md5(f"{tag}-{n}".encode()).hexdigest()  # the same in a retry
        params = inbound_sms(ACCOUNT, n) | {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid}
        headers = {
            "content-type": FORM,
            "x-twilio-signature": SIGNER.compute_signature(url, params),
        }
        headers["i-twilio-idempotency-token"] = f"{tag}-{n}"
        return (await http.post(url, content=urlencode(params), headers=headers)).status_code

    async with httpx.AsyncClient(timeout=30) as http:
        return list(await asyncio.gather(*(post(http, n) for n in range(count))))


async def mock_calls(base_url: str) -> Counter[str]:
    async with httpx.AsyncClient() as http:
        return Counter((await http.get(f"{base_url}/__stats")).json()["by_request_id"])


def outcome_env(topics: Topics, prefix: str, prism_url: str) -> dict[str, str]:
    """Webhooks to ``prefix``, a quick 503, and the instances API whose instance polls Prism."""
    return {
        "BRIDGE_WEBHOOK__TOPIC_PREFIX": prefix,
        "BRIDGE_WEBHOOK__ACK_TIMEOUT_S": "2",
        "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "512",
        "BRIDGE_RATE_LIMIT__MAX_CONCURRENT": "256",
        "BRIDGE_RATE_LIMIT__ACCOUNT_CONCURRENCY": "0",
        "BRIDGE_DEDUPE__PARTITIONS": "8",
        "BRIDGE_ADMIN__ENABLED": "true",
        "BRIDGE_ADMIN__TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "BRIDGE_ADMIN__ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "BRIDGE_ADMIN__TOPIC": f"instances-{topics.group}",
        "BRIDGE_ADMIN__AUDIT_TOPIC": f"audit-{topics.group}",
        "BRIDGE_POLLER__STATE_TOPIC": f"poll-{topics.group}",
        "BRIDGE_POLLER__PARTITIONS": "2",
        "BRIDGE_POLLER__START_AT": "2000-01-01T00:00:00Z",
    }


async def add_polling_instance(bridge: BridgeProcess, prism_url: str) -> None:
    instance = {
        "name": "acme",
        "configuration": {
            "account_sid": "AC" + "ac" * 16,
            "auth_token": "acme-token-not-a-secret",
            "base_url": prism_url,
            # One poll (a watermark to find after the restart), not a poll a second competing
            # with the load for the broker's S3 writes.
            "events": {"mechanism": "polling", "refresh_interval_s": 60},
        },
    }
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"{bridge.http_url}/instances", json=instance, headers=ADMIN)
    assert answer.status_code == 201, answer.text


async def test_a_broker_crash_and_restart_under_load_loses_nothing_and_sends_nothing_twice(
    s3: S3Storage,
    mock: Callable[..., str],
    prism: Any,
    tmp_path: Path,
    show: Callable[[str], None],
) -> None:
    total = 3000
    base_url = mock("--latency-ms", "100")
    async with on_s3(s3, tmp_path) as broker:
        bootstrap = broker.bootstrap_servers
        topics = Topics.fresh()
        # On S3 storage each partition's writes are S3 requests made one after another:
        # partitions let them overlap (measured: 1 partition ~4/s, 2 ~60/s).
        await topics.create(bootstrap, 8)
        prefix = f"ev-{topics.group}."
        await create_topics(bootstrap, [prefix + "messages", prefix + "message-status"])
        env = outcome_env(topics, prefix, prism.base_url)
        bridge = BridgeProcess(bootstrap, base_url, topics, tmp_path / "bridge.log", env).start()
        try:
            await bridge.wait_ready(60)
            await add_polling_instance(bridge, prism.base_url)
            async with TopicReader(bootstrap, env["BRIDGE_POLLER__STATE_TOPIC"]) as state:
                await state.until(lambda r: len(r.records) >= 1, 60)  # acme was polled
            async with TopicReader(bootstrap, topics.replies) as replies:
                sent = [counted_post(n, "crash") for n in range(total)]
                await produce(bootstrap, topics.requests, sent, forward_id)
                await replies.until(lambda r: len(r.ids()) >= total // 4, 120)
                before = len(replies.ids())
                outage = await _crash_and_restart(broker, bridge)
                restarted = time.monotonic()
                await replies.until(lambda r: len(r.ids()) >= total, 180)
                outage += f"; all replied {time.monotonic() - restarted:.1f} s after that"
                await asyncio.sleep(2)  # replies still on their way: duplicates count too
                counts = replies.ids()
            events = TopicReader(bootstrap, prefix + "messages")
            async with events:
                await events.until(lambda r: len(r.records) >= 5, 30)
                await asyncio.sleep(1)
        finally:
            assert bridge.stop() == 0, bridge.log()[-3000:]
        await _after_the_restart(bootstrap, base_url, topics, env, prism.base_url, tmp_path)
    calls = await mock_calls(base_url)
    duplicates = sum(c - 1 for c in calls.values())
    kinds = Counter((r.value["error"] or {}).get("kind", "ok") for r in replies.records)
    lost = total - len(counts)
    show(
        f"sent={total} replied before the kill={before} replied={len(counts)} lost={lost} "
        f"duplicate POSTs={duplicates} duplicate replies={sum(c - 1 for c in counts.values())} "
        f"unknown outcomes={kinds['unknown_outcome']} replies by kind {dict(kinds)} "
        f"calls at the mock={sum(calls.values())}; {outage}"
    )
    assert lost == 0 and duplicates == 0
    assert set(kinds) <= {"ok", "unknown_outcome"}
    # Only the webhooks: the instance's poller publishes on this topic too.
    ce_ids = Counter(h for e in events.records if (h := e.headers["ce_id"]).startswith(b"outage"))
    assert sorted(ce_ids) == [f"outage-{n}".encode() for n in range(5)], ce_ids
    assert set(ce_ids.values()) == {1}


async def _crash_and_restart(broker: TansuBroker, bridge: BridgeProcess) -> str:
    """SIGKILL the broker, check readiness and webhooks during the 5 s outage, restart it on the
    same port, then Twilio's retries of the webhooks; what was measured, as text."""
    broker.crash()
    killed = time.monotonic()
    not_ready_s = await readyz_until(bridge, 503, 10)
    during = await post_webhooks(bridge, 5, "outage")
    assert during == [503] * 5, during
    await asyncio.sleep(max(0.0, 5 - (time.monotonic() - killed)))
    await broker.restart()
    ready_s = await readyz_until(bridge, 200, 30)
    retried: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # Twilio retries until it gets its 2xx
        retried = await post_webhooks(bridge, 5, "outage")
        if retried == [200] * 5:
            break
        await asyncio.sleep(0.5)
    assert retried == [200] * 5, retried
    return (
        f"/readyz 503 {not_ready_s:.1f} s after the kill, 200 {ready_s:.1f} s after the "
        f"restart; webhooks during the outage {Counter(during)}, retried {Counter(retried)}"
    )


async def _keys(bootstrap: str, topic: str, wanted: bytes) -> set[bytes | None]:
    """The keys ``topic`` holds, read until ``wanted`` is among them or 10 s passed (read and
    counted, no end offset)."""
    async with TopicReader(bootstrap, topic) as reader:
        with contextlib.suppress(AssertionError):
            await reader.until(lambda r: wanted in {x.key for x in r.records}, 10)
        return {r.key for r in reader.records}


async def _after_the_restart(
    bootstrap: str,
    base_url: str,
    topics: Topics,
    env: dict[str, str],
    prism_url: str,
    tmp_path: Path,
) -> None:
    """A new process on the restarted broker knows what the first one wrote: an id it answered
    is answered from the outcome log, the instance is there, the poller's watermark too."""
    bridge = BridgeProcess(bootstrap, base_url, topics, tmp_path / "after.log", env).start()
    try:
        await bridge.wait_ready(60)
        async with TopicReader(bootstrap, topics.replies) as replies:
            await produce(bootstrap, topics.requests, [counted_post(7, "crash")], forward_id)
            await replies.until(lambda r: r.ids()["crash-7"] >= 2, 60)
            again = [r.value for r in replies.records if r.value["id"] == "crash-7"][-1]
        async with httpx.AsyncClient(timeout=10) as http:
            instance = await http.get(f"{bridge.http_url}/instances/acme", headers=ADMIN)
        state = await _keys(bootstrap, env["BRIDGE_POLLER__STATE_TOPIC"], b"acme")
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
    assert again["warnings"][-1].startswith("duplicate request id"), again
    assert instance.status_code == 200, instance.text
    assert b"acme" in state  # the poller's watermark for the instance
    assert (await mock_calls(base_url))["crash-7"] == 1


async def test_started_with_the_broker_down_the_bridge_waits_and_recovers_by_itself(
    s3: S3Storage, mock: Callable[..., str], tmp_path: Path, show: Callable[[str], None]
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topics = Topics.fresh()
    base_url = mock("--latency-ms", "100")
    waiting = BridgeProcess(bootstrap, base_url, topics, tmp_path / "waiting.log").start()
    # A signal while it waits: exit 0, nothing to drain.
    gone = BridgeProcess(bootstrap, base_url, topics, tmp_path / "gone.log").start()
    try:
        await readyz_until(gone, 503, 30)
        started = time.monotonic()
        gone.signal(signal.SIGTERM)
        assert await asyncio.to_thread(gone.wait, 10) == 0, gone.log()[-3000:]
        waiting_exit_s = time.monotonic() - started
        await readyz_until(waiting, 503, 30)
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"{waiting.http_url}/readyz")).json()
            hook = await http.post(f"{waiting.http_url}/webhooks/twilio/messages")
        assert body["checks"]["broker_reachable"] is False and body["checks"]["started"] is False
        assert hook.status_code == 503
        await asyncio.sleep(3)  # it keeps waiting: no crash, no exit
        assert waiting.process is not None and waiting.process.poll() is None
        assert "waiting for the broker" in waiting.log()
        async with on_s3(s3, tmp_path, port) as broker:
            await topics.create(bootstrap, 8)  # S3 writes overlap across partitions
            ready_s = await readyz_until(waiting, 200, 60)
            sent = [counted_post(n, "late") for n in range(600)]
            async with TopicReader(bootstrap, topics.replies) as replies:
                await produce(bootstrap, topics.requests, sent[:300], forward_id)
                await replies.until(lambda r: len(r.ids()) >= 300, 60)
                away = await _gone_longer_than_the_session(broker, waiting)
                await produce(bootstrap, topics.requests, sent[300:], forward_id)
                await replies.until(lambda r: len(r.ids()) >= 400, 60)
                stopped = await _sigterm_with_the_broker_down(broker, waiting)
                await broker.restart()
                last = BridgeProcess(bootstrap, base_url, topics, tmp_path / "last.log").start()
                try:
                    await replies.until(lambda r: len(r.ids()) >= 600, 120)
                finally:
                    assert last.stop() == 0, last.log()[-3000:]
    finally:
        waiting.stop()
    calls = await mock_calls(base_url)
    duplicates = sum(c - 1 for c in calls.values())
    show(
        f"SIGTERM while waiting for the broker: exit 0 in {waiting_exit_s:.1f} s; ready "
        f"{ready_s:.1f} s after the broker came up; {away}; {stopped}; replied "
        f"{len(replies.ids())}/600, duplicate POSTs={duplicates}"
    )
    assert duplicates == 0


async def _gone_longer_than_the_session(broker: TansuBroker, bridge: BridgeProcess) -> str:
    """The broker away for 8 s, past the group's session timeout (6 s): the bridge stays up,
    not ready, and is ready again once the broker is back, by itself."""
    broker.crash()
    not_ready_s = await readyz_until(bridge, 503, 10)
    await asyncio.sleep(8)
    assert bridge.process is not None and bridge.process.poll() is None
    await broker.restart()
    ready_s = await readyz_until(bridge, 200, 60)
    return (
        f"broker gone 8 s: not ready {not_ready_s:.1f} s after the kill, ready again "
        f"{ready_s:.1f} s after the restart"
    )


async def _sigterm_with_the_broker_down(broker: TansuBroker, bridge: BridgeProcess) -> str:
    broker.crash()
    await readyz_until(bridge, 503, 10)
    started = time.monotonic()
    bridge.signal(signal.SIGTERM)
    code = await asyncio.to_thread(bridge.wait, 40)
    took = time.monotonic() - started
    assert code == 0, bridge.log()[-3000:]
    return f"SIGTERM with the broker down: exit {code} in {took:.1f} s"
