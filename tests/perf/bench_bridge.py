"""End-to-end throughput of the real bridge process, next to the consumer most people write first.

    /tmp/venv/bin/python -m tests.perf.bench_bridge              # default scenarios, ~2 min
    /tmp/venv/bin/python -m tests.perf.bench_bridge --envelopes 5000 --latency-ms 100 \
        --partitions 4 --in-flight 256                           # one scenario of your own

One Tansu broker serves every run, and one tests/perf/fast_mock.py process per mock latency
stands in for Twilio (separate processes, so their CPU is not the bridge's). Each run gets a
fresh request topic with P partitions, pre-loaded with N envelopes (``CreateMessage`` with
To/From/Body, or ``--mode advanced`` POSTs to ``/2010-04-01/Accounts/AC…/Messages.json``),
each with a key of its own, and then starts the consumer under test as a child process:

* **bridge**: ``python -m bridge run`` with the integration harness's settings (``BridgeProcess``),
  ``BRIDGE_TWILIO__BASE_URL`` = the mock, ``BRIDGE_PROCESSING__MAX_IN_FLIGHT`` = K, as many
  calls in flight per credential (``BRIDGE_RATE_LIMIT__MAX_CONCURRENT`` = K; the mock has no
  account concurrency limit, so ``ACCOUNT_CONCURRENCY`` = 0) and the
  bridge's defaults otherwise (256 connections, 1 s commit interval), but for a 6 s session
  timeout: Tansu holds a new group's first join for half of it (23 s at the 45 s default).
* **baseline**: this file with ``--baseline-worker``: a plain sequential aiokafka consumer that,
  per record, does one httpx POST (default transport) to the same mock, ``send_and_wait``s a
  reply and commits. Same P, fewer envelopes so it finishes in time (by default 2,000 at 0 ms
  and 100 at 100 ms, where it makes about 1/latency per second; the N column says how many).
  Its rate is flat over a run, so the ratio does not depend on N.

**What is measured.** The clock starts when the consumer joined its group (the millisecond
timestamp of its ``assigned`` log line) and stops at the Kafka timestamp of the last reply (set
by its producer when it sent it); a concurrent consumer of the reply topic watches for every
id. So interpreter start-up, imports, catalog load and the group join are left out (shown as
``start s``), while the ramp-up on the backlog and the first mock latency period are in: the
first reply's timestamp would leave that period out and flatter a run that is one latency long.
``env/s`` = N ÷ that window. CPU is the child's utime + stime from ``/proc/<pid>/stat``
between the join and the last reply, per 1,000 envelopes (= ms per envelope); ``CPU%`` is that
CPU over the window (100 % = one core: the bridge runs one event loop). Peak RSS is ``VmHWM``
from ``/proc/<pid>/status``. The broker's and mock's CPU (and this process's, mostly the reply
watcher) over the same window show what else the machine was busy with. Every reply is counted
by its ``id`` header (lost, duplicated) and by status; the mock's request count is printed too.
Figures are printed, never asserted; other load on the machine shows up as noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from bridge.local.tansu import TansuBroker, free_port
from tests.integration.harness import ACCOUNT, AUTH_TOKEN, BridgeProcess, Topics, produce
from tests.perf.fast_mock import spawn

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"  # the bridge's (bridge/cli.py)
JOINED = re.compile(r'^\{"time":"([^"]+)Z",[^\n]*"message":"assigned ', re.MULTILINE)
TICK = os.sysconf("SC_CLK_TCK")
# Tansu holds a new group's first JoinGroup for half the session timeout (23 s at the bridge's
# 45 s default), so both consumers get Kafka's minimum: start-up is not measured anyway.
SESSION_TIMEOUT_MS = 6000


@dataclass(frozen=True)
class Scenario:
    envelopes: int
    latency_ms: float
    partitions: int
    in_flight: int
    baseline_envelopes: int  # 0: no baseline run

    @property
    def name(self) -> str:
        return f"{self.latency_ms:g}ms P={self.partitions} K={self.in_flight}"


@dataclass
class Replies:
    """What the reply watcher saw, by id header."""

    want: set[str]
    counts: Counter[str] = field(default_factory=Counter)
    values: list[bytes] = field(default_factory=list)
    seen: int = 0  # distinct wanted ids
    first_ms: int = 0
    last_ms: int = 0
    progress_at: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, value: bytes, headers: Any, timestamp_ms: int) -> None:
        rid = next((v.decode() for k, v in headers if k == "id"), "")
        self.counts[rid] += 1
        self.values.append(value)
        if rid in self.want and self.counts[rid] == 1:
            self.seen += 1
            self.first_ms = min(self.first_ms or timestamp_ms, timestamp_ms)
            self.last_ms = max(self.last_ms, timestamp_ms)
            self.progress_at = time.monotonic()
            if self.seen == len(self.want):
                self.done.set()

    def by_status(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for value in self.values:
            try:
                reply = orjson.loads(value)
            except orjson.JSONDecodeError:
                out["not JSON"] += 1
                continue
            if reply.get("status") == "ok":
                out[f"ok {reply.get('http_status')}"] += 1
            else:
                error = reply.get("error") or {}
                out[f"error {error.get('kind')} {reply.get('http_status') or ''}".rstrip()] += 1
        return out


@dataclass
class Result:
    system: str
    envelopes: int
    startup_s: float = float("nan")
    window_s: float = float("nan")
    first_reply_s: float = float("nan")
    cpu_s: float = float("nan")
    rss_kb: int = 0
    broker_cpu_s: float = float("nan")
    mock_cpu_s: float = float("nan")
    bench_cpu_s: float = float("nan")
    mock_requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    problem: str = ""

    @property
    def rate(self) -> float:
        return self.envelopes / self.window_s if self.window_s > 0 else float("nan")

    def per_1k(self, cpu: float) -> float:
        return cpu / self.envelopes * 1000


# --- /proc ------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if it is still there after 30 s; returns the exit code."""
    proc.terminate()
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def joined_at(log_path: Path) -> float | None:
    """Wall-clock time of the first ``assigned`` log line, or None before there is one."""
    match = JOINED.search(log_path.read_text(errors="replace")) if log_path.exists() else None
    if match is None:
        return None
    return datetime.fromisoformat(match.group(1) + "+00:00").timestamp()


# --- envelopes, mock, reply watcher -----------------------------------------------------------


def envelope(request_id: str, n: int, mode: str) -> bytes:
    body = {"To": "+15005550006", "From": "+15005550001", "Body": f"Your code is {n:06d}"}
    if mode == "basic":
        doc: dict[str, Any] = {"id": request_id, "mode": "basic", "operation": "CreateMessage"}
        doc["body"] = body
    else:
        doc = {"id": request_id, "mode": "advanced", "method": "POST", "path": MESSAGES}
        doc["body"] = urlencode(body)
    return json.dumps(doc).encode()


async def mock_stats(base: str, reset: bool = False) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as client:
        if reset:
            await client.post("/__reset")
        stats: dict[str, Any] = (await client.get("/__stats")).json()
        return stats


async def watch(bootstrap: str, topic: str, replies: Replies, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    replies.add(r.value, r.headers, r.timestamp)
    finally:
        await consumer.stop()


# --- one run ----------------------------------------------------------------------------------


class BenchBridge(BridgeProcess):
    """The harness's bridge process without the settings it tunes for tests (Prism's pool size,
    a fast commit interval): the benchmark measures the bridge's own defaults."""

    TEST_ONLY = ("BRIDGE_TWILIO__MAX_CONNECTIONS", "BRIDGE_KAFKA__COMMIT_INTERVAL_S")

    def env(self) -> dict[str, str]:
        env = super().env()
        for name in self.TEST_ONLY:
            env.pop(name, None)
        env.update(self.extra_env)
        return env


@dataclass
class Bench:
    broker: TansuBroker
    mocks: dict[float, str]  # latency ms -> base URL
    workdir: Path
    mode: str
    stall_s: float

    def launch(self, system: str, sc: Scenario, topics: Topics) -> subprocess.Popen[bytes]:
        bootstrap, base = self.broker.bootstrap_servers, self.mocks[sc.latency_ms]
        log_path = self.workdir / f"{topics.group}.log"
        if system == "bridge":
            extra = {
                "BRIDGE_PROCESSING__MAX_IN_FLIGHT": str(sc.in_flight),
                # The mock has no account limit: as for an account whose limit was raised.
                "BRIDGE_RATE_LIMIT__MAX_CONCURRENT": str(sc.in_flight),
                "BRIDGE_RATE_LIMIT__ACCOUNT_CONCURRENCY": "0",
                "BRIDGE_HTTP__PORT": str(free_port()),
                "BRIDGE_LOG_LEVEL": "INFO",  # for the "assigned" line
                "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            }
            bridge = BenchBridge(bootstrap, base, topics, log_path, extra_env=extra).start()
            assert bridge.process is not None
            return bridge.process
        args = [sys.executable, "-m", "tests.perf.bench_bridge", "--baseline-worker"]
        args += [bootstrap, topics.requests, topics.replies, topics.group, base]
        with log_path.open("ab") as log:
            return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    async def run(self, system: str, sc: Scenario) -> Result:
        n = sc.envelopes if system == "bridge" else sc.baseline_envelopes
        bootstrap, base = self.broker.bootstrap_servers, self.mocks[sc.latency_ms]
        topics = Topics.fresh()
        await topics.create(bootstrap, sc.partitions)
        ids = [f"{topics.group}-{i:06d}" for i in range(n)]
        items = ((f"key-{i}".encode(), envelope(rid, i, self.mode)) for i, rid in enumerate(ids))
        await produce(bootstrap, topics.requests, items)
        await mock_stats(base, reset=True)
        replies, stop = Replies(set(ids)), asyncio.Event()
        watcher = asyncio.create_task(watch(bootstrap, topics.replies, replies, stop))
        result = Result(system, n)
        log_path = self.workdir / f"{topics.group}.log"
        spawned = time.time()
        proc = self.launch(system, sc, topics)
        try:
            await self._measure(proc, log_path, base, replies, result)
            result.startup_s -= spawned
            await asyncio.sleep(0.5)  # late duplicates
        finally:
            stop.set()
            await watcher
            code = stop_process(proc)
        if system == "bridge" and code != 0 and not result.problem:
            result.problem = f"exit code {code} after SIGTERM; see {log_path}"
        result.statuses = replies.by_status()
        result.lost = n - replies.seen
        result.duplicated = sum(c - 1 for rid, c in replies.counts.items() if rid in replies.want)
        result.unexpected = sum(c for rid, c in replies.counts.items() if rid not in replies.want)
        result.mock_requests = (await mock_stats(base))["total"]
        return result

    async def _measure(
        self,
        proc: subprocess.Popen[bytes],
        log_path: Path,
        mock: str,
        replies: Replies,
        result: Result,
    ) -> None:
        """Fill ``result`` with the window from group join to the last reply."""
        joined = None
        while joined is None:
            if proc.poll() is not None:
                result.problem = f"exited {proc.returncode} before joining; see {log_path}"
                return
            await asyncio.sleep(0.01)
            joined = joined_at(log_path)
        cpu0, broker0 = proc_cpu(proc.pid), proc_cpu(self.broker.pid)
        bench0, mock0 = time.process_time(), (await mock_stats(mock))
        result.startup_s = joined
        while not replies.done.is_set():
            if proc.poll() is not None:
                result.problem = f"exited {proc.returncode}; see {log_path}"
                return
            if time.monotonic() - replies.progress_at > self.stall_s:
                result.problem = f"no new reply for {self.stall_s:g} s; see {log_path}"
                break
            try:
                await asyncio.wait_for(replies.done.wait(), 0.2)
            except TimeoutError:
                pass
        result.cpu_s = proc_cpu(proc.pid) - cpu0
        result.rss_kb = peak_rss_kb(proc.pid)
        result.broker_cpu_s = proc_cpu(self.broker.pid) - broker0
        result.bench_cpu_s = time.process_time() - bench0
        result.mock_cpu_s = (await mock_stats(mock))["cpu_seconds"]
        result.mock_cpu_s -= mock0["cpu_seconds"]
        if replies.seen:
            result.window_s = replies.last_ms / 1000 - joined
            result.first_reply_s = replies.first_ms / 1000 - joined


# --- the baseline consumer --------------------------------------------------------------------


class _LogAssigned(ConsumerRebalanceListener):  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logging.getLogger("baseline").info("assigned %s", sorted(tp.partition for tp in assigned))


async def baseline_worker(
    bootstrap: str, requests: str, replies: str, group: str, base_url: str
) -> None:
    """What most people write first: one record at a time, POST, reply, commit."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
    )
    consumer.subscribe([requests], listener=_LogAssigned())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    client = httpx.AsyncClient(base_url=base_url, auth=(ACCOUNT, AUTH_TOKEN), timeout=30)
    await consumer.start()
    await producer.start()
    try:
        async for msg in consumer:
            request = json.loads(msg.value)
            reply: dict[str, Any] = {"id": request["id"], "error": None}
            try:
                if request["mode"] == "basic":
                    response = await client.post(MESSAGES, data=request["body"])
                else:
                    form = {"content-type": "application/x-www-form-urlencoded"}
                    response = await client.post(
                        request["path"], content=request["body"], headers=form
                    )
                ok = response.status_code < 400
                reply |= {"status": "ok" if ok else "error", "http_status": response.status_code}
                reply["body"] = response.json()
                if not ok:
                    reply["error"] = {"kind": "twilio"}
            except httpx.HTTPError as exc:
                reply |= {"status": "error", "error": {"kind": type(exc).__name__}}
            headers = [("id", reply["id"].encode()), ("status", reply["status"].encode())]
            await producer.send_and_wait(
                replies, json.dumps(reply).encode(), key=msg.key, headers=headers
            )
            await consumer.commit()
    finally:
        await client.aclose()
        await producer.stop()
        await consumer.stop()


# --- the benchmark ----------------------------------------------------------------------------

HEADER = (
    f"{'scenario':<18} {'system':<8} {'N':>6} {'start s':>7} {'run s':>6} {'env/s':>7}"
    f" {'vs base':>7} {'of max':>6} {'1st ms':>6} {'CPU s/1k':>8} {'CPU%':>5} {'RSS MB':>6}"
    f" {'broker':>6} {'mock':>5} {'bench':>5}  {'lost':>4} {'dup':>3} {'mock req':>8}  replies"
)


def row(sc: Scenario, r: Result, base: Result | None) -> str:
    if math.isnan(r.window_s):  # no reply at all
        return f"{sc.name:<18} {r.system:<8} {r.envelopes:>6} FAILED: {r.problem}"
    ratio = f"{r.rate / base.rate:>6.1f}x" if base and base.rate > 0 else f"{'-':>7}"
    limit = sc.in_flight if r.system == "bridge" else 1  # the baseline has one call in flight
    best = f"{r.rate / (limit / sc.latency_ms * 1000):>6.0%}" if sc.latency_ms else f"{'-':>6}"
    replies = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
    text = (
        f"{sc.name:<18} {r.system:<8} {r.envelopes:>6} {r.startup_s:>7.2f} {r.window_s:>6.2f}"
        f" {r.rate:>7.0f} {ratio} {best} {r.first_reply_s * 1000:>6.0f}"
        f" {r.per_1k(r.cpu_s):>8.3f} {r.cpu_s / r.window_s:>5.0%} {r.rss_kb / 1024:>6.0f}"
        f" {r.per_1k(r.broker_cpu_s):>6.3f} {r.per_1k(r.mock_cpu_s):>5.3f}"
        f" {r.per_1k(r.bench_cpu_s):>5.3f}  {r.lost:>4} {r.duplicated:>3} {r.mock_requests:>8}"
        f"  {replies}"
    )
    if r.unexpected:
        text += f"; {r.unexpected} replies with unknown ids"
    return text + (f"  [{r.problem}]" if r.problem else "")


def default_scenarios() -> Iterator[Scenario]:
    yield Scenario(20_000, 0, 1, 256, 2_000)
    yield Scenario(20_000, 0, 4, 256, 2_000)
    yield Scenario(20_000, 100, 1, 256, 100)


async def bench(ns: argparse.Namespace, scenarios: list[Scenario]) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}, {os.cpu_count()} CPUs, mode {ns.mode}; figures, never asserted")
    started = time.monotonic()
    mocks: dict[float, str] = {}
    procs: list[subprocess.Popen[str]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    try:
        async with TansuBroker(log_dir=workdir) as broker:
            b = Bench(broker, mocks, workdir, ns.mode, ns.stall_s)
            print(HEADER, flush=True)
            for sc in scenarios:
                if sc.latency_ms not in mocks:
                    proc, port = spawn("--latency-ms", str(sc.latency_ms))
                    procs.append(proc)
                    mocks[sc.latency_ms] = f"http://127.0.0.1:{port}"
                base = await b.run("baseline", sc) if sc.baseline_envelopes else None
                result = await b.run("bridge", sc)
                print(row(sc, result, base), flush=True)
                if base is not None:
                    print(row(sc, base, None), flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    took = time.monotonic() - started
    print(f"load average {load}; {took:.0f} s in all; logs in {workdir}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="End-to-end bridge throughput benchmark")
    p.add_argument("--envelopes", type=int, help="N (default 20000)")
    p.add_argument("--latency-ms", type=float, help="mock latency (default 0)")
    p.add_argument("--partitions", type=int, help="P (default 1)")
    p.add_argument("--in-flight", type=int, help="K (default 256)")
    p.add_argument(
        "--baseline-envelopes",
        type=int,
        help="defaults: 2000 and 100 (100 ms) in the default scenarios; N, or 200 at latency > 0"
        " for one scenario of your own",
    )
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--mode", choices=["basic", "advanced"], default="basic")
    p.add_argument("--stall-s", type=float, default=30, help="give up after no reply this long")
    p.add_argument("--baseline-worker", nargs=5, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.baseline_worker:
        logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
        logging.getLogger("baseline").setLevel(logging.INFO)  # the "assigned" line only
        asyncio.run(baseline_worker(*ns.baseline_worker))
        return
    custom = (ns.envelopes, ns.latency_ms, ns.partitions, ns.in_flight)
    if any(x is not None for x in custom):
        n, latency = ns.envelopes or 20_000, ns.latency_ms or 0.0
        base_n = ns.baseline_envelopes or (min(n, 200) if latency else n)
        sc = Scenario(n, latency, ns.partitions or 1, ns.in_flight or 256, base_n)
        scenarios = [sc]
    else:
        scenarios = list(default_scenarios())
        if ns.baseline_envelopes:
            scenarios = [replace(s, baseline_envelopes=ns.baseline_envelopes) for s in scenarios]
    if ns.no_baseline:
        scenarios = [replace(s, baseline_envelopes=0) for s in scenarios]
    asyncio.run(bench(ns, scenarios))


if __name__ == "__main__":
    main()
