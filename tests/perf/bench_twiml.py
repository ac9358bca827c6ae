"""Benchmark of the answer path: webhook in → event acknowledged → a responder answers at once
→ TwiML out, beside the plain webhook (static TwiML) and the broker's own produce → consume.

    python -m tests.perf.bench_twiml [--rates 50 200] [--seconds 10] [--waiting 400] [--no-pin]
    python -m tests.perf.bench_twiml responder BOOTSTRAP TOPIC      # the answering service

One Tansu broker; the real ``python -m bridge run`` on CPU 1 (``taskset``), everything else
(broker, responder, load generator, this process) on CPU 0. For each rate, signed inbound-SMS
webhooks (``webhook_load.signed_pool``) are sent open-loop, one every 1/rate s, each on its own
connection slot, and timed from send to answer: first to a bridge with
``BRIDGE_TWIML__FAMILIES=messages`` and a responder in its own process, then to one without
(the plain webhook), then records produced and consumed at the same rate with no bridge (one
Kafka hop). The answer path holds two hops (event to the responder, answer to the bridge)
beyond the plain webhook, so what the bridge adds is answer p50 − plain p50 − 2 × hop p50.
Memory per waiting webhook: ``--waiting`` webhooks held at once without a responder, the
bridge's RSS before and while they wait. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.tooling.local.tansu import TansuBroker, create_topics, free_port
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.perf.bench_bridge import BenchBridge, Pinning, load_average, percentile, stop_process
from tests.perf.webhook_load import signed_pool
from tests.support.harness import Topics

FAMILY = "messages"
FETCH_WAIT_MS = 10  # Tansu holds an empty fetch for half of it (tests/perf/README.md)
ANSWER = b"<Response><Message>Thanks, we got it.</Message></Response>"


@dataclass
class Paced:
    """One paced run: answer times in ms, statuses, and how many bodies were the answer."""

    name: str
    rate: int
    times_ms: list[float]
    statuses: Counter[int]
    answered: int = 0

    def row(self) -> str:
        p50, p99 = percentile(self.times_ms, 0.5), percentile(self.times_ms, 0.99)
        codes = ",".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        answered = f", {self.answered} with the responder's TwiML" if self.answered else ""
        return (
            f"{self.rate:>4}/s  {self.name:<28} n={len(self.times_ms):<5} p50 {p50:6.1f} ms  "
            f"p99 {p99:6.1f} ms  ({codes}{answered})"
        )


async def responder(bootstrap: str, topic: str) -> None:
    """Answer every awaited event at once, as README's responder does."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=FETCH_WAIT_MS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await asyncio.gather(consumer.start(), producer.start())
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: _report(lags))
    print("READY", flush=True)
    async for event in consumer:
        lags.append(time.time() * 1000 - event.timestamp)
        ce = {k[3:]: v.decode() for k, v in event.headers if k.startswith("ce_")}
        if "twimlreplyto" in ce:
            await producer.send(ce["twimlreplyto"], ANSWER, key=ce["id"].encode())


def _report(lags: list[float]) -> None:
    """On SIGTERM: how long events took from the bridge's send to this responder, then exit."""
    p50, p99 = percentile(lags, 0.5), percentile(lags, 0.99)
    print(
        f"        the responder read {len(lags)} events p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        "after the bridge sent them (hop 1)",
        flush=True,
    )
    os._exit(0)


async def paced_webhooks(name: str, base: str, rate: int, seconds: float) -> Paced:
    """Post ``rate`` × ``seconds`` distinct signed webhooks open-loop, ``1/rate`` s apart."""
    pool = signed_pool(base, FAMILY, AUTH_TOKEN, ACCOUNT, int(rate * seconds))
    run = Paced(name, rate, [], Counter())
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: bytes, headers: dict[str, str]) -> None:
            sent = time.perf_counter()
            async with session.post(
                f"{base}/webhooks/twilio/{FAMILY}", data=body, headers=headers
            ) as a:
                text = await a.read()
            run.times_ms.append((time.perf_counter() - sent) * 1000)
            run.statuses[a.status] += 1
            run.answered += text == ANSWER

        start = time.perf_counter()
        tasks = []
        for n, (body, headers) in enumerate(pool):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(body, headers)))
        await asyncio.gather(*tasks)
    return run


async def kafka_hop(bootstrap: str, rate: int, seconds: float) -> Paced:
    """Records produced ``1/rate`` s apart, timed from send to a consumer reading them."""
    topic = f"hop-{rate}-{time.monotonic_ns()}"
    await create_topics(bootstrap, [topic])
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=FETCH_WAIT_MS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await asyncio.gather(consumer.start(), producer.start())
    total = int(rate * seconds)
    run = Paced("Kafka produce → consume", rate, [], Counter())

    async def read() -> None:
        async for record in consumer:
            sent = json.loads(record.value)["sent"]
            run.times_ms.append((time.perf_counter() - sent) * 1000)
            if len(run.times_ms) == total:
                return

    try:
        reading = asyncio.create_task(read())
        await asyncio.sleep(1)  # the consumer has its partition
        start = time.perf_counter()
        for n in range(total):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            await producer.send(topic, json.dumps({"sent": time.perf_counter()}).encode())
        await asyncio.wait_for(reading, 30)
        run.statuses[200] = total
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())
    return run


async def answer_seconds(base: str) -> tuple[float, float]:
    """(sum, count) of the bridge's histogram of acknowledgement-to-answer times."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as answer:
        text = await answer.text()
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f"twilio_bridge_twiml_answer_duration_seconds_{part}{{"):
                found[part] += float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def waiting_memory(bridge: BenchBridge, count: int) -> str:
    """The bridge's RSS per webhook waiting for an answer that does not come."""
    assert bridge.process is not None
    pid, base = bridge.process.pid, bridge.http_url
    pool = signed_pool(base, FAMILY, AUTH_TOKEN, ACCOUNT, count)
    before = rss_kb(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(body: bytes, headers: dict[str, str]) -> int:
            async with session.post(
                f"{base}/webhooks/twilio/{FAMILY}", data=body, headers=headers
            ) as a:
                return a.status

        tasks = [asyncio.create_task(one(b, h)) for b, h in pool]
        await asyncio.sleep(4)  # all published, all waiting (the deadline is 8 s)
        during = rss_kb(pid)
        statuses = Counter(await asyncio.gather(*tasks))
    per = (during - before) * 1024 / count
    return (
        f"{count} webhooks waiting at once: RSS {before / 1024:.1f} → {during / 1024:.1f} MB, "
        f"{per / 1024:.1f} KiB per waiting webhook (HTTP connection and request included); "
        f"then {dict(statuses)}"
    )


async def start_bridge(
    bootstrap: str, workdir: Path, pinning: Pinning, name: str, env: dict[str, str]
) -> BenchBridge:
    topics = Topics.fresh()
    await topics.create(bootstrap)
    prefix = f"ev-{topics.group}."
    await create_topics(bootstrap, [prefix + FAMILY])
    BenchBridge.pinning = pinning
    bridge = BenchBridge(
        bootstrap,
        "http://127.0.0.1:9",
        topics,
        workdir / f"{name}.log",
        {
            "BRIDGE_WEBHOOK__TOPIC_PREFIX": prefix,
            "BRIDGE_KAFKA__FETCH_MAX_WAIT_MS": str(FETCH_WAIT_MS),
            "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "6000",
            **env,
        },
        http_port=free_port(),
    ).start()
    await bridge.wait_ready(60)
    return bridge


async def answer_path(
    bootstrap: str, workdir: Path, pinning: Pinning, ns: argparse.Namespace
) -> tuple[list[Paced], str]:
    twiml_topic = f"twiml-{time.monotonic_ns()}"
    env = {"BRIDGE_TWIML__FAMILIES": FAMILY, "BRIDGE_TWIML__TOPIC": twiml_topic}
    bridge = await start_bridge(bootstrap, workdir, pinning, "answer", env)
    events = f"ev-{bridge.topics.group}.{FAMILY}"
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.perf.bench_twiml",
        "responder",
        bootstrap,
        events,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert service.stdout is not None
        await asyncio.wait_for(service.stdout.readline(), 30)
        # Until the responder's consumer has its partition, webhooks get the fallback.
        deadline = time.monotonic() + 30
        while (await paced_webhooks("warm-up", bridge.http_url, 5, 1)).answered < 5:
            assert time.monotonic() < deadline, "the responder never answered"
        runs = []
        for rate in ns.rates:
            before = await answer_seconds(bridge.http_url)
            runs.append(await paced_webhooks("answer path", bridge.http_url, rate, ns.seconds))
            after = await answer_seconds(bridge.http_url)
            count = after[1] - before[1]
            mean = (after[0] - before[0]) / count * 1000 if count else float("nan")
            print(
                f"        {rate}/s: the bridge read each answer {mean:.1f} ms (mean) after the ack"
            )
    finally:
        service.terminate()
        assert service.stdout is not None
        print((await service.stdout.read()).decode().strip())
        await service.wait()
    memory = await waiting_memory(bridge, ns.waiting)
    assert bridge.process is not None
    stop_process(bridge.process)
    return runs, memory


async def plain_path(
    bootstrap: str, workdir: Path, pinning: Pinning, ns: argparse.Namespace
) -> list[Paced]:
    bridge = await start_bridge(bootstrap, workdir, pinning, "plain", {})
    try:
        await paced_webhooks("warm-up", bridge.http_url, 5, 1)
        return [
            await paced_webhooks("plain webhook (static TwiML)", bridge.http_url, rate, ns.seconds)
            for rate in ns.rates
        ]
    finally:
        assert bridge.process is not None
        stop_process(bridge.process)


async def main_async(ns: argparse.Namespace) -> None:
    pinning = Pinning.choose(ns.pin)
    if pinning.others is not None:
        os.sched_setaffinity(0, {pinning.others})  # children inherit it; the bridge is moved
    print(f"load average {load_average()}; {pinning.describe()}; figures, never asserted")
    workdir = Path(tempfile.mkdtemp(prefix="bench-twiml-"))
    async with TansuBroker(log_dir=workdir) as broker:
        bootstrap = broker.bootstrap_servers
        answers, memory = await answer_path(bootstrap, workdir, pinning, ns)
        plain = await plain_path(bootstrap, workdir, pinning, ns)
        hops = [await kafka_hop(bootstrap, rate, ns.seconds) for rate in ns.rates]
    for answer, webhook, hop in zip(answers, plain, hops, strict=True):
        for run in (answer, webhook, hop):
            print(run.row())
        p50 = [percentile(r.times_ms, 0.5) for r in (answer, webhook, hop)]
        added = p50[0] - p50[1] - 2 * p50[2]
        print(
            f"{answer.rate:>4}/s  the answer path beyond the plain webhook and two Kafka hops, "
            f"p50: {added:.1f} ms"
        )
    print(memory)
    print(f"load average {load_average()}; logs in {workdir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--waiting", type=int, default=400)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["responder"]:
        asyncio.run(responder(argv[1], argv[2]))
        return
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
