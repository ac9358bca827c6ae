"""Benchmark of delivery tracking's CPU: tracked sends with their callbacks beside their parts.

    python -m tests.perf.bench_tracking [--sends 2000] [--rounds 3] [--concurrency 64] \
        [--no-pin] [--profile DIR]

One Tansu broker, one ``tests/support/fast_twilio.py`` answering at once (keeping every POST
body of a round), one real ``python -m bridge run`` with tracking configured
(``BRIDGE_WEBHOOK__PUBLIC_URL`` = its own address, the test account's Auth Token), pinned as
``bench_bridge`` pins it: the bridge alone on CPU 1, everything else on CPU 0. Two scenarios,
interleaved round by round in the one run (A B, B A, A B, …) after a warm-up of each:

* **A, tracked**: N ``CreateMessage`` envelopes with ``"track": true`` (``Body`` = the request
  id); once every reply is read, the StatusCallback URL the bridge put in each create call is
  read back from the mock's bodies, and for each send ``queued``, ``sent``, ``delivered`` are
  posted to it in that order (``--concurrency`` sends at a time), each signed with Twilio's
  own ``RequestValidator`` over exactly that URL; the round ends when every send's final
  delivery record and all 3N plain events are on their topics.
* **B, the parts**: N untracked ``CreateMessage`` envelopes; once every reply is read, the same
  three status webhooks per send (the SID of its reply) posted to the plain
  ``/webhooks/twilio/message-status`` URL, signed alike; the round ends when all 3N events are
  on their topic.

Measured per round: the bridge process's utime + stime (``/proc``) from the first envelope
produced until, after the last record was read, the bridge is back to idle (a quarter second
at its idle CPU, at most 10 s: the owner's last states are written and read back after the
last delivery record), per send; sends per second up to the last record read; the ratio
A ÷ B of CPU per send (the issue's target: at most 1.5). Every callback must be answered 200
and every record found, or the round reports what was missing. Figures are printed, never
asserted; the load average (``uptime``) before, during and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from twilio.request_validator import RequestValidator

from bridge.tooling.local.tansu import TansuBroker, create_topics, free_port
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.perf.bench_bridge import (
    RECORDS,
    BenchBridge,
    K,
    Pinning,
    Profiler,
    follow,
    mock_stats,
    proc_cpu,
    stop_process,
)
from tests.support.fast_twilio import spawn
from tests.support.harness import Topics, produce

__all__ = ["main"]

FORM = "application/x-www-form-urlencoded"
STATUSES = ("queued", "sent", "delivered")  # the callbacks of each send, in this order
SIGNER = RequestValidator(AUTH_TOKEN)
STALL_S = 60.0  # a round that reads nothing new this long is reported as stuck
QUIET_WINDOW_S = 0.25  # the bridge is idle again when a window this long costs idle CPU


def uptime() -> str:
    """``uptime``'s line (the load averages), or the kernel's figures where it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def envelope(request_id: str, track: bool) -> bytes:
    body = {"To": "+15005550006", "From": "+15005550001", "Body": request_id}
    doc: dict[str, Any] = {"id": request_id, "mode": "basic", "operation": "CreateMessage"}
    doc["body"] = body
    if track:
        doc["track"] = True
    return orjson.dumps(doc)


def status_params(sid: str, status: str) -> dict[str, str]:
    """A message status callback's parameters, as Twilio sends them."""
    return {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "From": "+15005550001",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": "+15005550006",
    }


@dataclass
class Seen:
    """What the topic watchers read, for the whole run: replies' SIDs by request id, final
    delivery records by request id, plain events by MessageSid."""

    sids: dict[str, str] = field(default_factory=dict)
    finals: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)  # delivery records by request id
    events: Counter[str] = field(default_factory=Counter)
    progress_at: float = field(default_factory=time.monotonic)
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    def reply(self, record: Any, _now: float) -> None:
        rid = next((v.decode() for k, v in record.headers if k == "id"), "")
        body = orjson.loads(record.value).get("body")
        if isinstance(body, dict) and isinstance(body.get("sid"), str):
            self.sids[rid] = body["sid"]
        self._grew()

    def delivery(self, record: Any, _now: float) -> None:
        value = orjson.loads(record.value)
        self.records[value["id"]] += 1
        self.finals[value["id"]] += bool(value.get("final"))
        self._grew()

    def event(self, record: Any, _now: float) -> None:
        self.events[str(orjson.loads(record.value).get("MessageSid"))] += 1
        self._grew()

    def _grew(self) -> None:
        self.progress_at = time.monotonic()
        self.grew.set()

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """Until ``done()``; RuntimeError once nothing new was read for ``STALL_S``."""
        while not done():
            if time.monotonic() - self.progress_at > STALL_S:
                raise RuntimeError(f"stuck waiting for {what}")
            self.grew.clear()
            try:
                await asyncio.wait_for(self.grew.wait(), 0.5)
            except TimeoutError:
                pass


@dataclass
class Round:
    scenario: str  # "A" or "B"
    sends: int
    window_s: float = float("nan")  # first envelope produced to last record read
    tail_s: float = 0.0  # after that, until the bridge was back to idle
    cpu_s: float = float("nan")
    load: str = ""
    answers: Counter[int] = field(default_factory=Counter)
    phases: list[float] = field(default_factory=list)  # seconds: replies, callbacks, the rest
    idle_cpu: float = 0.0  # the bridge's CPU seconds per second when idle (consumers' polls)
    broker_cpu_s: float = float("nan")
    state_records: int = 0  # written to the state topic during the round
    problem: str = ""

    @property
    def rate(self) -> float:
        return self.sends / self.window_s

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.sends * 1000

    @property
    def busy_ms(self) -> float:
        """CPU per send beyond what the bridge spends idle over the same window."""
        return (self.cpu_s - self.idle_cpu * (self.window_s + self.tail_s)) / self.sends * 1000

    def row(self) -> str:
        codes = ",".join(f"{k}:{v}" for k, v in sorted(self.answers.items()))
        return (
            f"  {self.scenario}  {self.sends:>6} sends  {self.rate:7.0f} sends/s  "
            f"CPU {self.cpu_ms:5.2f} ms per send ({self.busy_ms:5.2f} beyond idle)  "
            f"s to replies/callbacks/records/idle "
            f"{'/'.join(f'{s:.1f}' for s in [*self.phases, self.tail_s])}  "
            f"broker CPU {self.broker_cpu_s / self.sends * 1000:5.2f} ms per send  "
            f"state records {self.state_records / self.sends:4.1f} per send  "
            f"callbacks {codes}  load {self.load}"
            + (f"  PROBLEM: {self.problem}" if self.problem else "")
        )


class Bench:
    """The broker, the mock and the bridge of one run, and the watchers of its topics."""

    def __init__(
        self,
        broker: TansuBroker,
        mock_url: str,
        bridge: BenchBridge,
        ns: argparse.Namespace,
        state_topic: str,
    ):
        self.broker, self.mock_url, self.bridge, self.ns = broker, mock_url, bridge, ns
        self.state_topic = state_topic
        self.bootstrap = broker.bootstrap_servers
        self.seen = Seen()
        self.profiler = Profiler(ns.profile, 100)
        self.rounds = 0
        self.idle_cpu = 0.0

    async def quiet(self, within_s: float = 10.0) -> float:
        """Wait until the bridge is back to idle; the seconds it took. The owner writes a
        send's last state after its last delivery record, and reads it back: that work is
        the round's, not the next one's."""
        limit = max(self.idle_cpu * 1.5, self.idle_cpu + 0.03) if self.idle_cpu else 0.1
        began = time.monotonic()
        while time.monotonic() - began < within_s:
            cpu0 = proc_cpu(self.pid)
            await asyncio.sleep(QUIET_WINDOW_S)
            if (proc_cpu(self.pid) - cpu0) / QUIET_WINDOW_S <= limit:
                break
        return time.monotonic() - began

    async def measure_idle(self, seconds: float) -> None:
        """The bridge's CPU per second while nothing is sent: its consumers' fetches."""
        cpu0 = proc_cpu(self.pid)
        await asyncio.sleep(seconds)
        self.idle_cpu = (proc_cpu(self.pid) - cpu0) / seconds

    @property
    def pid(self) -> int:
        assert self.bridge.process is not None
        return self.bridge.process.pid

    async def run(self, scenario: str, sends: int) -> Round:
        self.rounds += 1
        ids = [f"{scenario}{self.rounds}-{n:06d}" for n in range(sends)]
        result = Round(scenario, sends, idle_cpu=self.idle_cpu)
        await mock_stats(self.mock_url, reset=True)
        states0 = await records_in(self.bootstrap, self.state_topic)
        profile = self.profiler.attach(self.pid, f"round{self.rounds}-{scenario}")
        cpu0, started = proc_cpu(self.pid), time.monotonic()
        broker0 = proc_cpu(self.broker.pid)
        try:
            await self._round(scenario == "A", ids, result)
        except RuntimeError as exc:
            result.problem = str(exc)
        result.window_s = time.monotonic() - started
        result.tail_s = await self.quiet()
        result.cpu_s = proc_cpu(self.pid) - cpu0
        result.broker_cpu_s = proc_cpu(self.broker.pid) - broker0
        result.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        Profiler.detach(profile)
        result.state_records = await records_in(self.bootstrap, self.state_topic) - states0
        return result

    async def _round(self, tracked: bool, ids: list[str], result: Round) -> None:
        seen = self.seen
        items = ((f"key-{rid}".encode(), envelope(rid, tracked)) for rid in ids)
        await produce(self.bootstrap, self.bridge.topics.requests, items)
        began = time.monotonic()
        await seen.until(lambda: all(rid in seen.sids for rid in ids), "replies")
        result.phases.append(time.monotonic() - began)
        targets = await self._callback_urls(ids) if tracked else {}
        plain = f"{self.bridge.http_url}/webhooks/twilio/message-status"
        sends = [(seen.sids[rid], targets.get(rid, plain)) for rid in ids]
        result.answers = await post_callbacks(sends, self.ns.concurrency)
        result.phases.append(time.monotonic() - began - sum(result.phases))
        sids = [sid for sid, _ in sends]
        await seen.until(lambda: all(seen.events[s] >= len(STATUSES) for s in sids), "events")
        if tracked:
            await seen.until(lambda: all(seen.finals[rid] for rid in ids), "final deliveries")
        result.phases.append(time.monotonic() - began - sum(result.phases))

    async def _callback_urls(self, ids: list[str]) -> dict[str, str]:
        """Each request's StatusCallback, as the mock received it."""
        bodies = (await mock_stats(self.mock_url))["bodies"]
        urls = {}
        for body in bodies:
            form = dict(parse_qsl(body))
            if "StatusCallback" in form:
                urls[form["Body"]] = form["StatusCallback"]
        missing = [rid for rid in ids if rid not in urls]
        if missing:
            raise RuntimeError(f"{len(missing)} create calls without a StatusCallback")
        return urls


async def records_in(bootstrap: str, topic: str) -> int:
    """How many records were ever written to ``topic``: the sum of its end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # the cluster's metadata, with the topic's partitions
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def post_callbacks(sends: Iterable[tuple[str, str]], concurrency: int) -> Counter[int]:
    """For each (SID, URL): ``STATUSES`` in order, each signed over ``URL``; ``concurrency``
    sends at a time. Answers by HTTP status."""
    answers: Counter[int] = Counter()
    todo = iter(sends)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for sid, url in todo:
                for status in STATUSES:
                    params = status_params(sid, status)
                    headers = {
                        "content-type": FORM,
                        "x-twilio-signature": SIGNER.compute_signature(url, params),
                    }
                    async with session.post(url, data=urlencode(params), headers=headers) as a:
                        await a.read()
                        answers[a.status] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


async def start_bridge(
    bootstrap: str, mock_url: str, workdir: Path, pinning: Pinning
) -> tuple[BenchBridge, dict[str, str]]:
    """The bridge with tracking on; (bridge, the topics its watchers read)."""
    topics = Topics.fresh()
    await topics.create(bootstrap)
    tag = topics.group
    watched = {
        "replies": topics.replies,
        "deliveries": f"deliveries-{tag}",
        "events": f"ev-{tag}.message-status",
        "state": f"tracking-{tag}",
    }
    await create_topics(bootstrap, [watched["deliveries"], watched["events"]])
    port = free_port()
    env = {
        "BRIDGE_PROCESSING__MAX_IN_FLIGHT": str(RECORDS),
        "BRIDGE_RATE_LIMIT__MAX_CONCURRENT": str(K),
        "BRIDGE_RATE_LIMIT__ACCOUNT_CONCURRENCY": "0",
        "BRIDGE_WEBHOOK__TOPIC_PREFIX": f"ev-{tag}.",
        "BRIDGE_WEBHOOK__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BRIDGE_TRACKING__TOPIC": watched["deliveries"],
        "BRIDGE_TRACKING__STATE_TOPIC": watched["state"],
    }
    BenchBridge.pinning = pinning
    bridge = BenchBridge(bootstrap, mock_url, topics, workdir / "bridge.log", env, http_port=port)
    bridge.start()
    await bridge.wait_ready(120)
    return bridge, watched


def order(rounds: int) -> list[str]:
    """A B, B A, A B, …: neither scenario always runs first."""
    return [s for r in range(rounds) for s in (("A", "B") if r % 2 == 0 else ("B", "A"))]


def summary(rounds: list[Round]) -> list[str]:
    """Medians per scenario and the ratio of CPU per send, A ÷ B."""
    lines = []
    medians: dict[str, float] = {}
    for scenario, name in (("A", "tracked + 3 callbacks"), ("B", "untracked + 3 webhooks")):
        runs = [r for r in rounds if r.scenario == scenario and not r.problem]
        if not runs:
            lines.append(f"  {scenario} {name}: no complete round")
            continue
        cpu = sorted(r.cpu_ms for r in runs)
        busy = sorted(r.busy_ms for r in runs)
        rate = sorted(r.rate for r in runs)
        medians[scenario] = cpu[len(cpu) // 2]
        medians[scenario + "busy"] = busy[len(busy) // 2]
        lines.append(
            f"  {scenario} {name}: CPU {medians[scenario]:.2f} ms per send (median; "
            f"{cpu[0]:.2f}-{cpu[-1]:.2f}; beyond idle {busy[len(busy) // 2]:.2f}), "
            f"{rate[len(rate) // 2]:.0f} sends/s ({rate[0]:.0f}-{rate[-1]:.0f})"
        )
    pairs = [
        (a, b) if a.scenario == "A" else (b, a)
        for a, b in zip(rounds[::2], rounds[1::2], strict=True)
        if not (a.problem or b.problem)
    ]
    if "A" in medians and "B" in medians and pairs:
        each = ", ".join(f"{a.cpu_ms / b.cpu_ms:.2f}" for a, b in pairs)
        lines.append(
            f"  CPU per send A ÷ B: {medians['A'] / medians['B']:.2f} (of the medians; per "
            f"pair {each}); beyond idle {medians['Abusy'] / medians['Bbusy']:.2f}; target at "
            "most 1.5"
        )
    return lines


async def main_async(ns: argparse.Namespace) -> None:
    pinning = Pinning.choose(ns.pin)
    if pinning.others is not None:
        os.sched_setaffinity(0, {pinning.others})  # children inherit it; the bridge is moved
    print(f"{uptime()}\n{pinning.describe()}; figures, never asserted", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    mock, port = spawn("--latency-ms", "0", "--bodies", str(max(ns.sends, ns.warmup)))
    mock_url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    try:
        async with TansuBroker(log_dir=workdir) as broker:
            bootstrap = broker.bootstrap_servers
            bridge, watched = await start_bridge(bootstrap, mock_url, workdir, pinning)
            bench = Bench(broker, mock_url, bridge, ns, watched["state"])
            seen = bench.seen
            watchers = [
                asyncio.create_task(follow(bootstrap, watched["replies"], seen.reply, stop)),
                asyncio.create_task(follow(bootstrap, watched["deliveries"], seen.delivery, stop)),
                asyncio.create_task(follow(bootstrap, watched["events"], seen.event, stop)),
            ]
            try:
                for scenario in ("A", "B"):
                    warm = await bench.run(scenario, ns.warmup)
                    print(f"warm-up{warm.row()}", flush=True)
                await bench.quiet()
                await bench.measure_idle(ns.idle_s)
                print(f"idle: {bench.idle_cpu * 1000:.0f} ms of CPU per second", flush=True)
                rounds = []
                for scenario in order(ns.rounds):
                    rounds.append(await bench.run(scenario, ns.sends))
                    print(rounds[-1].row(), flush=True)
            finally:
                stop.set()
                await asyncio.gather(*watchers)
                assert bridge.process is not None
                code = stop_process(bridge.process)
    finally:
        stop_process(mock)
    extra = sum(n - len(STATUSES) for n in seen.records.values() if n > len(STATUSES))
    print("\n".join(summary(rounds)))
    print(
        f"  delivery records beyond {len(STATUSES)} per tracked send: {extra}; the bridge "
        f"exited {code}; logs in {workdir}\n{uptime()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sends", type=int, default=2000, help="sends per round")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of rounds (A and B)")
    parser.add_argument("--warmup", type=int, default=200, help="sends per warm-up round")
    parser.add_argument("--concurrency", type=int, default=64, help="sends called back at once")
    parser.add_argument("--idle-s", type=float, default=5.0, help="idle CPU measured this long")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy per round, into DIR")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    asyncio.run(main_async(parser.parse_args(argv if argv is not None else sys.argv[1:])))


if __name__ == "__main__":
    main()
