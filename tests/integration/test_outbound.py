"""The outbound bridge end to end: real process, Tansu, Prism with Twilio's official spec."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.tooling.demo import SAMPLES
from tests.helpers import AUTH_TOKEN, schema_validator
from tests.support.harness import BridgeProcess, Received, Topics, collect, committed, produce

REPLY_VALIDATOR = schema_validator("reply.schema.json")
ERROR_VALIDATOR = schema_validator("error-record.schema.json")

StartBridge = Callable[..., "asyncio.Future[tuple[Topics, BridgeProcess]]"]


@pytest.fixture
async def start_bridge(tansu: Any, prism: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start bridge processes on fresh topics; every one is stopped after the test."""
    started: list[BridgeProcess] = []

    async def start(
        partitions: int = 1, topics: Topics | None = None, **env: str
    ) -> tuple[Topics, BridgeProcess]:
        if topics is None:
            topics = Topics.fresh()
            await topics.create(tansu.bootstrap_servers, partitions)
        bridge = BridgeProcess(
            tansu.bootstrap_servers,
            prism.base_url,
            topics,
            tmp_path / f"bridge-{len(started)}.log",
            extra_env=env,
        ).start()
        started.append(bridge)
        return topics, bridge

    yield start
    for bridge in started:
        bridge.stop()
        log = bridge.log()
        assert AUTH_TOKEN not in log, "a secret was logged"


def _envelope(item: dict[str, Any]) -> tuple[bytes, bytes]:
    return item["id"].encode(), json.dumps(item).encode()


def _check_reply(rec: Received, key: bytes | None = None) -> dict[str, Any]:
    """Schema-valid, id in a header, keyed like its request (by default keyed by id)."""
    REPLY_VALIDATOR.validate(rec.value)
    assert rec.headers["id"] == rec.value["id"].encode()
    assert rec.key == (key or rec.value["id"].encode())
    return dict(rec.value)


async def test_demo_operations_round_trip(start_bridge: Any, tansu: Any) -> None:
    topics, bridge = await start_bridge()
    await produce(tansu.bootstrap_servers, topics.requests, map(_envelope, SAMPLES))
    replies = await collect(tansu.bootstrap_servers, topics.replies, len(SAMPLES), 90)
    by_id = {r.value["id"]: _check_reply(r) for r in replies}
    assert set(by_id) == {s["id"] for s in SAMPLES}, bridge.log()[-3000:]
    for sample in SAMPLES:
        reply = by_id[sample["id"]]
        if sample["id"] in ("demo-typo", "demo-missing-to"):
            assert reply["status"] == "error" and reply["error"]["kind"] == "validation"
            assert reply["attempts"] == 0
        else:
            assert reply["status"] == "ok", (sample, reply)
            assert 200 <= reply["http_status"] < 300
            assert isinstance(reply["body"], dict) and reply["attempts"] == 1
    assert by_id["demo-send-sms"]["metadata"] == {"order": "ORD-78456"}
    assert by_id["demo-send-sms"]["operation"] == "CreateMessage"
    assert "CreateMessage" in by_id["demo-typo"]["error"]["message"]
    assert by_id["demo-missing-to"]["error"]["missing"] == ["To"]
    errors = await collect(tansu.bootstrap_servers, topics.errors, 2, 30)
    assert sorted(e.value["id"] for e in errors) == ["demo-missing-to", "demo-typo"]
    for error in errors:
        ERROR_VALIDATOR.validate(error.value)
        assert error.value["request"]["id"] == error.value["id"]
        assert error.value["source"]["topic"] == topics.requests


async def test_junk_lands_on_the_error_topic_and_the_partition_keeps_flowing(
    start_bridge: Any, tansu: Any
) -> None:
    good = {"id": "good-", "mode": "basic", "operation": "FetchBalance"}
    payloads: list[tuple[bytes | None, bytes | None]] = [
        (b"k", json.dumps({**good, "id": "good-1"}).encode()),
        (b"k", b"\x00\xffnot json at all"),
        (b"k", b"[1, 2, 3]"),
        (b"k", None),
        (b"k", b""),
        (b"k", b'{"id": "bad-1", "mode": "advanced", "method": "POST", "path": "https://evil"}'),
        (b"k", b'{"id": "bad-2", "mode": "basic", "operation": "CreateMessage", "x": 1}'),
        (b"k", b'{"mode": "basic"}'),
        (b"k", b"[" * 100_000),
        (b"k", json.dumps({**good, "id": "good-2"}).encode()),
    ]
    topics, bridge = await start_bridge()
    await produce(tansu.bootstrap_servers, topics.requests, payloads)
    replies = await collect(tansu.bootstrap_servers, topics.replies, 4, 60, settle_s=1)
    by_id = {r.value["id"]: _check_reply(r, b"k") for r in replies}
    assert sorted(by_id) == ["bad-1", "bad-2", "good-1", "good-2"], bridge.log()[-3000:]
    assert by_id["good-2"]["status"] == "ok"
    assert by_id["bad-1"]["error"]["invalid"] == ["path"]
    assert any("x:" in item for item in by_id["bad-2"]["error"]["invalid"])
    errors = await collect(tansu.bootstrap_servers, topics.errors, 8, 60, settle_s=1)
    assert len(errors) == 8
    for error in errors:
        ERROR_VALIDATOR.validate(error.value)
        assert error.value["error"]["kind"] == "validation"
        value = error.value
        # Only a tombstone has nothing to keep; every other payload is kept for replay.
        kept = value["raw"] is not None or value["request"] is not None
        assert kept or "tombstone" in value["error"]["message"], value
    assert sorted(e.value["source"]["offset"] for e in errors) == [1, 2, 3, 4, 5, 6, 7, 8]
    deadline = time.monotonic() + 20
    while (await committed(tansu.bootstrap_servers, topics.group, topics.requests)) != [10]:
        assert time.monotonic() < deadline, "offsets were not committed past the junk"
        await asyncio.sleep(0.2)


async def test_order_is_kept_per_key_with_many_keys_in_flight(
    start_bridge: Any, tansu: Any
) -> None:
    keys, per_key = 40, 8
    items = []
    for n in range(per_key):
        for k in range(keys):
            envelope = {
                "id": f"k{k}-{n}",
                "mode": "basic",
                "operation": "CreateMessage",
                "body": {"To": "+14155550100", "From": "+14155550101", "Body": f"{n}"},
                "metadata": {"seq": n},
            }
            items.append((f"key-{k}".encode(), json.dumps(envelope).encode()))
    topics, bridge = await start_bridge(partitions=4)
    await produce(tansu.bootstrap_servers, topics.requests, items)
    replies = await collect(tansu.bootstrap_servers, topics.replies, len(items), 120)
    assert len(replies) == len(items), bridge.log()[-3000:]
    seen: dict[bytes | None, list[int]] = defaultdict(list)
    for rec in sorted(replies, key=lambda r: (r.partition, r.offset)):
        assert rec.value["status"] == "ok"
        seen[rec.key].append(rec.value["metadata"]["seq"])
    assert all(seqs == list(range(per_key)) for seqs in seen.values()), seen


async def test_sigkill_mid_stream_then_restart_leaves_no_request_without_reply(
    start_bridge: Any, tansu: Any
) -> None:
    total = 400
    items = [
        _envelope(
            {
                "id": f"kill-{n}",
                "mode": "basic",
                "operation": "CreateMessage",
                "body": {"To": "+14155550100", "From": "+14155550101", "Body": str(n)},
            }
        )
        for n in range(total)
    ]
    topics, first = await start_bridge(partitions=2)
    await produce(tansu.bootstrap_servers, topics.requests, items)
    # Kill once some, but not all, replies are out.
    deadline = time.monotonic() + 60
    while len(await collect(tansu.bootstrap_servers, topics.replies, 40, 2)) < 40:
        assert time.monotonic() < deadline, first.log()[-3000:]
    first.signal(signal.SIGKILL)
    first.wait()
    _, second = await start_bridge(topics=topics)
    replies = await collect(tansu.bootstrap_servers, topics.replies, total, 120, settle_s=2)
    counts = Counter(r.value["id"] for r in replies)
    missing = [item[0].decode() for item in items if item[0].decode() not in counts]
    duplicated = sum(c - 1 for c in counts.values())
    print(f"sent={total} replied={len(counts)} lost={len(missing)} duplicate replies={duplicated}")
    assert not missing, second.log()[-3000:]
    assert second.stop() == 0


async def test_sigterm_finishes_in_flight_work_commits_and_exits_zero(
    start_bridge: Any, tansu: Any
) -> None:
    total = 200
    items = [
        _envelope({"id": f"term-{n}", "mode": "basic", "operation": "FetchBalance"})
        for n in range(total)
    ]
    topics, bridge = await start_bridge()
    await produce(tansu.bootstrap_servers, topics.requests, items)
    await collect(tansu.bootstrap_servers, topics.replies, 20, 60)
    assert bridge.stop() == 0
    replies = await collect(tansu.bootstrap_servers, topics.replies, total, 5, settle_s=0.5)
    done = len({r.value["id"] for r in replies})
    (offset,) = await committed(tansu.bootstrap_servers, topics.group, topics.requests)
    # Everything replied to before exit is committed, and nothing beyond it.
    assert offset == done, (offset, done)


async def test_rebalances_between_replicas_lose_nothing_and_repeat_nothing(
    start_bridge: Any, tansu: Any
) -> None:
    total, partitions = 800, 4
    # 40 keys, 20 requests each: their replies must come in order, whichever replica ran them.
    items = [
        (
            f"key-{n % 40}".encode(),
            json.dumps({"id": f"rb-{n}", "mode": "basic", "operation": "FetchBalance"}).encode(),
        )
        for n in range(total)
    ]
    topics, first = await start_bridge(partitions=partitions)
    await produce(tansu.bootstrap_servers, topics.requests, items)
    await collect(tansu.bootstrap_servers, topics.replies, 50, 60)
    # A second replica joins mid-stream (partitions move), then the first leaves (they move back).
    _, second = await start_bridge(topics=topics)
    deadline = time.monotonic() + 60
    while "assigned [" not in second.log():
        assert time.monotonic() < deadline, second.log()[-3000:]
        await asyncio.sleep(0.2)
    assert first.stop() == 0
    replies = await collect(tansu.bootstrap_servers, topics.replies, total, 120, settle_s=2)
    counts = Counter(r.value["id"] for r in replies)
    duplicated = sum(c - 1 for c in counts.values())
    by_key: dict[bytes | None, list[int]] = {}
    for r in replies:  # in reply-topic order; a key's replies share a partition
        by_key.setdefault(r.key, []).append(int(r.value["id"].removeprefix("rb-")))
    out_of_order = [k for k, ns in by_key.items() if ns != sorted(ns)]
    print(
        f"sent={total} replied={len(counts)} lost={total - len(counts)} "
        f"duplicate replies={duplicated} keys out of order={len(out_of_order)}"
    )
    assert len(counts) == total, second.log()[-3000:]
    assert len(by_key) == 40 and not out_of_order
    # Revoked partitions finished their work and committed it before moving: nothing redone.
    assert duplicated == 0
    deadline = time.monotonic() + 20
    while (
        sum(await committed(tansu.bootstrap_servers, topics.group, topics.requests, partitions))
        != total
    ):
        assert time.monotonic() < deadline, "offsets were not committed to the end"
        await asyncio.sleep(0.2)
    assert second.stop() == 0
