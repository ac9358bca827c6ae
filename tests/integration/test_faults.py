"""Faults and duplicates: the real bridge process, Tansu, and a mock that counts POSTs.

Each envelope forwards its id as ``I-Request-Id``, which ``fast_twilio`` counts, so a second
call to Twilio for the same request would show as a count of 2.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from bridge.tooling.local.tansu import TansuBroker
from tests.support.harness import (
    BridgeProcess,
    Topics,
    collect,
    counted_post,
    forward_id,
    produce,
)


async def _calls(base_url: str) -> Counter[str]:
    async with httpx.AsyncClient() as http:
        return Counter((await http.get(f"{base_url}/__stats")).json()["by_request_id"])


async def test_a_resent_request_is_answered_with_the_first_reply_even_after_a_restart(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    bootstrap = tansu.bootstrap_servers
    base_url = mock()
    topics = Topics.fresh()
    await topics.create(bootstrap)
    items = [counted_post(n, "dup") for n in range(5)]
    replies: list[Any] = []
    for run in range(2):  # the second process knows only what Kafka tells it
        bridge = BridgeProcess(bootstrap, base_url, topics, tmp_path / f"{run}.log").start()
        try:
            await produce(bootstrap, topics.requests, items, forward_id)
            replies = await collect(bootstrap, topics.replies, 5 * (run + 1), 60)
        finally:
            assert bridge.stop() == 0, bridge.log()[-3000:]
    calls, by_id = await _calls(base_url), _by_id(replies)
    print(f"replies per id: {Counter(len(v) for v in by_id.values())}, calls: {calls}")
    assert set(calls.values()) == {1} and len(calls) == 5
    for first, again in by_id.values():
        assert again["body"] == first["body"] and again["status"] == "ok"
        assert again["warnings"][-1].startswith("duplicate request id")


def _owned(log: str, topic: str) -> set[int]:
    """The request partitions a bridge was given last, from its ``assigned [...]`` line."""
    lines = re.findall(r'"message":"assigned \[([^\]]*)\]', log)
    return (
        {int(tp.rsplit("/", 1)[1]) for tp in re.findall(r"'([^']+)'", lines[-1])}
        if lines
        else set()
    )


async def test_ids_resent_under_other_keys_after_a_rebalance_are_not_sent_again(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    """A client resends ids under new Kafka keys, so on other partitions, after a second
    replica took half of them: each replica owns the outcomes of its own partitions only, and
    must still find those of the other's."""
    bootstrap = tansu.bootstrap_servers
    total, partitions = 200, 4
    base_url = mock()
    topics = Topics.fresh()
    await topics.create(bootstrap, partitions)
    env = {"BRIDGE_DEDUPE__PARTITIONS": str(partitions)}
    first = BridgeProcess(bootstrap, base_url, topics, tmp_path / "first.log", env).start()
    second = BridgeProcess(bootstrap, base_url, topics, tmp_path / "second.log", env)
    try:
        items = [counted_post(n, "moved") for n in range(total)]
        firsts = [(n % partitions, item) for n, item in enumerate(items)]
        await produce_to(bootstrap, topics.requests, firsts)
        await collect(bootstrap, topics.replies, total, 60)
        second.start()
        deadline = time.monotonic() + 60
        while not (_owned(first.log(), topics.requests) and _owned(second.log(), topics.requests)):
            assert time.monotonic() < deadline, second.log()[-3000:]
            await asyncio.sleep(0.2)
        await first.wait_ready()
        await second.wait_ready()
        on_second = _owned(second.log(), topics.requests)
        on_first = set(range(partitions)) - on_second
        await produce_to(bootstrap, topics.requests, _moved(items, on_first, on_second))
        replies = await collect(bootstrap, topics.replies, 2 * total, 60, settle_s=1)
    finally:
        assert second.stop() == 0, second.log()[-3000:]
        assert first.stop() == 0, first.log()[-3000:]
    calls, by_id = await _calls(base_url), _by_id(replies)
    duplicate_calls = sum(c - 1 for c in calls.values())
    again = [r[1] for r in by_id.values() if len(r) > 1]
    answered = sum(1 for r in again if r["warnings"][-1:] and "duplicate" in r["warnings"][-1])
    print(
        f"sent={total} resent under other keys={total} on partitions {sorted(on_first)} / "
        f"{sorted(on_second)}; replied={len(by_id)} lost={total - len(by_id)} "
        f"answered from the log={answered} calls at the mock={sum(calls.values())} "
        f"duplicate POSTs={duplicate_calls}"
    )
    assert len(by_id) == total and duplicate_calls == 0 and len(calls) == total
    assert answered == total
    for first_reply, resent in (r[:2] for r in by_id.values()):
        assert resent["body"] == first_reply["body"] and resent["status"] == "ok"


def _by_id(replies: list[Any]) -> dict[str, list[Any]]:
    """The replies' values, by request id, in the order they came."""
    by_id: dict[str, list[Any]] = {}
    for reply in replies:
        by_id.setdefault(reply.value["id"], []).append(reply.value)
    return by_id


def _moved(
    items: list[tuple[bytes, bytes]], on_first: set[int], on_second: set[int]
) -> list[tuple[int, tuple[bytes, bytes]]]:
    """Each item (first sent on partition n modulo the partitions) again, under a new key, on a
    partition of the other replica than the one that owns its first partition now."""
    moved, partitions = [], len(on_first | on_second)
    for n, (key, value) in enumerate(items):
        others = sorted(on_first if n % partitions in on_second else on_second)
        moved.append((others[n % len(others)], (b"resent-" + key, value)))
    return moved


async def produce_to(
    bootstrap: str, topic: str, items: list[tuple[int, tuple[bytes, bytes]]]
) -> None:
    """Publish each (key, value) to the partition given with it, forwarding its id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, (key, value) in items:
            request_id = key.removeprefix(b"resent-")
            await producer.send(
                topic, value, key=key, partition=partition, headers=forward_id(request_id)
            )
        await producer.flush()
    finally:
        await producer.stop()


async def test_sigkill_three_times_under_load_never_sends_a_post_twice(
    tansu: Any, mock: Any, tmp_path: Path
) -> None:
    bootstrap = tansu.bootstrap_servers
    total = 600
    base_url = mock("--latency-ms", "50")
    topics = Topics.fresh()
    await topics.create(bootstrap, 2)
    env = {"BRIDGE_PROCESSING__MAX_IN_FLIGHT": "64"}
    await produce(
        bootstrap, topics.requests, [counted_post(n, "kill") for n in range(total)], forward_id
    )
    rng = random.Random(7)
    kills = []
    for run in range(3):
        bridge = BridgeProcess(bootstrap, base_url, topics, tmp_path / f"{run}.log", env).start()
        # Kill at a random point once the bridge is working: after 2-12 % more replies.
        done = len(await collect(bootstrap, topics.replies, total, 1))
        target = done + rng.randint(total // 50, total // 8)
        deadline = time.monotonic() + 60
        while len(await collect(bootstrap, topics.replies, target, 1)) < target:
            assert time.monotonic() < deadline, bridge.log()[-3000:]
        bridge.signal(signal.SIGKILL)
        bridge.wait()
        kills.append(target)
        await asyncio.sleep(0.1)
    last = BridgeProcess(bootstrap, base_url, topics, tmp_path / "last.log", env).start()
    replies: list[Any] = []
    try:
        deadline = time.monotonic() + 120
        while len({r.value["id"] for r in replies}) < total and time.monotonic() < deadline:
            replies = await collect(bootstrap, topics.replies, 10**6, 2)
    finally:
        assert last.stop() == 0, last.log()[-3000:]
    replies = await collect(bootstrap, topics.replies, len(replies), 10, settle_s=2)
    counts = Counter(r.value["id"] for r in replies)
    calls = await _calls(base_url)
    kinds = Counter(
        (r.value["error"] or {}).get("kind", "ok") if r.value["status"] == "error" else "ok"
        for r in replies
    )
    ok_ids = {r.value["id"] for r in replies if r.value["status"] == "ok"}
    lost = total - len(counts)
    duplicate_calls = sum(c - 1 for c in calls.values())
    print(
        f"sent={total} kills after {kills} replies; replied={len(counts)} lost={lost} "
        f"replies={len(replies)} by kind {dict(kinds)} calls at the mock={sum(calls.values())} "
        f"duplicate POSTs={duplicate_calls}"
    )
    assert lost == 0, last.log()[-3000:]
    assert duplicate_calls == 0
    assert set(kinds) <= {"ok", "unknown_outcome"}
    # An ok reply means Twilio was called exactly once for that id.
    assert all(calls[i] == 1 for i in ok_ids)


async def test_a_broker_suspended_for_10_s_under_load_loses_nothing_and_recovers(
    mock: Any, tmp_path: Path
) -> None:
    total = 1500
    base_url = mock("--latency-ms", "20")
    async with TansuBroker(log_dir=tmp_path) as broker:
        bootstrap = broker.bootstrap_servers
        topics = Topics.fresh()
        await topics.create(bootstrap, 2)
        await produce(
            bootstrap, topics.requests, [counted_post(n, "stop") for n in range(total)], forward_id
        )
        bridge = BridgeProcess(bootstrap, base_url, topics, tmp_path / "bridge.log").start()
        try:
            before = len(await collect(bootstrap, topics.replies, 300, 60))
            broker.suspend()
            await asyncio.sleep(10)
            alive_during_outage = bridge.process is not None and bridge.process.poll() is None
            broker.resume()
            resumed = time.monotonic()
            replies = await collect(bootstrap, topics.replies, total, 120, settle_s=2)
            recovered_s = time.monotonic() - resumed
        finally:
            assert bridge.stop() == 0, bridge.log()[-3000:]
    counts = Counter(r.value["id"] for r in replies)
    calls = await _calls(base_url)
    lost = total - len(counts)
    duplicate_calls = sum(c - 1 for c in calls.values())
    print(
        f"sent={total} replied before the outage={before} replied={len(counts)} lost={lost} "
        f"duplicate replies={sum(c - 1 for c in counts.values())} "
        f"duplicate POSTs={duplicate_calls}; all replies {recovered_s:.1f} s after resuming"
    )
    assert alive_during_outage
    assert lost == 0 and duplicate_calls == 0, bridge.log()[-3000:]
    assert {r.value["status"] for r in replies} == {"ok"}
