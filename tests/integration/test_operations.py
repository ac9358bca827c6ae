"""Operating the real bridge process: metrics, readiness, logs, and SIGTERM under load.

Against Tansu and ``fast_twilio``; the mock counts every POST by the ``I-Request-Id`` the bridge
forwards, so a shutdown that sent anything twice would show.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.support.harness import (
    BridgeProcess,
    Topics,
    collect,
    committed,
    counted_post,
    forward_id,
    produce,
)

# Every metric family the operations issue asks for, by its exposition name.
FAMILIES = {
    "twilio_bridge_build_info": "gauge",  # the text format has no info type
    "twilio_bridge_requests": "counter",
    "twilio_bridge_errors": "counter",
    "twilio_bridge_requests_in_flight": "gauge",
    "twilio_bridge_twilio_requests_in_flight": "gauge",
    "twilio_bridge_twilio_requests": "counter",
    "twilio_bridge_twilio_request_duration_seconds": "histogram",
    "twilio_bridge_retries": "counter",
    "twilio_bridge_rate_limit_waits": "counter",
    "twilio_bridge_rate_limit_wait_seconds": "counter",
    "twilio_bridge_reply_publish_duration_seconds": "histogram",
    "twilio_bridge_consumer_lag": "gauge",
    "twilio_bridge_broker_reachable": "gauge",
    "twilio_bridge_event_loop_tasks": "gauge",
    "twilio_bridge_webhooks": "counter",
    "twilio_bridge_webhook_signature_failures": "counter",
    "twilio_bridge_events_published": "counter",
    "twilio_bridge_poller_runs": "counter",
    "twilio_bridge_poller_items": "counter",
}
# What must never be a label value: SIDs, phone numbers, request ids, URLs with ids.
HIGH_CARDINALITY = re.compile(r"^(AC|SM|MM|CA)[0-9a-f]{32}$|^\+?\d{7,}$|^post-|/")


async def _start(
    tansu: Any, base_url: str, tmp_path: Path, topics: Topics, **env: str
) -> BridgeProcess:
    bridge = BridgeProcess(
        tansu.bootstrap_servers, base_url, topics, tmp_path / f"{topics.group}.log", env
    ).start()
    await bridge.wait_ready(within_s=60)
    return bridge


async def test_metrics_parse_cover_every_family_and_carry_no_identifiers(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    base_url = mock("--rate-429", "0.3", "--seed", "7")
    topics = Topics.fresh()
    await topics.create(tansu.bootstrap_servers)
    bridge = await _start(
        tansu,
        base_url,
        tmp_path,
        topics,
        BRIDGE_RETRY__BASE_DELAY_S="0.01",
        BRIDGE_RATE_LIMIT__REQUESTS_PER_SECOND="200",
    )
    try:
        items = [counted_post(n) for n in range(20)] + [(b"junk", b"not json")]
        await produce(tansu.bootstrap_servers, topics.requests, items, forward_id)
        await collect(tansu.bootstrap_servers, topics.replies, 20, 60)
        url = f"{bridge.http_url}/webhooks/twilio/messages"
        params = {"AccountSid": ACCOUNT, "MessageSid": "SM" + "a" * 32, "Body": "hi"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        async with httpx.AsyncClient() as http:
            for sig in (signature, "forged"):
                await http.post(
                    url,
                    content=urlencode(params),
                    headers={
                        "content-type": "application/x-www-form-urlencoded",
                        "x-twilio-signature": sig,
                    },
                )
            # Lag is measured every 5 s once partitions are assigned.
            deadline = time.monotonic() + 15
            while True:
                text = (await http.get(f"{bridge.http_url}/metrics")).text
                if "twilio_bridge_consumer_lag{" in text or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
    finally:
        assert bridge.stop() == 0
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: families[name].type for name in FAMILIES if name in families} == FAMILIES

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[name].samples
            if s.name == name + "_total" and labels.items() <= s.labels.items()
        )

    ok = total("twilio_bridge_requests", topic=topics.requests, outcome="ok")
    failed = total("twilio_bridge_requests", topic=topics.requests, outcome="error")
    assert ok + failed == 20 and ok > 0  # a POST may run out of attempts on 429s
    assert total("twilio_bridge_requests", outcome="rejected") == 1
    assert total("twilio_bridge_errors", kind="validation") == 1
    assert total("twilio_bridge_errors") == 1 + failed
    assert total("twilio_bridge_retries", reason="rate_limited") > 0
    assert total("twilio_bridge_rate_limit_waits") > 0
    posts = total("twilio_bridge_twilio_requests", operation="CreateMessage", method="POST")
    assert posts == 20 + total("twilio_bridge_retries")
    assert total("twilio_bridge_webhooks", family="messages", outcome="published") == 1
    assert total("twilio_bridge_webhook_signature_failures", family="messages") == 1
    assert total("twilio_bridge_events_published", topic="twilio.events.messages") == 1
    lag = [s for s in families["twilio_bridge_consumer_lag"].samples]
    assert [(s.labels["topic"], s.labels["partition"], s.value) for s in lag] == [
        (topics.requests, "0", 0.0)
    ]
    labels = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert not [v for v in labels if HIGH_CARDINALITY.search(v) and v != topics.requests]
    assert AUTH_TOKEN not in text


async def test_sigterm_under_load_drops_readiness_first_and_loses_or_repeats_nothing(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    total = 600
    base_url = mock("--latency-ms", "100")
    topics = Topics.fresh()
    await topics.create(tansu.bootstrap_servers, 2)
    env = {"BRIDGE_HTTP__DRAIN_DELAY_S": "2", "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "64"}
    first = await _start(tansu, base_url, tmp_path, topics, **env)
    items = [counted_post(n) for n in range(total)]
    await produce(tansu.bootstrap_servers, topics.requests, items, forward_id)
    await collect(tansu.bootstrap_servers, topics.replies, 100, 60)
    first.signal(15)
    # Readiness turns false at once, while the process still answers (the drain delay).
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{first.http_url}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["started"] is False
    assert first.process is not None and first.process.poll() is None
    assert first.wait(30) == 0
    done_before = len(await collect(tansu.bootstrap_servers, topics.replies, total, 3))
    second = await _start(tansu, base_url, tmp_path, topics, **env)
    try:
        replies = await collect(tansu.bootstrap_servers, topics.replies, total, 90, settle_s=1)
    finally:
        assert second.stop() == 0
    async with httpx.AsyncClient() as http:
        calls = Counter((await http.get(f"{base_url}/__stats")).json()["by_request_id"])
    counts = Counter(r.value["id"] for r in replies)
    lost = total - len(counts)
    duplicate_replies = sum(c - 1 for c in counts.values())
    duplicate_calls = sum(c - 1 for c in calls.values())
    print(
        f"sent={total} replied before SIGTERM exit={done_before} replied={len(counts)} "
        f"lost={lost} duplicate replies={duplicate_replies} duplicate POSTs={duplicate_calls}"
    )
    assert 0 < done_before < total, "the SIGTERM did not land mid-run"
    assert lost == 0 and duplicate_replies == 0 and duplicate_calls == 0, second.log()[-3000:]
    assert len(calls) == total
    assert sum(await committed(tansu.bootstrap_servers, topics.group, topics.requests, 2)) == total
    # Every line the bridge wrote is one JSON object; none shows a number or a body.
    for line in (first.log() + second.log()).splitlines():
        event = json.loads(line)
        assert {"time", "level", "logger", "message"} <= event.keys()
        assert "+14155550100" not in line and "hello " not in line


async def test_a_second_signal_exits_at_once_without_committing_unfinished_work(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    base_url = mock("--latency-ms", "20000")
    topics = Topics.fresh()
    await topics.create(tansu.bootstrap_servers)
    bridge = await _start(tansu, base_url, tmp_path, topics, BRIDGE_HTTP__DRAIN_DELAY_S="0")
    await produce(tansu.bootstrap_servers, topics.requests, [counted_post(n) for n in range(5)])
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 30
        while (await http.get(f"{base_url}/__stats")).json()["total"] < 5:
            assert time.monotonic() < deadline, bridge.log()[-3000:]
            await asyncio.sleep(0.1)
    bridge.signal(15)
    await asyncio.sleep(0.5)
    started = time.monotonic()
    bridge.signal(15)
    code = bridge.wait(10)
    print(f"second signal: exit {code} after {time.monotonic() - started:.2f} s")
    assert code == 130 and time.monotonic() - started < 5
    assert await committed(tansu.bootstrap_servers, topics.group, topics.requests) == [-1]


async def test_a_broker_refusing_the_idempotent_producer_stops_start_up_naming_the_setting(
    tansu: Any, tmp_path: Path
) -> None:
    # Tansu answers InitProducerId with UnknownError, as brokers without idempotence do.
    env = {"BRIDGE_KAFKA__IDEMPOTENT_PRODUCER": "true"}
    bridge = BridgeProcess(
        tansu.bootstrap_servers, "http://127.0.0.1:9", Topics.fresh(), tmp_path / "b.log", env
    ).start()
    code = await asyncio.to_thread(bridge.wait, 30)
    log = bridge.log()
    message = next(
        json.loads(line)["message"] for line in log.splitlines() if "start-up failed" in line
    )
    print(f"\nexit {code}: {message}")
    assert code == 1, log[-3000:]
    assert message.startswith("start-up failed: UnknownError: the broker refused the idempotent")
    assert "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER=false" in message
    assert "Traceback" not in log
