"""A rolling upgrade, tried: an older tree's bridge and this tree's side by side in one group.

    .venv/bin/python -m tests.perf.mixed_versions /tmp/before      # the older tree's root

Against ``fast_mock`` (30 ms), on a request topic of 4 partitions: the old replica alone
answers 200 ids; a new replica joins and they answer 200 more; all 400 are resent under other
keys and partitions; then 400 more ids are sent, the old replica is killed (SIGKILL) while it
works on them and a second new replica takes its place; finally all 800 are resent again.
Printed: how each round of resends was answered (``dup``: the first reply again, or
``unknown_outcome``) and how often the mock was called per id: a second call would be a
duplicate POST. The older tree runs from its own directory (``python -m bridge`` imports the
bridge of its working directory) without the settings it does not know (``BenchBridge``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bridge.tooling.local.tansu import TansuBroker
from tests.integration.test_faults import produce_to
from tests.perf.bench_bridge import BenchBridge
from tests.support.fast_twilio import spawn
from tests.support.harness import BridgeProcess, Received, Topics, collect, counted_post

PARTITIONS = 4
ENV = {"BRIDGE_DEDUPE__PARTITIONS": str(PARTITIONS), "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "32"}


class OldBridge(BenchBridge):
    """The older tree's bridge: run from its ``root``, without the settings it would refuse."""


def kinds(replies: list[Received], tag: bytes) -> Counter[str]:
    """How each reply to a request keyed ``tag…`` answered: ok (sent), dup (the first reply
    again) or an error kind."""
    found: Counter[str] = Counter()
    for reply in (r for r in replies if (r.key or b"").startswith(tag)):
        value: dict[str, Any] = reply.value
        if value["status"] == "error":
            found[(value.get("error") or {}).get("kind", "error")] += 1
        else:
            found["dup" if any("duplicate" in w for w in value["warnings"]) else "ok"] += 1
    return found


def spread(items: list[tuple[bytes, bytes]], shift: int, tag: bytes) -> list[Any]:
    """Each item on partition (n + shift) modulo the partitions, under a key of ``tag``."""
    return [((n + shift) % PARTITIONS, (tag + k, v)) for n, (k, v) in enumerate(items)]


async def rounds(bootstrap: str, base: str, topics: Topics, workdir: Path) -> None:
    old = OldBridge(bootstrap, base, topics, workdir / "old.log", ENV).start()
    first = [counted_post(n, "first") for n in range(200)]
    await produce_to(bootstrap, topics.requests, spread(first, 0, b""))
    await collect(bootstrap, topics.replies, 200, 60)
    new = BridgeProcess(bootstrap, base, topics, workdir / "new.log", ENV).start()
    await new.wait_ready(60)
    second = [counted_post(n, "second") for n in range(200)]
    await produce_to(bootstrap, topics.requests, spread(second, 0, b""))
    await collect(bootstrap, topics.replies, 400, 60)
    await produce_to(bootstrap, topics.requests, spread(first + second, 1, b"resent-"))
    replies = await collect(bootstrap, topics.replies, 800, 90, settle_s=1)
    print(f"400 resent with old and new side by side: {dict(kinds(replies, b'resent-'))}")
    third = [counted_post(n, "third") for n in range(400)]
    await produce_to(bootstrap, topics.requests, spread(third, 0, b""))
    await asyncio.sleep(1.5)
    old.signal(signal.SIGKILL)
    old.wait()
    other = BridgeProcess(bootstrap, base, topics, workdir / "new-2.log", ENV).start()
    await other.wait_ready(90)
    replies = await collect(bootstrap, topics.replies, 1200, 120, settle_s=2)
    everything = first + second + third
    await produce_to(bootstrap, topics.requests, spread(everything, 2, b"again-"))
    more = await collect(bootstrap, topics.replies, len(replies) + 800, 120, settle_s=2)
    print(f"800 resent once the old replica was replaced: {dict(kinds(more, b'again-'))}")
    for bridge in (new, other):
        bridge.stop()


async def main_async(old_root: Path) -> None:
    OldBridge.root = old_root
    proc, port = spawn("--latency-ms", "30")
    base = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="mixed-versions-"))
    try:
        async with TansuBroker(log_dir=workdir) as broker:
            topics = Topics.fresh()
            await topics.create(broker.bootstrap_servers, PARTITIONS)
            await rounds(broker.bootstrap_servers, base, topics, workdir)
        async with httpx.AsyncClient() as http:
            calls = Counter((await http.get(f"{base}/__stats")).json()["by_request_id"])
    finally:
        proc.terminate()
        proc.wait(5)
    print(
        f"ids called {len(calls)}, calls {sum(calls.values())}, "
        f"duplicate POSTs {sum(c - 1 for c in calls.values())}; logs in {workdir}"
    )


if __name__ == "__main__":
    asyncio.run(main_async(Path(sys.argv[1]).resolve()))
