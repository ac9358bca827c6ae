"""End-to-end benchmark of the real bridge process, with its baselines and the issue's targets.

    .venv/bin/python -m tests.perf.bench_bridge                 # everything, ~5 min
    .venv/bin/python -m tests.perf.bench_bridge --quick         # smaller runs, ~3 min
    .venv/bin/python -m tests.perf.bench_bridge --only zero-p1 lat100 --baselines kafka http
    .venv/bin/python -m tests.perf.bench_bridge --only zero-p1 --profile /tmp/prof

One Tansu broker serves every run and one ``tests/support/fast_twilio.py`` process per mock
latency stands in for Twilio. With two or more CPUs the bridge (and each baseline) runs alone on
CPU 1 (``taskset -c 1``) while the broker, the mocks, the load generators and this process share
CPU 0 (``--no-pin`` turns that off). Figures are printed, never asserted; a summary at the end
compares them with the targets. Other load on the machine shows up as noise: the load average is
printed.

**Scenarios** (``--only``; all by default):

* ``zero-p1``, ``zero-p4``: throughput on a backlog: N ``CreateMessage`` envelopes (a key each)
  pre-loaded on a fresh topic of P partitions, mock answering at once, K = 256 calls in flight
  (``BRIDGE_RATE_LIMIT__MAX_CONCURRENT``; the bridge may hold 2K records, see ``RECORDS``).
* ``lat100``: the same at 100 ms mock latency, 1 partition, 10,000 distinct keys (each twice);
  the limit is K ÷ latency = 2,560/s. Rows with a latency print the mock's own count of its
  peak concurrent requests as ``peak calls``.
* ``one-key``: 100 ms, every envelope on one key: order must be kept, so 1 ÷ latency = 10/s at
  most; the replies' order on the reply topic is checked against the requests'.
* ``paced``: added latency at a steady 1,000 envelopes/s (``--paced-rate``), produced by this
  process while the bridge runs, against the 0 ms and the 100 ms mock.
* ``rss``: peak RSS after a 1,000- and a 100,000-envelope backlog (0 ms).
* ``webhook``: signed inbound-SMS webhooks posted by ``webhook_load.py`` (another process,
  C = 64 connections) to the bridge, which answers 200 only after Kafka acknowledged the event;
  and the same load against a bare uvicorn + Starlette app (no signature check, no Kafka).

**Baselines** (``--baselines``; those the chosen scenarios need, by default), each on the same
CPU as the bridge: ``seq``, a sequential aiokafka consumer that POSTs one request at a time
(``baselines.py``); ``kafka``, the Kafka path alone (consume → produce → commit, no HTTP, K in
flight); ``http``, the HTTP client alone against the same mock with 256 concurrent requests
(``bench_http.py``: raw aiohttp, and the bridge's own ``TwilioClient``). Each bridge figure is
printed as a ratio to them (``vs seq``, ``vs kafka``, ``vs http`` = raw aiohttp).

**What is measured.** Throughput: N ÷ the window from the consumer's group join (the time of its
``assigned`` log line) to the Kafka timestamp of the last reply (set by its producer when it sent
the reply); start-up (interpreter, imports, catalog, the broker's join hold) is left out and
shown as ``start s``. ``CPU ms/env`` is the process's utime + stime (``/proc/<pid>/stat``) over
that window per envelope (= CPU seconds per 1,000), ``CPU%`` the same over the window (100 % =
one core), ``RSS MB`` its peak (``VmHWM``). Added latency (``paced``): for each envelope, the
reply record's Kafka timestamp (the bridge's producer, when it sent the reply; ms) minus the
moment this process sent the request (carried in the envelope's ``metadata``, echoed in the
reply), minus the mock's latency; the first second is warm-up and left out. ``seen p99`` is the
same from the request's send to this process reading the reply (fetch wait 10 ms), i.e. with the
reply's acknowledgement and a consumer's fetch in it. Webhooks: accepted (200) per second from
the first request sent to the last answer, answer times as the load generator saw them, and
every accepted event is looked for on its topic.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.tooling.local.tansu import TansuBroker, create_topics, free_port
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.perf.bench_http import run_client
from tests.perf.chart import write_chart
from tests.perf.otlp_sink import spawn as spawn_sink
from tests.support.fast_twilio import spawn
from tests.support.harness import BridgeProcess, Headers, Topics, produce

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
JOINED = re.compile(r'^\{"time":"([^"]+)Z",[^\n]*"message":"assigned ', re.MULTILINE)
TICK = os.sysconf("SC_CLK_TCK")
# Tansu holds a new group's first JoinGroup for half the session timeout (23 s at the bridge's
# 45 s default), so every consumer gets Kafka's minimum: start-up is not measured anyway.
SESSION_TIMEOUT_MS = 6000
K = 256  # Twilio calls in flight: the K of the physical limit K ÷ latency
# Records the bridge may hold (BRIDGE_PROCESSING__MAX_IN_FLIGHT). A record also waits for
# Kafka's acknowledgements (the dedupe start before its call, the reply after it), holding
# no call meanwhile; with records = K, Tansu's ~10-15 ms acknowledgements under load left
# ~60 of the K calls idle (lat100: 64-68 % of the limit with 256 records, 86-87 % with 512).
RECORDS = 2 * K
SCENARIOS = ("zero-p1", "zero-p4", "lat100", "one-key", "paced", "rss", "webhook")
BASELINES = ("seq", "kafka", "http")
WEBHOOK_FAMILY = "messages"


# --- /proc and processes ----------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def stop_process(proc: subprocess.Popen[Any]) -> int:
    """SIGTERM, then SIGKILL if it is still there after 30 s; returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
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


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass(frozen=True)
class Pinning:
    """Where the code under test runs (``cpu``) and where everything else does (``others``)."""

    cpu: int | None
    others: int | None

    @classmethod
    def choose(cls, enabled: bool) -> Pinning:
        if not enabled or (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
            return cls(None, None)
        return cls(1, 0)

    def command(self, args: list[str]) -> list[str]:
        """``args`` run on the measured CPU (``taskset`` execs, so the pid stays the same)."""
        if self.cpu is None:
            return args
        taskset = shutil.which("taskset")
        return [taskset, "-c", str(self.cpu), *args] if taskset else args

    def place(self, pid: int) -> None:
        """Pin an already started process (and its later threads) to the measured CPU."""
        if self.cpu is not None:
            os.sched_setaffinity(pid, {self.cpu})

    def describe(self) -> str:
        if self.cpu is None:
            return "not pinned"
        how = "taskset" if shutil.which("taskset") else "sched_setaffinity"
        return (
            f"bridge and baselines on CPU {self.cpu} ({how}); broker, mocks, load generators "
            f"and this process on CPU {self.others}"
        )


class Profiler:
    """``py-spy record`` attached to a process for the measured window (``--profile DIR``)."""

    def __init__(self, directory: Path | None, rate: int) -> None:
        self.directory = directory
        self.rate = rate

    def attach(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        if self.directory is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{name}.txt"
        args = ["py-spy", "record", "--pid", str(pid), "--rate", str(self.rate)]
        args += ["--format", "raw", "--output", str(out)]
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        return subprocess.Popen([py_spy, *args[1:]], stdout=subprocess.DEVNULL)

    @staticmethod
    def detach(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- envelopes and replies --------------------------------------------------------------------


def envelope(request_id: str, n: int, mode: str, metadata: dict[str, Any] | None = None) -> bytes:
    body = {"To": "+15005550006", "From": "+15005550001", "Body": f"Your code is {n:06d}"}
    doc: dict[str, Any]
    if mode == "basic":
        doc = {"id": request_id, "mode": "basic", "operation": "CreateMessage", "body": body}
    else:
        doc = {"id": request_id, "mode": "advanced", "method": "POST", "path": MESSAGES}
        doc["body"] = urlencode(body)
    if metadata is not None:
        doc["metadata"] = metadata
    return orjson.dumps(doc)


def trace_context(key: bytes | None) -> Headers:
    """A sampled W3C ``traceparent`` made from a record's key: the context an upstream service
    puts on its request (``--traceparent``)."""
    trace_id, parent_id = trace_ids(key)
    return [("traceparent", f"00-{trace_id}-{parent_id}-01".encode())]


def trace_ids(key: bytes | None) -> tuple[str, str]:
    """(trace id, parent span id) in hex of the request with ``key``."""
    digest = hashlib.blake2b(key or b"", digest_size=24).hexdigest()
    return digest[:32], digest[32:]


@dataclass
class Replies:
    """What the reply watcher saw, by the ``id`` header."""

    want: set[str]
    counts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    order: list[str] = field(default_factory=list)  # first sighting of each id, in topic order
    # (request sent at, reply timestamp, reply seen) for replies that carry metadata.sent
    times: list[tuple[float, float, float]] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)  # the replies' duration_ms
    seen: int = 0
    traced: int = 0  # replies carrying a traceparent of their request's trace
    traced_children: int = 0  # ... with a span id of the bridge's (not the request's own)
    first_ms: int = 0
    last_ms: int = 0
    progress_at: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(
        self, key: bytes | None, value: bytes, headers: Any, timestamp_ms: int, now: float
    ) -> None:
        rid = next((v.decode() for k, v in headers if k == "id"), "")
        self.counts[rid] += 1
        if rid not in self.want or self.counts[rid] != 1:
            return
        self.seen += 1
        self._trace(key, headers)
        self.order.append(rid)
        self.first_ms = min(self.first_ms or timestamp_ms, timestamp_ms)
        self.last_ms = max(self.last_ms, timestamp_ms)
        self.progress_at = time.monotonic()
        try:
            reply = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.statuses["not JSON"] += 1
        else:
            if reply.get("status") == "ok":
                self.statuses[f"ok {reply.get('http_status', '')}".rstrip()] += 1
            else:
                error = reply.get("error") or {}
                self.statuses[f"error {error.get('kind')}"] += 1
            if isinstance(duration := reply.get("duration_ms"), float | int):
                self.durations.append(float(duration))
            sent = (reply.get("metadata") or {}).get("sent")
            if isinstance(sent, float):
                self.times.append((sent, timestamp_ms / 1000, now))
        if self.seen == len(self.want):
            self.done.set()

    def _trace(self, key: bytes | None, headers: Any) -> None:
        parent = next((v.decode() for k, v in headers if k == "traceparent"), "")
        _, trace_id, span_id, _ = (parent.split("-") + ["", "", "", ""])[:4]
        want_trace, request_span = trace_ids(key)
        if trace_id == want_trace:
            self.traced += 1
            self.traced_children += span_id != request_span


async def follow(
    bootstrap: str,
    topic: str,
    on_record: Callable[[Any, float], None],
    stop: asyncio.Event,
    fetch_max_wait_ms: int = 10,
) -> None:
    """Hand every record of ``topic``, from its start, to ``on_record`` with the wall-clock
    time it was read, until ``stop`` is set."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batch.values():
                for r in records:
                    on_record(r, now)
    finally:
        await consumer.stop()


async def watch(bootstrap: str, topic: str, replies: Replies, stop: asyncio.Event) -> None:
    await follow(
        bootstrap,
        topic,
        lambda r, now: replies.add(r.key, r.value, r.headers, r.timestamp, now),
        stop,
    )


async def mock_stats(base: str, reset: bool = False) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as client:
        if reset:
            await client.post("/__reset")
        stats: dict[str, Any] = (await client.get("/__stats")).json()
        return stats


# The bridge's own timings, from its /metrics: mean ms of each histogram over the run.
HISTOGRAMS = {
    "http": "twilio_bridge_twilio_request_duration_seconds",
    "publish": "twilio_bridge_reply_publish_duration_seconds",
}


async def bridge_means(port: int) -> dict[str, float]:
    """Mean milliseconds of the bridge's HTTP-call and reply-publish histograms."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return {}
    sums: dict[str, float] = dict.fromkeys(HISTOGRAMS, 0.0)
    counts: dict[str, float] = dict.fromkeys(HISTOGRAMS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for key, metric in HISTOGRAMS.items():
            if name.startswith(metric + "_sum"):
                sums[key] += float(value)
            elif name.startswith(metric + "_count"):
                counts[key] += float(value)
    return {key: sums[key] / counts[key] * 1000 for key in HISTOGRAMS if counts[key]}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --- results ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One consumer (bridge or baseline) on one topic."""

    label: str
    system: str
    envelopes: int
    latency_ms: float
    partitions: int
    startup_s: float = float("nan")
    window_s: float = float("nan")
    first_reply_s: float = float("nan")
    cpu_s: float = float("nan")
    rss_kb: int = 0
    broker_cpu_s: float = float("nan")
    mock_cpu_s: float = float("nan")
    mock_requests: int = 0
    peak_calls: int = 0  # the most requests the mock had in flight at once
    statuses: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    order_kept: bool | None = None
    added_ms: list[float] = field(default_factory=list)
    seen_ms: list[float] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)  # replies' duration_ms: build to reply
    means: dict[str, float] = field(default_factory=dict)  # bridge_means()
    rate_override: float | None = None  # paced runs: the arrival rate actually achieved
    load: float = float("nan")  # the machine's 1-minute load average as the run started
    traced: int = -1  # replies with their request's trace (-1: requests carried none)
    traced_children: int = 0  # ... whose span id is the bridge's
    spans: int = -1  # spans the OTLP sink received during the run (-1: no sink)
    span_children: int = 0  # ... with a parent
    problem: str = ""

    @property
    def rate(self) -> float:
        if self.rate_override is not None:
            return self.rate_override
        return self.envelopes / self.window_s if self.window_s > 0 else float("nan")

    @property
    def steady_rate(self) -> float:
        """Replies per second from the first reply to the last: without the start-up."""
        between = self.window_s - self.first_reply_s
        return (self.envelopes - 1) / between if between > 0 else float("nan")

    @property
    def cpu_ms_per_env(self) -> float:
        return self.cpu_s / self.envelopes * 1000 if self.envelopes else float("nan")


@dataclass
class HttpBaseline:
    client: str
    latency_ms: float
    concurrency: int
    result: dict[str, Any]

    @property
    def rate(self) -> float:
        return float(self.result.get("rps", float("nan")))


@dataclass
class WebhookRun:
    system: str
    load: dict[str, Any]
    cpu_s: float = float("nan")
    rss_kb: int = 0
    broker_cpu_s: float = float("nan")
    events: int = -1  # distinct events found on the topic; -1: not looked for
    problem: str = ""

    @property
    def rate(self) -> float:
        return float(self.load.get("accepted_per_s", float("nan")))

    @property
    def accepted(self) -> int:
        return int(self.load.get("statuses", {}).get("200", 0))


# --- the lab: broker, mocks, processes --------------------------------------------------------


def tree_env(root: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``root`` first on ``PYTHONPATH``, so that ``import bridge`` finds its tree.

    Every tree runs under this interpreter, whose own checkout is installed in editable mode:
    the working directory alone would not do where ``PYTHONSAFEPATH`` keeps it off the path.
    """
    paths = [str(root), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def imported_bridge(root: Path) -> Path:
    """Where ``import bridge`` leads when started as a bridge from ``root`` is."""
    code = "import bridge; print(bridge.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=tree_env(root, dict(os.environ)),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()).resolve().parent


class BenchBridge(BridgeProcess):
    """The harness's bridge process without the settings it tunes for tests (Prism's pool size,
    a fast commit interval), started from ``root`` on the measured CPU."""

    TEST_ONLY = ("BRIDGE_TWILIO__MAX_CONNECTIONS", "BRIDGE_KAFKA__COMMIT_INTERVAL_S")
    pinning: Pinning = Pinning(None, None)
    root: Path = ROOT

    def env(self) -> dict[str, str]:
        env = super().env()
        for name in self.TEST_ONLY:
            env.pop(name, None)
        env.update(self.extra_env)
        # Tracing is on where the OTEL_* variables ask for it: only a system's own settings
        # may, never this shell's environment.
        for name in [n for n in env if n.startswith("OTEL_") and n not in self.extra_env]:
            del env[name]
        # A tree compared with this one may predate a setting given here, and a bridge
        # refuses settings it does not know.
        known = (self.root / "bridge" / "config.py").read_text()
        for name in [n for n in env if n.startswith("BRIDGE_DEDUPE__")]:
            if name.removeprefix("BRIDGE_DEDUPE__").lower() not in known:
                del env[name]
        env.update(self.extra_env)
        return tree_env(self.root, env)

    def start(self) -> BenchBridge:
        # `python -m bridge run` is the entry point of every layout: the flat one (bridge/cli.py,
        # bridge/service.py) and the layered one (bridge/cli.py, bridge/app/service.py) alike.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.pinning.command([sys.executable, "-m", "bridge", "run"]),
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        return self


@dataclass(frozen=True)
class System:
    """A bridge to measure: its source tree and the settings it runs with."""

    root: Path
    env: dict[str, str]


Root = tuple[str, Path, dict[str, str]]  # (name or "", source tree, its own settings)


def systems(
    roots: list[Root], variants: list[tuple[str, dict[str, str]]], common: dict[str, str]
) -> dict[str, System]:
    """Every root with every variant, named ``root-variant`` (just ``bridge`` for one), where a
    root is called by its given name or else by its directory's."""
    chosen = variants or [("", {})]
    out: dict[str, System] = {}
    for given, path, own in roots:
        for variant, env in chosen:
            parts = [given or path.resolve().name] if len(roots) > 1 else []
            parts += [variant] if variant else []
            # Never cut short: "perf-new-on" and "perf-new-off" cut to 10 were one system, and
            # the second silently replaced the first.
            name = "-".join(parts) or "bridge"
            if name in out:
                raise SystemExit(f"two systems named {name!r}: give the roots other names")
            out[name] = System(path.resolve(), {**common, **own, **env})
    return out


def _root(text: str) -> Root:
    place, _, settings = text.partition(":")
    name, _, path = place.rpartition("=")
    return name, Path(path), dict(_setting(item) for item in settings.split(",") if item)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition(":")
    return name, dict(_setting(item) for item in settings.split(",") if item)


@dataclass
class Lab:
    broker: TansuBroker
    workdir: Path
    pinning: Pinning
    profiler: Profiler
    mode: str
    stall_s: float
    roots: dict[str, System]  # system name → where its bridge runs from, and its settings
    fetch_wait_ms: int = 500  # the baselines' consumers' fetch.max.wait.ms
    traceparent: bool = False  # every request carries a W3C traceparent (trace_context)
    mocks: dict[float, str] = field(default_factory=dict)
    mock_procs: list[subprocess.Popen[str]] = field(default_factory=list)
    sink_url: str = ""  # the OTLP sink, once a system's settings name it ({sink})

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def mock(self, latency_ms: float) -> str:
        if latency_ms not in self.mocks:
            proc, port = spawn("--latency-ms", str(latency_ms))
            self.mock_procs.append(proc)
            self.mocks[latency_ms] = f"http://127.0.0.1:{port}"
        return self.mocks[latency_ms]

    @property
    def headers(self) -> Callable[[bytes | None], Headers] | None:
        """The headers of a request record with a key, besides its id: its trace context."""
        return trace_context if self.traceparent else None

    def sink(self) -> str:
        """The OTLP/HTTP sink's base URL (``otlp_sink.py``), started on first use."""
        if not self.sink_url:
            proc, port = spawn_sink()
            self.mock_procs.append(proc)
            self.sink_url = f"http://127.0.0.1:{port}"
        return self.sink_url

    async def sink_spans(self) -> tuple[int, int]:
        """(spans, spans with a parent) the sink has received; (-1, 0) without a sink."""
        if not self.sink_url:
            return -1, 0
        stats = await mock_stats(self.sink_url)
        return stats["spans"], stats["children"]

    def settings(self, system: str) -> dict[str, str]:
        """A system's own settings, ``{sink}`` in a value standing for the OTLP sink's URL."""
        env = self.roots[system].env
        if any("{sink}" in value for value in env.values()):
            return {k: v.replace("{sink}", self.sink()) for k, v in env.items()}
        return env

    def close(self) -> None:
        for proc in self.mock_procs:
            stop_process(proc)

    def bridge_env(self, topics: Topics) -> dict[str, str]:
        return {
            "BRIDGE_PROCESSING__MAX_IN_FLIGHT": str(RECORDS),
            # The mock has no account limit: as for an account whose limit was raised.
            "BRIDGE_RATE_LIMIT__MAX_CONCURRENT": str(K),
            "BRIDGE_RATE_LIMIT__ACCOUNT_CONCURRENCY": "0",
            "BRIDGE_LOG_LEVEL": "INFO",  # for the "assigned" line
            "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "BRIDGE_WEBHOOK__TOPIC_PREFIX": f"ev-{topics.group}.",
        }

    def launch(
        self, system: str, topics: Topics, base: str, extra: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path, int]:
        """Start the consumer under test; (process, log file, HTTP port for the bridge)."""
        log_path = self.workdir / f"{topics.group}-{system}.log"
        if system in self.roots:
            port = free_port()
            spec = self.roots[system]
            env = {**self.bridge_env(topics), "BRIDGE_HTTP__PORT": str(port)}
            env.update(self.settings(system))
            env.update(extra or {})
            BenchBridge.pinning = self.pinning
            BenchBridge.root = spec.root
            bridge = BenchBridge(self.bootstrap, base, topics, log_path, env, http_port=port)
            bridge.start()
            assert bridge.process is not None
            return bridge.process, log_path, port
        kind, arg = ("seq", base) if system == "seq" else ("kafka", str(K))
        args = [sys.executable, "-m", "tests.perf.baselines", kind, self.bootstrap]
        args += [topics.requests, topics.replies, topics.group, arg]
        env = {**os.environ, "BASELINE_FETCH_MAX_WAIT_MS": str(self.fetch_wait_ms)}
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                self.pinning.command(args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return proc, log_path, 0

    async def wait_joined(self, proc: subprocess.Popen[bytes], log_path: Path) -> float:
        deadline = time.monotonic() + 120
        while (joined := joined_at(log_path)) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"exited {proc.returncode} before joining; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"did not join within 120 s; see {log_path}")
            await asyncio.sleep(0.01)
        return joined

    # --- a backlog run ---

    async def backlog(
        self,
        label: str,
        system: str,
        n: int,
        latency_ms: float,
        partitions: int,
        key: Callable[[int], bytes],
        check_order: bool = False,
    ) -> Run:
        base = self.mock(latency_ms)
        topics = Topics.fresh()
        await topics.create(self.bootstrap, partitions)
        ids = [f"{topics.group}-{i:06d}" for i in range(n)]
        items = ((key(i), envelope(rid, i, self.mode)) for i, rid in enumerate(ids))
        await produce(self.bootstrap, topics.requests, items, self.headers)
        await mock_stats(base, reset=True)
        run = Run(label, system, n, latency_ms, partitions, load=os.getloadavg()[0])
        replies, stop = Replies(set(ids)), asyncio.Event()
        spans0 = await self.sink_spans()
        watcher = asyncio.create_task(watch(self.bootstrap, topics.replies, replies, stop))
        spawned = time.time()
        proc, log_path, port = self.launch(system, topics, base)
        profile = None
        try:
            joined = await self.wait_joined(proc, log_path)
            run.startup_s = joined - spawned
            profile = self.profiler.attach(proc.pid, f"{label}-{system}")
            cpu0, broker0 = proc_cpu(proc.pid), proc_cpu(self.broker.pid)
            mock0 = (await mock_stats(base))["cpu_seconds"]
            await self._until_done(proc, log_path, replies, run)
            run.cpu_s = proc_cpu(proc.pid) - cpu0
            run.rss_kb = peak_rss_kb(proc.pid)
            run.broker_cpu_s = proc_cpu(self.broker.pid) - broker0
            run.mock_cpu_s = (await mock_stats(base))["cpu_seconds"] - mock0
            if replies.seen:
                run.window_s = replies.last_ms / 1000 - joined
                run.first_reply_s = replies.first_ms / 1000 - joined
            if port:
                run.means = await bridge_means(port)
            await asyncio.sleep(0.5)  # late duplicates
        except RuntimeError as exc:
            run.problem = str(exc)
        finally:
            Profiler.detach(profile)
            stop.set()
            await watcher
            code = stop_process(proc)
        await self._tally(run, replies, base, code, log_path, spans0)
        if check_order:  # one key: were the replies published in the requests' order?
            run.order_kept = replies.order == ids[: len(replies.order)]
        return run

    async def _until_done(
        self, proc: subprocess.Popen[bytes], log_path: Path, replies: Replies, run: Run
    ) -> None:
        while not replies.done.is_set():
            if proc.poll() is not None:
                run.problem = f"exited {proc.returncode}; see {log_path}"
                return
            if time.monotonic() - replies.progress_at > self.stall_s:
                run.problem = f"no new reply for {self.stall_s:g} s; see {log_path}"
                return
            try:
                await asyncio.wait_for(replies.done.wait(), 0.2)
            except TimeoutError:
                pass

    async def _tally(
        self,
        run: Run,
        replies: Replies,
        base: str,
        code: int | None,
        log_path: Path,
        spans0: tuple[int, int],
    ) -> None:
        """What a finished run produced: replies, losses, duplicates, the mock's counts, the
        traces (the bridge has stopped, so its last spans were flushed to the sink)."""
        if run.system in self.roots and code != 0 and not run.problem:
            run.problem = f"exit code {code} after SIGTERM; see {log_path}"
        stats = await mock_stats(base)
        run.mock_requests, run.peak_calls = stats["total"], stats["peak_in_flight"]
        run.statuses = replies.statuses
        run.call_ms = replies.durations
        run.lost = run.envelopes - replies.seen
        run.duplicated = sum(c - 1 for rid, c in replies.counts.items() if rid in replies.want)
        if self.traceparent:
            run.traced, run.traced_children = replies.traced, replies.traced_children
        spans, children = await self.sink_spans()
        if spans >= 0:
            run.spans, run.span_children = spans - spans0[0], children - spans0[1]

    # --- a paced run ---

    async def paced(
        self, label: str, system: str, latency_ms: float, rate: float, seconds: float
    ) -> Run:
        base = self.mock(latency_ms)
        topics = Topics.fresh()
        await topics.create(self.bootstrap, 1)
        n = int(rate * seconds)
        ids = [f"{topics.group}-{i:06d}" for i in range(n)]
        run = Run(label, system, n, latency_ms, 1, load=os.getloadavg()[0])
        replies, stop = Replies(set(ids)), asyncio.Event()
        spans0 = await self.sink_spans()
        watcher = asyncio.create_task(watch(self.bootstrap, topics.replies, replies, stop))
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await producer.start()
        await mock_stats(base, reset=True)
        spawned = time.time()
        proc, log_path, port = self.launch(system, topics, base)
        profile = None
        try:
            run.startup_s = await self.wait_joined(proc, log_path) - spawned
            await asyncio.sleep(1.0)  # the group's first fetch
            profile = self.profiler.attach(proc.pid, f"{label}-{system}".replace(" ", "-"))
            cpu0, broker0 = proc_cpu(proc.pid), proc_cpu(self.broker.pid)
            started = time.time()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i, rid in enumerate(ids):
                due = t0 + i / rate
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                value = envelope(rid, i, self.mode, {"sent": time.time()})
                key = f"key-{i}".encode()
                headers = self.headers(key) if self.headers else None
                await producer.send(topics.requests, value, key=key, headers=headers)
            sent_for = time.time() - started
            await self._until_done(proc, log_path, replies, run)
            run.window_s = replies.last_ms / 1000 - started if replies.seen else float("nan")
            run.cpu_s = proc_cpu(proc.pid) - cpu0
            run.rss_kb = peak_rss_kb(proc.pid)
            run.broker_cpu_s = proc_cpu(self.broker.pid) - broker0
            run.rate_override = n / sent_for
            warm = started + 1.0
            mock_s = latency_ms / 1000
            measured = [t for t in replies.times if t[0] >= warm]
            run.added_ms = [(ts - sent - mock_s) * 1000 for sent, ts, _ in measured]
            run.seen_ms = [(seen - sent - mock_s) * 1000 for sent, _, seen in measured]
            if port:
                run.means = await bridge_means(port)
        except RuntimeError as exc:
            run.problem = str(exc)
        finally:
            Profiler.detach(profile)
            await producer.stop()
            stop.set()
            await watcher
            code = stop_process(proc)
        await self._tally(run, replies, base, code, log_path, spans0)
        return run

    # --- webhooks ---

    async def webhook(self, system: str, requests: int, concurrency: int) -> WebhookRun:
        topics = Topics.fresh()
        log_path = self.workdir / f"{topics.group}-webhook-{system}.log"
        events_topic = f"ev-{topics.group}.{WEBHOOK_FAMILY}"
        if system == "bare":
            proc, port = self.launch_bare()
        else:
            await topics.create(self.bootstrap, 1)
            await create_topics(self.bootstrap, [events_topic])
            proc, log_path, port = self.launch(system, topics, self.mock(0))
            await self._ready(proc, port, log_path)
        result = WebhookRun(system, {})
        base = f"http://127.0.0.1:{port}"
        profile = self.profiler.attach(proc.pid, f"webhook-{system}")
        cpu0, broker0 = proc_cpu(proc.pid), proc_cpu(self.broker.pid)
        try:
            args = [sys.executable, "-m", "tests.perf.webhook_load", "load", base]
            args += ["--family", WEBHOOK_FAMILY, "--token", AUTH_TOKEN, "--account", ACCOUNT]
            args += ["--requests", str(requests), "--concurrency", str(concurrency)]
            out = await asyncio.to_thread(
                subprocess.run, args, cwd=ROOT, capture_output=True, text=True, timeout=600
            )
            result.cpu_s = proc_cpu(proc.pid) - cpu0
            result.broker_cpu_s = proc_cpu(self.broker.pid) - broker0
            result.rss_kb = peak_rss_kb(proc.pid)
            if out.returncode != 0:
                result.problem = f"load generator failed: {out.stderr[-500:]}"
            else:
                result.load = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            Profiler.detach(profile)
            code = stop_process(proc)
        if system != "bare":
            if code != 0 and not result.problem:
                result.problem = f"exit code {code} after SIGTERM; see {log_path}"
            result.events = await count_events(self.bootstrap, events_topic, result.accepted)
        return result

    def launch_bare(self) -> tuple[subprocess.Popen[bytes], int]:
        args = [sys.executable, "-m", "tests.perf.webhook_load", "bare", "--port", "0"]
        proc = subprocess.Popen(self.pinning.command(args), cwd=ROOT, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline().split()[1])

    async def _ready(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(1200):
                if proc.poll() is not None:
                    raise RuntimeError(f"bridge exited {proc.returncode}; see {log_path}")
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"bridge never ready; see {log_path}")


async def count_events(bootstrap: str, topic: str, want: int) -> int:
    """Distinct event ids (``ce_id``) on ``topic``, reading until ``want`` or 10 s of silence."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    ids: set[bytes] = set()
    quiet_since = time.monotonic()
    try:
        while len(ids) < want and time.monotonic() - quiet_since < 10:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batch.values():
                for r in records:
                    ids.add(next((v for k, v in r.headers if k == "ce_id"), b""))
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return len(ids)


# --- the plan and the report ------------------------------------------------------------------


@dataclass
class Sizes:
    throughput: int = 20_000
    keys_lat100: int = 10_000
    one_key: int = 30
    paced_s: float = 11.0
    rss_small: int = 1_000
    rss_large: int = 100_000
    webhooks: int = 20_000
    seq_zero: int = 2_000
    seq_lat: int = 50
    http_s: float = 5.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(5_000, 2_500, 20, 6.0, 1_000, 30_000, 5_000, 500, 20, 2.0)


@dataclass
class Report:
    base_runs: dict[str, Run] = field(default_factory=dict)  # "seq 0ms P=1" → run
    http: dict[tuple[str, float], HttpBaseline] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    webhooks: dict[str, list[WebhookRun]] = field(default_factory=dict)

    def base_rate(self, key: str) -> float:
        run = self.base_runs.get(key)
        return run.rate if run is not None and not run.problem else float("nan")


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return "-"
    return f"{a / b:.2f}x" if a / b < 10 else f"{a / b:.0f}x"


def fmt(x: float, spec: str = ".0f") -> str:
    return "-" if math.isnan(x) else format(x, spec)


def run_row(r: Run, report: Report | None) -> str:
    if math.isnan(r.window_s) and r.problem:
        return f"{r.label:<16} {r.system:<10} {r.envelopes:>6}  FAILED: {r.problem}"
    if report is not None:
        seq = report.base_rate(f"seq {r.latency_ms:g}ms P={1 if r.latency_ms else r.partitions}")
        kafka = report.base_rate(f"kafka P={r.partitions}")
        http = report.http.get(("aiohttp", r.latency_ms))
        ratios = [
            ratio(r.rate, seq),
            ratio(r.rate, kafka),
            ratio(r.rate, http.rate if http else math.nan),
        ]
    else:
        ratios = ["", "", ""]
    limit = 1 if r.system == "seq" or r.label == "one-key" else K
    of_max = f"{r.rate / (limit * 1000 / r.latency_ms):.0%}" if r.latency_ms else "-"
    if r.rate_override is not None:
        ratios, of_max = ["-", "-", "-"], "-"
    lat = "-"
    if r.added_ms:
        lat = "/".join(fmt(percentile(r.added_ms, q), ".1f") for q in (0.5, 0.95, 0.99))
        lat += f" (seen p99 {fmt(percentile(r.seen_ms, 0.99), '.1f')})"
        alone = report.base_runs.get("kafka paced") if report is not None else None
        if alone is not None and alone.added_ms:
            floor = "/".join(fmt(percentile(alone.added_ms, q), ".1f") for q in (0.5, 0.99))
            lat += f" Kafka path alone {floor}"
    extra = _extras(r)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
    text = (
        f"{r.label:<16} {r.system:<10} {r.envelopes:>6} {fmt(r.startup_s, '.1f'):>5}"
        f" {fmt(r.window_s, '.2f'):>6} {fmt(r.rate):>6} {of_max:>6}"
        f" {ratios[0]:>7} {ratios[1]:>8} {ratios[2]:>7}"
        f" {fmt(r.cpu_ms_per_env, '.3f'):>6} {fmt(r.cpu_s / r.window_s * 100):>4}%"
        f" {r.rss_kb / 1024:>6.0f} {fmt(r.broker_cpu_s / r.envelopes * 1000, '.3f'):>6}"
        f" {fmt(r.mock_cpu_s / r.envelopes * 1000, '.3f'):>5} {r.lost:>4} {r.duplicated:>3}"
        f"  {lat}  [{statuses}]{extra}"
    )
    return text + (f"  PROBLEM: {r.problem}" if r.problem else "")


def _extras(r: Run) -> str:
    """The end of a run's row: what only some runs have."""
    extra = ""
    if r.call_ms:
        call = "/".join(fmt(percentile(r.call_ms, q), ".0f") for q in (0.5, 0.99))
        extra += f" call ms {call}"
    if r.peak_calls and r.latency_ms:  # a 0 ms mock answers each request as it comes
        extra += f" peak calls {r.peak_calls}"
    if r.means:
        extra += " mean ms " + ", ".join(f"{k} {v:.1f}" for k, v in r.means.items())
    if r.traced >= 0:  # replies with the request's trace; of them, with the bridge's span
        extra += f" traced {r.traced}/{r.traced_children}"
    if r.spans >= 0:
        extra += f" spans {r.spans} ({r.span_children} with a parent)"
    if not math.isnan(r.load):
        extra += f" load {r.load:.2f}"
    if r.order_kept is not None:
        extra += " order kept" if r.order_kept else " ORDER BROKEN"
        extra += f", first to last reply {fmt(r.steady_rate, '.1f')}/s"
    return extra


RUN_HEADER = (
    f"{'scenario':<16} {'system':<10} {'N':>6} {'start':>5} {'run s':>6} {'env/s':>6} {'of max':>6}"
    f" {'vs seq':>7} {'vs kafka':>8} {'vs http':>7} {'CPU ms':>6} {'CPU':>5} {'RSS MB':>6}"
    f" {'broker':>6} {'mock':>5} {'lost':>4} {'dup':>3}  added ms p50/p95/p99  [replies]"
)


async def main_async(ns: argparse.Namespace) -> None:
    sizes = Sizes.quick() if ns.quick else Sizes()
    if ns.envelopes:
        sizes.throughput = ns.envelopes
        sizes.keys_lat100 = ns.envelopes // 2  # lat100 sends each key twice
    chosen = ns.only or list(SCENARIOS)
    needs: set[str] = set()
    if set(chosen) & {"zero-p1", "zero-p4", "lat100", "one-key", "rss"}:
        needs = {"seq", "kafka", "http"}
    if "paced" in chosen:
        needs.add("kafka")
    baselines = needs if ns.baselines is None else set(ns.baselines)
    pinning = Pinning.choose(ns.pin)
    if pinning.others is not None:
        os.sched_setaffinity(0, {pinning.others})  # children inherit it; the bridge is moved
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {load_average()}; "
        f"{pinning.describe()}; mode {ns.mode}; figures, never asserted",
        flush=True,
    )
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    report = Report()
    profiler = Profiler(ns.profile, ns.profile_rate)
    roots = systems(ns.bridge_root or [("", ROOT, {})], ns.variant or [], dict(ns.bridge_env or []))
    for pair in ns.compare or []:
        if not set(pair) <= set(roots):
            raise SystemExit(f"--compare {':'.join(pair)}: the systems are {', '.join(roots)}")
    for name, spec in roots.items():
        found = imported_bridge(spec.root)
        if found != spec.root / "bridge":
            raise SystemExit(f"{name}: `import bridge` from {spec.root} finds {found}")
        if len(roots) > 1 or ns.bridge_env:
            print(f"{name}: the bridge in {found} with {spec.env or 'its defaults'}")
    async with TansuBroker(log_dir=workdir) as broker:
        lab = Lab(broker, workdir, pinning, profiler, ns.mode, ns.stall_s, roots, ns.fetch_wait_ms)
        lab.traceparent = ns.traceparent
        try:
            await run_baselines(lab, report, chosen, baselines, sizes, ns)
            await run_scenarios(lab, report, chosen, sizes, ns)
        finally:
            lab.close()
    print_targets(report, list(roots))
    for first, second in ns.compare or []:
        print_comparison(report, first, second)
    if ns.chart is not None:
        write_chart(report.runs, ns.chart)
        print(f"chart in {ns.chart}")
    took = time.monotonic() - started
    print(f"load average {load_average()}; {took:.0f} s in all; logs in {workdir}")


def _distinct(i: int) -> bytes:
    return f"key-{i}".encode()


async def run_baselines(
    lab: Lab,
    report: Report,
    chosen: list[str],
    baselines: set[str],
    sizes: Sizes,
    ns: argparse.Namespace,
) -> None:
    if not baselines:
        return
    print("\n== baselines (same CPU as the bridge)", flush=True)
    print(RUN_HEADER.replace("  added ms p50/p95/p99", ""), flush=True)
    plan: list[tuple[str, str, int, float, int]] = []
    if "seq" in baselines:
        plan.append(("seq 0ms P=1", "seq", sizes.seq_zero, 0, 1))
        if "zero-p4" in chosen:
            plan.append(("seq 0ms P=4", "seq", sizes.seq_zero, 0, 4))
        if {"lat100", "one-key"} & set(chosen):
            plan.append(("seq 100ms P=1", "seq", sizes.seq_lat, 100, 1))
    if "kafka" in baselines:
        plan.append(("kafka P=1", "kafka", sizes.throughput, 0, 1))
        if "zero-p4" in chosen:
            plan.append(("kafka P=4", "kafka", sizes.throughput, 0, 4))
    for label, system, n, latency, partitions in plan:
        run = await lab.backlog(label, system, n, latency, partitions, _distinct)
        report.base_runs[label] = run
        print(run_row(run, None), flush=True)
    if "kafka" in baselines and "paced" in chosen:
        run = await lab.paced("kafka paced", "kafka", 0, ns.paced_rate, sizes.paced_s)
        report.base_runs["kafka paced"] = run
        print(run_row(run, None), flush=True)
    if "http" in baselines:
        print(
            f"{'HTTP client alone':<24} {'conc':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'CPU ms/req':>10} {'CPU':>5} {'err':>4}",
            flush=True,
        )
        latencies = [0.0] + ([100.0] if "lat100" in chosen else [])
        for latency in latencies:
            for client in ("aiohttp", "bridge"):
                result = await asyncio.to_thread(
                    run_client, client, lab.mock(latency), K, sizes.http_s, lab.pinning.cpu
                )
                report.http[(client, latency)] = HttpBaseline(client, latency, K, result)
                name = "raw aiohttp" if client == "aiohttp" else "bridge TwilioClient"
                if result.get("failed"):
                    print(f"{name + f' {latency:g}ms':<24} FAILED", flush=True)
                    continue
                print(
                    f"{name + f' {latency:g}ms':<24} {K:>4} {result['rps']:>7.0f}"
                    f" {result['p50_ms']:>7.1f} {result['p99_ms']:>7.1f}"
                    f" {result['cpu_ms_per_1k'] / 1000:>10.3f} {result['cpu_util']:>5.0%}"
                    f" {result['errors']:>4}",
                    flush=True,
                )


async def run_scenarios(
    lab: Lab, report: Report, chosen: list[str], sizes: Sizes, ns: argparse.Namespace
) -> None:
    print("\n== bridge (vs X = env/s ÷ the baseline's; of max = ÷ (K ÷ latency))", flush=True)
    print(RUN_HEADER, flush=True)

    async def backlog(
        label: str, n: int, latency: float, p: int, key: Callable[[int], bytes], order: bool = False
    ) -> None:
        for _ in range(ns.repeat):
            for system in lab.roots:
                run = await lab.backlog(label, system, n, latency, p, key, order)
                report.runs.append(run)
                print(run_row(run, report), flush=True)

    if "zero-p1" in chosen:
        await backlog("zero-p1", sizes.throughput, 0, 1, _distinct)
    if "zero-p4" in chosen:
        await backlog("zero-p4", sizes.throughput, 0, 4, _distinct)
    if "lat100" in chosen:
        keys = sizes.keys_lat100
        await backlog("lat100", 2 * keys, 100, 1, lambda i: f"key-{i % keys}".encode())
    if "one-key" in chosen:
        await backlog("one-key", sizes.one_key, 100, 1, lambda i: b"the-one-key", order=True)
    if "paced" in chosen:
        await run_paced(lab, report, sizes, ns)
    if "rss" in chosen:
        await backlog("rss-small", sizes.rss_small, 0, 1, _distinct)
        await backlog("rss-large", sizes.rss_large, 0, 1, _distinct)
    if "webhook" in chosen:
        await run_webhooks(lab, report, sizes, ns)


async def run_paced(lab: Lab, report: Report, sizes: Sizes, ns: argparse.Namespace) -> None:
    for latency in ns.paced_latency_ms:
        for _ in range(ns.repeat):
            for system in lab.roots:
                label = f"paced {latency:g}ms"
                run = await lab.paced(label, system, latency, ns.paced_rate, sizes.paced_s)
                report.runs.append(run)
                print(run_row(run, report), flush=True)


async def run_webhooks(lab: Lab, report: Report, sizes: Sizes, ns: argparse.Namespace) -> None:
    print(
        f"\n== webhooks: signed inbound SMS, {sizes.webhooks} distinct, "
        f"{ns.webhook_concurrency} connections"
    )
    print(
        f"{'system':<10} {'accepted/s':>10} {'vs bare':>7} {'window s':>8} {'p50 ms':>7}"
        f" {'p95 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} {'CPU':>5} {'RSS MB':>6}"
        f" {'broker':>6} {'events':>7}  answers",
        flush=True,
    )
    for _ in range(ns.repeat):
        for system in ("bare", *lab.roots):
            result = await lab.webhook(system, sizes.webhooks, ns.webhook_concurrency)
            report.webhooks.setdefault(system, []).append(result)
            print(webhook_row(result, report.webhooks["bare"][-1]), flush=True)


def webhook_row(w: WebhookRun, bare: WebhookRun | None) -> str:
    if not w.load:
        return f"{w.system:<10} FAILED: {w.problem}"
    ld = w.load
    n = max(1, w.accepted)
    window = ld["window_s"]
    vs = ratio(w.rate, bare.rate) if bare is not None and bare is not w else "-"
    events = str(w.events) if w.events >= 0 else "-"
    answers = ", ".join(f"{k}: {v}" for k, v in ld["statuses"].items())
    if ld.get("errors"):
        answers += f"; errors {ld['errors']}"
    text = (
        f"{w.system:<10} {w.rate:>10.0f} {vs:>7} {window:>8.2f} {ld['p50_ms']:>7.1f}"
        f" {ld['p95_ms']:>7.1f} {ld['p99_ms']:>7.1f} {w.cpu_s / n * 1000:>10.3f}"
        f" {w.cpu_s / window:>5.0%} {w.rss_kb / 1024:>6.0f} {w.broker_cpu_s / n * 1000:>6.3f}"
        f" {events:>7}  {answers}"
    )
    return text + (f"  PROBLEM: {w.problem}" if w.problem else "")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2 if n else float("nan")


def _figure(values: list[float], spec: str, unit: str = "") -> str:
    """The median of repeated runs, with the best and worst when there were several."""
    text = f"{_median(values):{spec}}{unit}"
    if len(values) > 1:
        text += f" ({min(values):{spec}}–{max(values):{spec}})"
    return text


def print_targets(report: Report, systems: list[str]) -> None:
    """Each target against the median of the repeated runs (range in parentheses)."""
    lines: list[tuple[str, str, bool]] = []
    for system in systems:
        tag = f" [{system}]" if len(systems) > 1 else ""

        def runs(label: str, system: str = system) -> list[Run]:
            return [
                r for r in report.runs if r.label == label and r.system == system and not r.problem
            ]

        rates = [r.rate for r in runs("zero-p1")]
        if rates:
            what = "≥ 3,000 env/s, 0 ms mock, 1 partition"
            lines.append((what + tag, _figure(rates, ",.0f", "/s"), _median(rates) >= 3000))
        shares = [r.rate / (K * 10) * 100 for r in runs("lat100")]
        if shares:
            what = "≥ 90 % of 256 ÷ 100 ms (≥ 2,304/s)"
            lines.append((what + tag, _figure(shares, ".0f", " %"), _median(shares) >= 90))
        for label in sorted({r.label for r in report.runs if r.added_ms}):
            p99s = [percentile(r.added_ms, 0.99) for r in runs(label) if r.added_ms]
            if p99s:
                what = f"p99 added latency ≤ 10 ms ({label})"
                lines.append((what + tag, _figure(p99s, ".1f", " ms"), _median(p99s) <= 10))
        small = [r.rss_kb / 1024 for r in runs("rss-small")]
        large = [r.rss_kb / 1024 for r in runs("rss-large")]
        if small and large:
            growth = _median(large) / _median(small) - 1
            value = f"{_median(large):.0f} vs {_median(small):.0f} MB ({growth:+.0%})"
            n_small, n_large = runs("rss-small")[0].envelopes, runs("rss-large")[0].envelopes
            what = f"peak RSS, {n_large:,} backlog within 20 % of {n_small:,}"
            lines.append((what + tag, value, growth <= 0.2))
        hooks = [w.rate for w in report.webhooks.get(system, []) if w.load]
        if hooks:
            what = "webhook ingest ≥ 1,500 signed req/s"
            lines.append((what + tag, _figure(hooks, ",.0f", "/s"), _median(hooks) >= 1500))
        one = runs("one-key")
        if one:
            kept = all(r.order_kept for r in one)
            steady = [r.steady_rate for r in one]
            value = _figure(steady, ".1f", "/s") + (" kept" if kept else " BROKEN")
            what = "one key: order kept, 1 ÷ latency (first to last reply)"
            lines.append((what + tag, value, kept))
    if not lines:
        return
    print("\n== targets (median of the runs; range in parentheses)")
    for what, value, met in lines:
        print(f"{what:<52} {value:>30}  {'met' if met else 'NOT MET'}")


def print_comparison(report: Report, first: str, second: str) -> None:
    """``second`` against ``first``, round by round: CPU per envelope and envelopes/s of each,
    and their ratios. With ``--repeat`` the systems ran in turn within each round, so the two
    runs of a round saw the same machine; the summary is the median of the rounds' ratios."""
    labels = [r.label for r in report.runs if r.system == first]
    print(f"\n== {second} vs {first} (ratio = {second} ÷ {first}; rounds run interleaved)")
    print(
        f"{'scenario':<16} {'round':>5} {'load':>5} {'CPU ms/env':>21} {'ratio':>6}"
        f" {'env/s':>13} {'ratio':>6}"
    )
    for label in dict.fromkeys(labels):
        pairs = list(
            zip(
                [r for r in report.runs if r.label == label and r.system == first],
                [r for r in report.runs if r.label == label and r.system == second],
                strict=False,
            )
        )
        cpu, rate = [], []
        for n, (a, b) in enumerate(pairs, 1):
            if a.problem or b.problem:
                print(f"{label:<16} {n:>5}  a run failed: {a.problem or b.problem}")
                continue
            cpu.append(b.cpu_ms_per_env / a.cpu_ms_per_env)
            rate.append(b.rate / a.rate)
            print(
                f"{label:<16} {n:>5} {fmt(max(a.load, b.load), '.2f'):>5}"
                f" {a.cpu_ms_per_env:>10.3f} {b.cpu_ms_per_env:>10.3f} {cpu[-1]:>6.3f}"
                f" {a.rate:>6.0f} {b.rate:>6.0f} {rate[-1]:>6.3f}"
            )
        if cpu:
            print(
                f"{label:<16} {'median':>5} {'':>5} {'':>21} {_median(cpu) - 1:>+6.1%}"
                f" {'':>13} {_median(rate) - 1:>+6.1%}"
            )


def _pair(text: str) -> tuple[str, str]:
    first, sep, second = text.partition(":")
    if not sep or not first or not second:
        raise argparse.ArgumentTypeError(f"{text!r} is not A:B")
    return first, second


def _comparison_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose the bridges compared: trees, settings, trace context."""
    p.add_argument(
        "--bridge-root",
        type=_root,
        nargs="+",
        help="[NAME=]PATH[:BRIDGE_X=1,...] ...: run the bridge from each of these source trees "
        "in turn (A/B comparisons), each with its own settings if given and called NAME if "
        "given (one tree may then appear twice); '{sink}' in a value is the URL of an OTLP/HTTP "
        "sink the benchmark starts (tests/perf/otlp_sink.py)",
    )
    p.add_argument(
        "--variant",
        type=_variant,
        nargs="+",
        help="NAME:BRIDGE_X=1,BRIDGE_Y=2 ...: run each bridge with each of these settings",
    )
    p.add_argument(
        "--bridge-env", type=_setting, nargs="+", help="BRIDGE_X=1 ...: settings for every bridge"
    )
    p.add_argument(
        "--traceparent",
        action="store_true",
        help="every request record carries a sampled W3C traceparent header (its trace made "
        "from its key); each row then counts the replies that carry that trace",
    )
    p.add_argument(
        "--compare",
        type=_pair,
        nargs="+",
        help="A:B ...: print B against A (CPU per envelope, envelopes/s), round by round",
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="End-to-end bridge benchmark with baselines")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, help="scenarios to run (default all)")
    p.add_argument(
        "--baselines",
        nargs="*",
        choices=BASELINES,
        help="baselines to run (default: those the scenarios compare with; none: no argument)",
    )
    p.add_argument("--quick", action="store_true", help="smaller runs (about half the time)")
    p.add_argument("--envelopes", type=int, help="N for zero-p1, zero-p4 and lat100 (20000)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each backlog scenario")
    p.add_argument("--paced-rate", type=float, default=1000.0, help="envelopes/s (1000)")
    p.add_argument("--paced-latency-ms", type=float, nargs="+", default=[0.0, 100.0])
    p.add_argument("--webhook-concurrency", type=int, default=64)
    p.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=500,
        help="fetch.max.wait.ms of the baselines' consumers (aiokafka's 500 by default); give "
        "a bridge its own with --bridge-env BRIDGE_KAFKA__FETCH_MAX_WAIT_MS=N where it has one",
    )
    p.add_argument("--mode", choices=["basic", "advanced"], default="basic")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    p.add_argument("--stall-s", type=float, default=30, help="give up after no reply this long")
    _comparison_arguments(p)
    p.add_argument("--chart", type=Path, help="also draw the figures into this PNG file")
    p.add_argument("--profile", type=Path, help="py-spy raw profiles of each run into this dir")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    ns = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the broker, mocks and bridges started are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(main_async(ns))


if __name__ == "__main__":
    main()
