"""``twilio-bridge replay`` on Tansu, after an outage: Twilio refuses every POST with 503, the
requests land on the error topic, Twilio recovers, and the replay gets each one an ok reply;
a dry run sends nothing and a second run replays nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from bridge.tooling.local.tansu import TansuBroker
from tests.support.harness import BridgeProcess, Topics, collect, committed, produce

REQUESTS = 20


def envelope(n: int) -> tuple[bytes, bytes]:
    document = {
        "id": f"outage-{n}",
        "mode": "basic",
        "operation": "CreateMessage",
        "body": {"To": "+14155550100", "From": "+14155550101", "Body": f"order {n} shipped"},
    }
    return f"customer-{n % 4}".encode(), json.dumps(document).encode()


async def records_in(bootstrap: str, topic: str, expected: int) -> int:
    """How many records ``topic`` holds, read to ``expected`` and a second beyond for extras
    (Tansu's ListOffsets can answer one short, so they are counted, not asked for)."""
    return len(await collect(bootstrap, topic, expected, 30, settle_s=1.0))


async def replay(bridge: BridgeProcess, *args: str) -> str:
    """``twilio-bridge replay ARGS`` with the bridge's Kafka settings; its standard output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "replay",
        *args,
        env=bridge.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode() + err.decode()
    return out.decode()


async def test_replay_after_an_outage(
    tansu: TansuBroker, mock: Callable[..., str], tmp_path: Path
) -> None:
    bootstrap = tansu.bootstrap_servers
    base_url = mock("--post-status", "503")
    topics = Topics.fresh()
    await topics.create(bootstrap, partitions=2)
    bridge = BridgeProcess(bootstrap, base_url, topics, tmp_path / "bridge.log").start()
    group = f"{topics.group}.replay"
    try:
        await bridge.wait_ready()
        # The outage: every request fails, and a payload that is no envelope fails too.
        await produce(bootstrap, topics.requests, [envelope(n) for n in range(REQUESTS)])
        await produce(bootstrap, topics.requests, [(b"junk", b'["not an envelope"]')])
        failed = await collect(bootstrap, topics.errors, REQUESTS + 1)
        assert len(failed) == REQUESTS + 1, bridge.log()[-3000:]
        statuses = sorted(str(r.value["error"]["http_status"]) for r in failed)
        assert statuses == ["503"] * REQUESTS + ["None"]

        # A dry run lists them and counts them by kind, sending and committing nothing.
        dry = await replay(bridge, "--dry-run", "--new-ids")
        assert "would replay 20 (twilio 20)" in dry
        assert "skipped      1 (not retryable 1)" in dry
        assert f"outage-3~replay-1 (twilio) -> {topics.requests}" in dry
        # Asked for, the payload that was no envelope is still never sent: counted as skipped.
        invalid = await replay(bridge, "--dry-run", "--kind", "validation")
        assert "would replay 0" in invalid
        assert "(other kind 20, raw payload, not an envelope 1)" in invalid
        assert await records_in(bootstrap, topics.requests, REQUESTS + 1) == REQUESTS + 1
        assert await committed(bootstrap, group, topics.errors, 2) == [-1, -1]

        # Twilio recovers; the replay sends every request again under a new id.
        async with httpx.AsyncClient() as client:
            await client.post(f"{base_url}/__config?post_status=0")
        done = await replay(bridge, "--new-ids")
        assert "read         21" in done
        assert "replayed     20 (twilio 20)" in done
        replies = await collect(bootstrap, topics.replies, 2 * REQUESTS)
        replayed = {r.value["id"]: r.value for r in replies if "~replay-" in r.value["id"]}
        assert set(replayed) == {f"outage-{n}~replay-1" for n in range(REQUESTS)}
        assert {r["status"] for r in replayed.values()} == {"ok"}, bridge.log()[-3000:]
        # Each kept its key, so its order among the customer's requests.
        keys = {r.value["id"]: r.key for r in replies}
        assert keys["outage-5~replay-1"] == b"customer-1"
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{base_url}/__stats")).json()
        assert stats["by_method"]["POST"] == 2 * REQUESTS

        # The replay kept its place: a second run finds nothing new.
        again = await replay(bridge, "--new-ids")
        assert "read         0" in again and "replayed     0" in again
        assert await records_in(bootstrap, topics.requests, 2 * REQUESTS + 1) == 2 * REQUESTS + 1
    finally:
        assert bridge.stop() == 0
