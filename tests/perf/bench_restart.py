"""What a replica's outbound dedupe state costs when it (re)starts: load time, readiness, memory.

    .venv/bin/python -m tests.perf.bench_restart --ids 0 100000 1000000
    .venv/bin/python -m tests.perf.bench_restart --ids 0 1000000 --partitions 4 --others 3 \
        --bridge-root /tmp/scaleout-base .          # A/B: the tree before, this tree

For each source tree and each N: fresh topics, the idempotency log filled with N request ids
(a start and an answer each, written straight in the log's own record format, as the bridge
writes them, in batches of ``--batch`` ids), ``--others`` plain consumers holding their share
of the request topic's ``--partitions`` partitions in the bridge's group, then the real
``python -m bridge run`` started (pinned like ``bench_bridge``). Printed per run:

* ``load s``: how long the replica read its dedupe state. The bridge's own figure (the
  ``twilio_bridge_idempotency_load_seconds`` metric) where it has one; for a tree without it,
  the time between its two start-up log lines around the read (webhook dedupe loaded, outbound
  dedupe loaded), less the same interval of that tree's N = 0 run.
* ``ready s``: from the process's start to ``/readyz`` 200. On Tansu this includes the group
  join, which Tansu holds for half the session timeout (3 s here), so ``join s`` (start to the
  consumer's ``assigned`` line) is printed too.
* ``RSS MB``: resident memory once ready and idle, and ``+MB`` above the same tree's N = 0 run;
  ``peak MB`` is the high-water mark (``VmHWM``).
* ``dups``: ``--probes`` ids of the log resent on a partition the bridge owns, under keys other
  than the ones they were first sent with; each must come back as a duplicate (the first reply
  again) with no call at the mock.

Figures are printed, never asserted; other load on the machine shows up as noise (the load
average is printed before and after each tree).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.outbound.idempotency import records
from bridge.tooling.local.tansu import TansuBroker, create_topics, free_port
from tests.perf.bench_bridge import (
    ROOT,
    SESSION_TIMEOUT_MS,
    BenchBridge,
    Pinning,
    System,
    _root,
    _setting,
    cpu_model,
    load_average,
    mock_stats,
    peak_rss_kb,
    stop_process,
    systems,
)
from tests.support.fast_twilio import spawn
from tests.support.harness import Topics, forward_id

LINE = re.compile(r'^\{"time":"([^"]+)Z",[^\n]*"message":"([^"]*)"', re.MULTILINE)
LOAD_METRIC = "twilio_bridge_idempotency_load_seconds"
_DIGEST = struct.Struct(">Q")
_ANSWER = struct.Struct(">QI")


def digest(request_id: str) -> int:
    """The log's id digest (``bridge.outbound.idempotency.index.digest``, frozen here so that
    a tree before or after a change is filled alike)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")


def first_reply(request_id: str, n: int) -> bytes:
    """A reply as the bridge publishes one for a CreateMessage (~700 bytes)."""
    sid = f"SM{n:032x}"
    return orjson.dumps(
        {
            "id": request_id,
            "status": "ok",
            "http_status": 201,
            "api": "api.v2010",
            "operation": "CreateMessage",
            "method": "POST",
            "path": "/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json",
            "body": {
                "sid": sid,
                "account_sid": "AC00000000000000000000000000000000",
                "status": "queued",
                "to": "+15005550006",
                "from": "+15005550001",
                "body": f"Your code is {n % 1_000_000:06d}",
                "num_segments": "1",
                "direction": "outbound-api",
                "date_created": "Thu, 24 Nov 2026 10:00:00 +0000",
                "uri": f"/2010-04-01/Accounts/AC{'0' * 32}/Messages/{sid}.json",
            },
            "content_type": "application/json",
            "headers": {},
            "pages": 1,
            "next_page_uri": None,
            "attempts": 1,
            "duration_ms": 12.5,
            "wait_ms": 0.0,
            "metadata": None,
            "error": None,
            "warnings": [],
        }
    )


# --- filling the log --------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One event-loop turn's worth of requests of one request partition."""

    partition: int
    ids: list[str]
    first: int  # n of the first id


def batches(tag: str, n: int, partitions: int, size: int) -> Iterator[Batch]:
    """``n`` ids spread evenly over the request partitions, ``size`` to a batch."""
    made = 0
    turn = 0
    while made < n:
        count = min(size, n - made)
        yield Batch(turn % partitions, [f"{tag}-{made + i}" for i in range(count)], made)
        made += count
        turn += 1


Record = tuple[str, int, bytes, bytes, Any]  # topic, partition, key, value, headers


def legacy_records(batch: Batch, log_partitions: int) -> list[Record]:
    """The records of the single-topic layout for a batch: one ``starts`` and one
    ``answers`` record in the outcome topic, each under a random key (so a random partition)."""
    starts = b"".join(_DIGEST.pack(digest(i)) for i in batch.ids)
    answers = b"".join(
        _ANSWER.pack(digest(i), len(r)) + r
        for n, i in enumerate(batch.ids)
        if (r := first_reply(i, batch.first + n))
    )
    rnd = os.urandom(8)
    where = int.from_bytes(rnd[:2], "big") % log_partitions
    return [
        ("outcomes", where, b"\0starts/" + rnd, starts, [("state", b"starts")]),
        (
            "outcomes",
            (where + 1) % log_partitions,
            b"\0answers/" + rnd,
            answers,
            [("state", b"answers")],
        ),
    ]


async def fill(
    bootstrap: str, layout: str, topics: dict[str, str], n: int, partitions: int, size: int
) -> list[Batch]:
    """Write ``n`` ids' starts and answers in ``layout``; the batches, for probes."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    written: list[Batch] = []
    try:
        pending: list[asyncio.Future[Any]] = []
        answers_next: dict[int, int] = {}
        for batch in batches("filled", n, partitions, size):
            written.append(batch)
            made = (
                legacy_records(batch, partitions)
                if layout == "legacy"
                else partitioned_records(batch, answers_next)
            )
            for topic, part, key, value, headers in made:
                pending.append(
                    await producer.send(
                        topics[topic], value, key=key, partition=part, headers=headers
                    )
                )
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return written


def partitioned_records(batch: Batch, answers_next: dict[int, int]) -> list[Record]:
    """The records this tree writes for a batch (``bridge.outbound.idempotency.records``):
    a ``starts`` record in the starts topic's partition of the request partition, saying where
    its answers begin, and the ``answers`` record in that partition of the answers topic."""
    part = batch.partition
    starts = b"".join(records.DIGEST.pack(digest(i)) for i in batch.ids)
    answers = b"".join(
        records.ANSWER.pack(digest(i), len(r)) + r
        for n, i in enumerate(batch.ids)
        if (r := first_reply(i, batch.first + n))
    )
    begin = answers_next.get(part, 0)
    answers_next[part] = begin + 1  # a fresh topic: one offset a record
    answered = [(records.STATE, records.ANSWERS)]
    return [
        (
            "outcomes",
            part,
            records.batch_key(records.STARTS),
            starts,
            records.starts_headers(begin),
        ),
        ("answers", part, records.batch_key(records.ANSWERS), answers, answered),
    ]


def layout_of(root: Path) -> str:
    """Which record layout the bridge in ``root`` reads and writes: ``partitioned`` where the
    tree has the log's record module, else the single-topic ``legacy`` one."""
    return "partitioned" if (root / "bridge/outbound/idempotency/records.py").exists() else "legacy"


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Result:
    system: str
    ids: int
    load_s: float = float("nan")
    load_source: str = ""
    join_s: float = float("nan")
    ready_s: float = float("nan")
    rss_kb: int = 0
    peak_kb: int = 0
    owned: list[int] = field(default_factory=list)
    dups: str = "-"
    lines: dict[str, float] = field(default_factory=dict)  # first time of each log line kind
    problem: str = ""


def log_times(path: Path) -> dict[str, float]:
    """When each start-up line of interest first appeared in the bridge's log."""
    text = path.read_text(errors="replace") if path.exists() else ""
    found: dict[str, float] = {}
    for match in LINE.finditer(text):
        when = datetime.fromisoformat(match.group(1) + "+00:00").timestamp()
        message = match.group(2)
        for kind, prefix in (
            ("webhook dedupe", "dedupe: "),
            ("outbound dedupe", "idempotency: "),
            ("assigned", "assigned "),
        ):
            if message.startswith(prefix):
                found.setdefault(kind, when)
    return found


def vm(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


async def metric(port: int, name: str) -> float | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class Others:
    """Plain consumers in the bridge's group that hold the partitions it is not to own."""

    def __init__(self, bootstrap: str, topics: Topics, count: int) -> None:
        self.consumers = [
            AIOKafkaConsumer(
                topics.requests,
                bootstrap_servers=bootstrap,
                group_id=topics.group,
                enable_auto_commit=False,
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=1000,
            )
            for _ in range(count)
        ]
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.gather(*(c.start() for c in self.consumers))
        self.tasks = [asyncio.create_task(self._poll(c)) for c in self.consumers]
        deadline = time.monotonic() + 60
        while not all(c.assignment() for c in self.consumers):
            if time.monotonic() > deadline:
                raise RuntimeError("the other members never got partitions")
            await asyncio.sleep(0.1)

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            await consumer.getmany(timeout_ms=200)  # records here are not the bridge's

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in self.consumers))


@dataclass
class Bench:
    broker: TansuBroker
    workdir: Path
    pinning: Pinning
    mock: str
    partitions: int
    others: int
    batch: int
    probes: int

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    async def run(self, name: str, system: System, n: int) -> Result:
        result = Result(name, n)
        topics = Topics.fresh()
        await topics.create(self.bootstrap, self.partitions)
        layout = layout_of(system.root)
        log_topics = {"outcomes": f"outcomes-{topics.group}", "answers": f"answers-{topics.group}"}
        for topic in log_topics.values():
            await create_topics(self.bootstrap, [topic], partitions=self.partitions)
        started = time.monotonic()
        written = await fill(self.bootstrap, layout, log_topics, n, self.partitions, self.batch)
        print(f"  filled {n:,} ids ({layout}) in {time.monotonic() - started:.1f} s", flush=True)
        others = Others(self.bootstrap, topics, self.others)
        await others.start()
        port = free_port()
        env = self.env(log_topics, port, system)
        log_path = self.workdir / f"{topics.group}-{name}.log"
        BenchBridge.pinning = self.pinning
        BenchBridge.root = system.root
        bridge = BenchBridge(self.bootstrap, self.mock, topics, log_path, env, http_port=port)
        spawned = time.time()
        bridge.start()
        assert bridge.process is not None
        pid = bridge.process.pid
        try:
            await bridge.wait_ready(600)
            result.ready_s = time.time() - spawned
            result.lines = log_times(log_path)
            result.join_s = result.lines.get("assigned", float("nan")) - spawned
            result.owned = owned_partitions(log_path.read_text(errors="replace"), topics.requests)
            own = await metric(port, LOAD_METRIC)
            if own is not None:
                result.load_s, result.load_source = own, "metric"
            elif "outbound dedupe" in result.lines and "webhook dedupe" in result.lines:
                result.load_s = result.lines["outbound dedupe"] - result.lines["webhook dedupe"]
                result.load_source = "log lines"
            await asyncio.sleep(2)
            result.rss_kb, result.peak_kb = vm(pid, "VmRSS"), peak_rss_kb(pid)
            if n and result.owned:
                result.dups = await self.probe(topics, written, result.owned[0])
        except (AssertionError, RuntimeError) as exc:
            result.problem = str(exc)[-300:]
        finally:
            code = stop_process(bridge.process)
            await others.stop()
        if code != 0 and not result.problem:
            result.problem = f"exit code {code}; see {log_path}"
        return result

    def env(self, log_topics: dict[str, str], port: int, system: System) -> dict[str, str]:
        """The bridge's settings: the log's topics, this bench's session timeout."""
        return {
            "BRIDGE_LOG_LEVEL": "INFO",
            "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "BRIDGE_DEDUPE__TOPIC": log_topics["outcomes"],
            # Left out by BenchBridge for a tree that has no answers topic (it would refuse it).
            "BRIDGE_DEDUPE__ANSWERS_TOPIC": log_topics["answers"],
            "BRIDGE_DEDUPE__PARTITIONS": str(self.partitions),
            "BRIDGE_HTTP__PORT": str(port),
            **system.env,
        }

    async def probe(self, topics: Topics, written: list[Batch], owned: int) -> str:
        """Resend ``probes`` ids of the log on partition ``owned`` under new keys: each must be
        answered from the log, without a call at the mock."""
        await mock_stats(self.mock, reset=True)
        # Spread over the log: ids first sent on every partition, old and recent.
        step = max(1, len(written) // self.probes)
        chosen = [b.ids[0] for b in written[::step]][: self.probes]
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            for rid in chosen:
                value = orjson.dumps(
                    {
                        "id": rid,
                        "mode": "basic",
                        "operation": "CreateMessage",
                        "body": {"To": "+15005550006", "From": "+15005550001", "Body": "again"},
                        "request_headers": ["I-Request-Id"],
                    }
                )
                key = b"resent-" + rid.encode()
                await producer.send_and_wait(
                    topics.requests,
                    value,
                    key=key,
                    partition=owned,
                    headers=forward_id(rid.encode()),
                )
        finally:
            await producer.stop()
        replies = await collect_ids(self.bootstrap, topics.replies, set(chosen), 60)
        calls = (await mock_stats(self.mock))["by_request_id"]
        duplicates = sum(
            1 for r in replies.values() if any("duplicate request id" in w for w in r["warnings"])
        )
        called = sum(calls.get(rid, 0) for rid in chosen)
        return f"{duplicates}/{len(chosen)} dup, {called} calls"


def owned_partitions(log: str, topic: str) -> list[int]:
    found = re.findall(r'"message":"assigned \[([^\]]*)\]', log)
    if not found:
        return []
    return sorted(
        int(p.rsplit("/", 1)[1]) for p in re.findall(r"'([^']+)'", found[-1]) if p.startswith(topic)
    )


async def collect_ids(
    bootstrap: str, topic: str, want: set[str], within_s: float
) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + within_s
        while set(found) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    reply = orjson.loads(r.value)
                    found.setdefault(reply["id"], reply)
    finally:
        await consumer.stop()
    return found


def row(r: Result, idle: Result | None) -> str:
    above = (r.rss_kb - idle.rss_kb) / 1024 if idle is not None else float("nan")
    text = (
        f"{r.system:<14} {r.ids:>9,} {r.load_s:>7.2f} {r.join_s:>6.1f} {r.ready_s:>7.1f}"
        f" {r.rss_kb / 1024:>7.1f} {above:>+7.1f} {r.peak_kb / 1024:>7.1f}"
        f"  {str(r.owned):<10} {r.dups:<20} {r.load_source}"
    )
    return text + (f"  PROBLEM: {r.problem}" if r.problem else "")


HEADER = (
    f"{'system':<14} {'ids':>9} {'load s':>7} {'join s':>6} {'ready s':>7} {'RSS MB':>7}"
    f" {'+MB':>7} {'peak MB':>7}  {'owned':<10} {'dups':<20} load from"
)


async def main_async(ns: argparse.Namespace) -> None:
    pinning = Pinning.choose(ns.pin)
    if pinning.others is not None:
        os.sched_setaffinity(0, {pinning.others})
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {load_average()}; "
        f"{pinning.describe()}; request topic of {ns.partitions} partitions, {ns.others} other "
        f"members in the group; batches of {ns.batch} ids; figures, never asserted",
        flush=True,
    )
    roots = systems(ns.bridge_root or [(ROOT, {})], [], dict(ns.bridge_env or []))
    for name, spec in roots.items():
        print(f"{name}: the bridge in {spec.root} ({layout_of(spec.root)} layout)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    proc, mock_port = spawn("--latency-ms", "0")
    results: list[Result] = []
    try:
        async with TansuBroker(log_dir=workdir) as broker:
            bench = Bench(
                broker,
                workdir,
                pinning,
                f"http://127.0.0.1:{mock_port}",
                ns.partitions,
                ns.others,
                ns.batch,
                ns.probes,
            )
            print(HEADER, flush=True)
            for _ in range(ns.repeat):
                for n in ns.ids:
                    for name, spec in roots.items():
                        result = await bench.run(name, spec, n)
                        results.append(result)
                        idle = next(
                            (
                                x
                                for x in results
                                if x.system == name and x.ids == 0 and not x.problem
                            ),
                            None,
                        )
                        print(row(result, idle), flush=True)
    finally:
        stop_process(proc)
    print(f"load average {load_average()}; logs in {workdir}")


def main(argv: list[str] | None = None) -> None:
    # The other members' "Heartbeat failed ... rebalancing" warnings are expected here.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description="Restart cost of a replica's outbound dedupe state")
    p.add_argument("--ids", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    p.add_argument("--partitions", type=int, default=4, help="request topic partitions (4)")
    p.add_argument("--others", type=int, default=3, help="other group members (3)")
    p.add_argument("--batch", type=int, default=50, help="ids per starts/answers record (50)")
    p.add_argument("--probes", type=int, default=20, help="ids resent under new keys (20)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--bridge-root", type=_root, nargs="+")
    p.add_argument("--bridge-env", type=_setting, nargs="+")
    ns = p.parse_args(argv)
    asyncio.run(main_async(ns))


if __name__ == "__main__":
    main()
