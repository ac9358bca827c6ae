"""Soak: the real bridge at a steady rate for a long time; are memory, descriptors and tasks flat?

    python -m tests.perf.soak --minutes 30 [--rate 100] [--webhook-rate 10] [--interval-s 60]

Starts its own Tansu broker and ``fast_mock`` (20 ms answers; 2 % answered 500/503, 2 % 429 with
``Retry-After: 0``, 2 % after 2 s), then the bridge process (the harness's settings, dedupe
windows of 5 min so that they are full after the first five minutes). For the
given time it publishes ``--rate`` request envelopes a second (four in five CreateMessage POSTs,
one in five FetchMessage GETs, 1,000 keys) and posts ``--webhook-rate`` signed inbound-SMS
webhooks a second. Every ``--interval-s`` it prints the bridge's RSS, open file descriptors,
asyncio tasks (``twilio_bridge_event_loop_tasks``), the end-to-end latency percentiles of the
replies of that interval (publish to reply read) beside the bridge's own time (the replies'
``duration_ms``, Twilio's answer included), and the CPU of the bridge and of the broker; at
the end, the slope of each per minute (least squares over the samples after ``--warmup-min``,
6 by default: the windows filling up), and the counts:
sent, replied, lost, webhooks by status. Figures are printed, never asserted here; the test
``tests/integration/test_soak.py`` runs a short form in CI and checks that nothing was lost and
that descriptors and tasks came back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
from aiokafka import AIOKafkaProducer
from twilio.request_validator import RequestValidator

from bridge.tooling.local.tansu import TansuBroker
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.perf.bench_bridge import follow, percentile, proc_cpu
from tests.perf.webhook_load import FORM, inbound_sms
from tests.support.fast_twilio import spawn
from tests.support.harness import BridgeProcess, Topics

__all__ = ["Sample", "SoakResult", "main", "soak"]

MOCK_ARGS = (
    *("--latency-ms", "20", "--error-rate", "0.02", "--rate-429", "0.02"),
    *("--retry-after", "0", "--slow-rate", "0.02", "--slow-ms", "2000"),
)
BRIDGE_ENV = {
    "BRIDGE_LOG_LEVEL": "WARNING",
    # The ids of the dedupe windows are what the bridge keeps by design (about 60 bytes each,
    # for a day by default): 5 min windows fill within the run, so what grows after that is
    # not the window.
    "BRIDGE_DEDUPE__WINDOW_S": "300",
    "BRIDGE_WEBHOOK__DEDUPE_WINDOW_S": "300",
    "BRIDGE_RETRY__BASE_DELAY_S": "0.1",
    "BRIDGE_RETRY__MAX_DELAY_S": "1",
}
KEYS = 1000


@dataclass(frozen=True)
class Sample:
    """What one interval showed."""

    minute: float
    rss_mb: float
    fds: int
    tasks: int
    replies: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    bridge_p50_ms: float  # the reply's duration_ms: the bridge's own time, Twilio's included
    bridge_p99_ms: float
    bridge_cpu: float  # share of a core over the interval
    broker_cpu: float
    webhooks: dict[int, int]

    def line(self) -> str:
        hooks = " ".join(f"{k}:{v}" for k, v in sorted(self.webhooks.items())) or "-"
        return (
            f"{self.minute:5.1f} min  rss {self.rss_mb:5.1f} MB  fds {self.fds:3d}  "
            f"tasks {self.tasks:4d}  replies {self.replies:5d}  latency p50/p95/p99 "
            f"{self.p50_ms:4.0f} / {self.p95_ms:4.0f} / {self.p99_ms:4.0f} ms (in the bridge "
            f"{self.bridge_p50_ms:4.0f} / {self.bridge_p99_ms:4.0f})  cpu bridge "
            f"{self.bridge_cpu:4.0%} broker {self.broker_cpu:4.0%}  webhooks {hooks}"
        )


@dataclass
class SoakResult:
    """Counts and samples of a whole run."""

    sent: int = 0
    replied: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    webhooks: Counter[int] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    idle_tasks_before: int = 0
    idle_tasks_after: int = 0
    idle_fds_before: int = 0
    idle_fds_after: int = 0
    warmup_min: float = 0.0  # samples up to here are left out of the slopes

    @property
    def lost(self) -> int:
        return self.sent - self.replied

    def slopes(self) -> dict[str, float]:
        """Per minute, least squares over the samples after the warm-up (at least the first)."""
        steady = [s for s in self.samples[1:] if s.minute > self.warmup_min]
        if len(steady) < 2:
            steady = self.samples[1:] if len(self.samples) > 2 else self.samples
        xs = [s.minute for s in steady]
        return {
            name: slope(xs, [float(getattr(s, name)) for s in steady])
            for name in ("rss_mb", "fds", "tasks", "p50_ms", "p99_ms")
        }

    def summary(self) -> str:
        slopes = ", ".join(f"{k} {v:+.3f}" for k, v in self.slopes().items())
        return (
            f"sent={self.sent} replied={self.replied} not replied by the end of the drain="
            f"{self.lost} "
            f"replies by outcome {dict(self.statuses)} webhooks by status "
            f"{dict(sorted(self.webhooks.items()))}\n"
            f"idle before/after load: tasks {self.idle_tasks_before} -> "
            f"{self.idle_tasks_after}, fds {self.idle_fds_before} -> {self.idle_fds_after}\n"
            f"slope per minute: {slopes}"
        )


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs; 0 with fewer than two distinct xs."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def loop_tasks(http: httpx.AsyncClient, base: str) -> int:
    text = (await http.get(f"{base}/metrics")).text
    for line in text.splitlines():
        if line.startswith("twilio_bridge_event_loop_tasks "):
            return int(float(line.split()[1]))
    raise RuntimeError("the bridge exposes no twilio_bridge_event_loop_tasks")


def envelope(n: int, sent: float) -> tuple[bytes, bytes]:
    """A POST four times in five, else a GET; the send time rides in ``metadata``."""
    key = f"key-{n % KEYS}".encode()
    doc: dict[str, Any] = {"id": f"soak-{n}", "mode": "basic", "metadata": {"sent": sent}}
    if n % 5:
        doc["operation"] = "CreateMessage"
        doc["body"] = {"To": "+14155550100", "From": "+14155550101", "Body": f"soak {n}"}
    else:
        doc["operation"] = "FetchMessage"
        doc["params"] = {"Sid": "SM" + "0" * 32}
    return key, json.dumps(doc).encode()


class Soak:
    """One run against a broker, a mock and a bridge that are already up."""

    def __init__(
        self, bootstrap: str, bridge: BridgeProcess, result: SoakResult, broker_pid: int | None
    ) -> None:
        self.bootstrap = bootstrap
        self.bridge = bridge
        self.result = result
        self.broker_pid = broker_pid
        self.interrupted = asyncio.Event()  # Ctrl-C: stop the load, drain, report
        self.latencies: list[float] = []
        self.durations: list[float] = []
        self.cpu = (0.0, 0.0, time.monotonic())
        self.hooks: Counter[int] = Counter()
        self.seen: set[str] = set()
        self.sending = True
        self.caught_up = asyncio.Event()

    async def produce(self, rate: float, until: float) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        try:
            tick, n = 0.1, 0
            started = time.monotonic()
            while (now := time.monotonic()) < until and not self.interrupted.is_set():
                due = int((now - started) * rate)
                for _ in range(due - n):
                    key, value = envelope(n, time.time())
                    await producer.send(self.bridge.topics.requests, value, key=key)
                    n += 1
                self.result.sent = n
                await asyncio.sleep(tick)
            await producer.flush()
        finally:
            await producer.stop()

    async def read_replies(self, stop: asyncio.Event) -> None:
        await follow(
            self.bootstrap,
            self.bridge.topics.replies,
            lambda record, now: self._reply(json.loads(record.value), now),
            stop,
            fetch_max_wait_ms=50,
        )

    def _reply(self, reply: dict[str, Any], now: float) -> None:
        if reply["id"] in self.seen:
            return  # a second reply after a redelivery: not expected here, not counted twice
        self.seen.add(reply["id"])
        self.result.replied += 1
        error = reply.get("error") or {}
        self.result.statuses[error.get("kind", "ok")] += 1
        self.latencies.append((now - reply["metadata"]["sent"]) * 1000)
        self.durations.append(reply["duration_ms"])
        self.check_caught_up()

    def check_caught_up(self) -> None:
        if not self.sending and self.result.replied >= self.result.sent:
            self.caught_up.set()

    async def post_webhooks(self, rate: float, until: float) -> None:
        """Post ``rate`` webhooks a second on a schedule, whatever the answers' latency."""
        url = f"{self.bridge.http_url}/webhooks/twilio/messages"
        validator = RequestValidator(AUTH_TOKEN)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            posts: set[asyncio.Task[None]] = set()
            n, started = 0, time.monotonic()
            while (now := time.monotonic()) < until and rate > 0 and not self.interrupted.is_set():
                for _ in range(int((now - started) * rate) - n):
                    params = inbound_sms(ACCOUNT, n)
                    headers = {"content-type": FORM}
                    headers["x-twilio-signature"] = validator.compute_signature(url, params)
                    post = asyncio.create_task(self._post(session, url, params, headers))
                    posts.add(post)
                    post.add_done_callback(posts.discard)
                    n += 1
                await asyncio.sleep(0.1)
            await asyncio.gather(*posts)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        params: dict[str, str],
        headers: dict[str, str],
    ) -> None:
        try:
            async with session.post(url, data=urlencode(params), headers=headers) as answer:
                await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.hooks[status] += 1
        self.result.webhooks[status] += 1

    @property
    def pid(self) -> int:
        assert self.bridge.process is not None
        return self.bridge.process.pid

    async def sample(self, http: httpx.AsyncClient, started: float) -> Sample:
        pid = self.pid
        latencies, self.latencies = self.latencies, []
        durations, self.durations = self.durations, []
        hooks, self.hooks = self.hooks, Counter()
        bridge_cpu, broker_cpu = self.cpu_shares()
        return Sample(
            minute=(time.monotonic() - started) / 60,
            rss_mb=rss_mb(pid),
            fds=open_fds(pid),
            tasks=await loop_tasks(http, self.bridge.http_url),
            replies=len(latencies),
            p50_ms=percentile(latencies, 0.50),
            p95_ms=percentile(latencies, 0.95),
            p99_ms=percentile(latencies, 0.99),
            bridge_p50_ms=percentile(durations, 0.50),
            bridge_p99_ms=percentile(durations, 0.99),
            bridge_cpu=bridge_cpu,
            broker_cpu=broker_cpu,
            webhooks=dict(hooks),
        )

    def cpu_shares(self) -> tuple[float, float]:
        """The bridge's and the broker's CPU since the last call, as shares of one core."""
        bridge = proc_cpu(self.pid)
        broker = proc_cpu(self.broker_pid) if self.broker_pid else 0.0
        last_bridge, last_broker, since = self.cpu
        now = time.monotonic()
        self.cpu = (bridge, broker, now)
        elapsed = max(now - since, 1e-9)
        return (bridge - last_bridge) / elapsed, (broker - last_broker) / elapsed

    async def idle(self, http: httpx.AsyncClient) -> tuple[int, int]:
        """(tasks, descriptors) once the bridge has had a moment without work."""
        await asyncio.sleep(2)
        return await loop_tasks(http, self.bridge.http_url), open_fds(self.pid)


async def soak(
    bootstrap: str,
    base_url: str,
    workdir: Path,
    *,
    seconds: float,
    rate: float = 100,
    webhook_rate: float = 10,
    interval_s: float = 60,
    drain_s: float = 60,
    warmup_min: float = 0.0,
    broker_pid: int | None = None,
) -> SoakResult:
    """Run the load for ``seconds`` against a fresh bridge; samples printed as they come."""
    topics = Topics.fresh()
    await topics.create(bootstrap, 4)
    bridge = BridgeProcess(
        bootstrap, base_url, topics, workdir / "bridge.log", BRIDGE_ENV, own_session=True
    )
    result = SoakResult(warmup_min=warmup_min)
    try:
        bridge.start()
        await bridge.wait_ready(60)
        run = Soak(bootstrap, bridge, result, broker_pid)
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, run.interrupted.set)
        await _run(run, seconds, rate, webhook_rate, interval_s, drain_s)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(signum)
        code = bridge.stop()
    if code != 0:
        raise RuntimeError(f"the bridge exited {code}:\n{bridge.log()[-3000:]}")
    return result


async def _run(
    run: Soak, seconds: float, rate: float, webhook_rate: float, interval_s: float, drain_s: float
) -> None:
    result = run.result
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=10) as http:
        result.idle_tasks_before, result.idle_fds_before = await run.idle(http)
        run.cpu_shares()  # from here
        started = time.monotonic()
        until = started + seconds
        reading = asyncio.create_task(run.read_replies(stop))
        load = asyncio.gather(run.produce(rate, until), run.post_webhooks(webhook_rate, until))
        while not load.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(load), max(0.0, interval_s))
            if not load.done() or not result.samples:
                result.samples.append(await run.sample(http, started))
                print(result.samples[-1].line(), flush=True)
        await load
        run.sending = False
        run.check_caught_up()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.caught_up.wait(), drain_s)
        stop.set()
        await reading
        result.idle_tasks_after, result.idle_fds_after = await run.idle(http)


async def _main(ns: argparse.Namespace) -> SoakResult:
    workdir = Path(ns.workdir or tempfile.mkdtemp(prefix="soak-"))
    mock: Popen[str] | None = None
    async with TansuBroker(log_dir=workdir) as broker:
        try:
            mock, port = spawn(*MOCK_ARGS)
            print(
                f"soak: {ns.minutes} min at {ns.rate}/s and {ns.webhook_rate} webhooks/s; "
                f"logs in {workdir}",
                flush=True,
            )
            return await soak(
                broker.bootstrap_servers,
                f"http://127.0.0.1:{port}",
                workdir,
                seconds=ns.minutes * 60,
                rate=ns.rate,
                webhook_rate=ns.webhook_rate,
                interval_s=ns.interval_s,
                warmup_min=ns.warmup_min,
                broker_pid=broker.pid,
            )
        finally:
            if mock is not None:
                mock.terminate()
                mock.wait(5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=float, default=100, help="request envelopes a second")
    p.add_argument("--webhook-rate", type=float, default=10, help="webhooks a second")
    p.add_argument("--interval-s", type=float, default=60, help="time between samples")
    p.add_argument("--warmup-min", type=float, default=6, help="minutes left out of the slopes")
    p.add_argument("--workdir", default=None, help="where the logs go (default: a temp dir)")
    result = asyncio.run(_main(p.parse_args(argv)))
    print(result.summary(), flush=True)


if __name__ == "__main__":
    main()
