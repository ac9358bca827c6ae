"""A rolling restart of two replicas under load, as Kubernetes does on a deploy: SIGTERM one,
wait for it to drain and exit, start it again, then the other; the requests keep coming.

Each request forwards its id as ``I-Request-Id``, which ``fast_mock`` counts (a second POST
would show); 50 keys carry a sequence number each, so the order per key can be checked.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.support.harness import BridgeProcess, Received, TopicReader, Topics

pytestmark = pytest.mark.long

KEYS = 50


def envelope(n: int) -> tuple[bytes, bytes, str]:
    """(key, value, id) of the n-th CreateMessage: key ``key-<n % 50>``, seq n in metadata."""
    request_id = f"roll-{n}"
    doc: dict[str, Any] = {
        "id": request_id,
        "mode": "basic",
        "operation": "CreateMessage",
        "body": {"To": "+14155550100", "From": "+14155550101", "Body": f"roll {n}"},
        "request_headers": ["I-Request-Id"],
        "metadata": {"seq": n},
    }
    return f"key-{n % KEYS}".encode(), json.dumps(doc).encode(), request_id


async def produce_paced(bootstrap: str, topic: str, total: int, rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        started, n = time.monotonic(), 0
        while n < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            for _ in range(due - n):
                key, value, request_id = envelope(n)
                headers = [("I-Request-Id", request_id.encode())]
                await producer.send(topic, value, key=key, headers=headers)
                n += 1
            await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()


def out_of_order(records: list[Received]) -> list[str]:
    """Keys whose first replies came in another order than their requests."""
    firsts: dict[bytes | None, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:
        if record.value["id"] not in seen:
            seen.add(record.value["id"])
            firsts[record.key].append(record.value["metadata"]["seq"])
    return [str(key) for key, seqs in firsts.items() if seqs != sorted(seqs)]


def later_replies(records: list[Received]) -> list[Received]:
    """Every reply after the first of its id."""
    seen: set[str] = set()
    later = []
    for record in records:
        if record.value["id"] in seen:
            later.append(record)
        seen.add(record.value["id"])
    return later


def explain(reply: dict[str, Any]) -> str:
    """Why a second reply came: redelivered, and answered from the outcome log."""
    if (reply["error"] or {}).get("kind") == "unknown_outcome":
        return "unknown outcome"  # the first process died between the POST and its answer
    if any(w.startswith("duplicate request id") for w in reply["warnings"]):
        return "the first reply again"
    return "sent again"  # never expected: Twilio would have been called twice


async def restart(replica: BridgeProcess, replies: TopicReader, more: int) -> str:
    """SIGTERM, wait for the drain and exit 0, start again, wait until ready and ``more``
    replies came meanwhile; what it took, as text."""
    began = time.monotonic()
    replica.signal(signal.SIGTERM)
    code = await asyncio.to_thread(replica.wait, 60)
    assert code == 0, replica.log()[-3000:]
    drained = time.monotonic() - began
    replica.start()
    await replica.wait_ready(60)
    target = len(replies.ids()) + more
    await replies.until(lambda r: len(r.ids()) >= target, 60)
    return f"drained and exited 0 in {drained:.1f} s, ready again {time.monotonic() - began:.1f} s"


async def test_a_rolling_restart_of_two_replicas_under_load_loses_nothing(
    tansu: Any, mock: Callable[..., str], tmp_path: Path, show: Callable[[str], None]
) -> None:
    bootstrap = tansu.bootstrap_servers
    total, rate = 2000, 150.0
    base_url = mock("--latency-ms", "50")
    topics = Topics.fresh()
    await topics.create(bootstrap, 4)
    replicas = [
        BridgeProcess(bootstrap, base_url, topics, tmp_path / f"replica-{n}.log") for n in range(2)
    ]
    steps: list[str] = []
    try:
        for replica in replicas:  # one after the other, as a rollout starts them
            replica.start()
            await replica.wait_ready(60)
        async with TopicReader(bootstrap, topics.replies) as replies:
            producing = asyncio.create_task(produce_paced(bootstrap, topics.requests, total, rate))
            await replies.until(lambda r: len(r.ids()) >= 300, 60)
            for replica in replicas:
                steps.append(await restart(replica, replies, 200))
            await producing
            await replies.until(lambda r: len(r.ids()) >= total, 120)
            await asyncio.sleep(2)  # a late second reply counts too
    finally:
        codes = [replica.stop() for replica in replicas]
    async with httpx.AsyncClient() as http:
        calls = Counter((await http.get(f"{base_url}/__stats")).json()["by_request_id"])
    counts = replies.ids()
    why = Counter(explain(r.value) for r in later_replies(replies.records))
    lost = total - len(counts)
    duplicates = sum(c - 1 for c in calls.values())
    show(
        f"sent={total} at {rate:.0f}/s replied={len(counts)} lost={lost} duplicate POSTs="
        f"{duplicates} duplicate replies={sum(c - 1 for c in counts.values())} ({dict(why)}); "
        + "; ".join(f"replica {n}: {step}" for n, step in enumerate(steps))
    )
    assert codes == [0, 0]
    assert lost == 0 and duplicates == 0
    assert not out_of_order(replies.records)
    # A duplicate reply is the first reply published again, or says the outcome is unknown.
    assert set(why) <= {"the first reply again", "unknown outcome"}, why
