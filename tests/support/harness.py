"""Drive the real ``twilio-bridge run`` process and talk to its topics (integration tests, perf)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.tooling.local.tansu import create_topics, free_port

__all__ = [
    "BridgeProcess",
    "Received",
    "TopicReader",
    "Topics",
    "collect",
    "counted_post",
    "forward_id",
    "committed",
    "produce",
    "run_through_mock",
]

from tests.helpers import ACCOUNT, AUTH_TOKEN


@dataclass
class Topics:
    """Fresh topic names for one test, so tests never see each other's records."""

    requests: str
    replies: str
    errors: str
    group: str

    @classmethod
    def fresh(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"req-{tag}", f"rep-{tag}", f"err-{tag}", f"group-{tag}")

    async def create(self, bootstrap: str, partitions: int = 1) -> None:
        await create_topics(bootstrap, [self.requests], partitions=partitions)
        await create_topics(bootstrap, [self.replies, self.errors], partitions=partitions)


@dataclass
class BridgeProcess:
    """``python -m bridge run`` with test settings; logs go to a file the test can print."""

    bootstrap: str
    base_url: str
    topics: Topics
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    http_port: int = field(default_factory=free_port)
    # Out of the terminal's process group, so that a Ctrl-C reaches only the parent.
    own_session: bool = False

    @property
    def http_url(self) -> str:
        """Where the bridge's HTTP app listens."""
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            {
                "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "BRIDGE_KAFKA__REQUEST_TOPICS": self.topics.requests,
                "BRIDGE_KAFKA__REPLY_TOPIC": self.topics.replies,
                "BRIDGE_KAFKA__ERROR_TOPIC": self.topics.errors,
                "BRIDGE_KAFKA__GROUP_ID": self.topics.group,
                "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER": "false",
                "BRIDGE_KAFKA__COMMIT_INTERVAL_S": "0.2",
                # Tansu holds an empty fetch about half of this, whatever arrives meanwhile.
                "BRIDGE_KAFKA__FETCH_MAX_WAIT_MS": "10",
                # Tansu holds a group's first join for half the session timeout (23 s at the
                # 45 s default), and a killed member is only dropped once it expires.
                "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": "6000",
                "BRIDGE_TWILIO__BASE_URL": self.base_url,
                "BRIDGE_CREDENTIALS__DEFAULT__ACCOUNT_SID": ACCOUNT,
                "BRIDGE_CREDENTIALS__DEFAULT__AUTH_TOKEN": AUTH_TOKEN,
                "BRIDGE_PROCESSING__SHUTDOWN_GRACE_S": "10",
                # Prism answers one request at a time; 256 connections to it only churn, and
                # its accept queue overflows into "connection reset" (measured: 24 of 1397
                # POSTs reset at 256 connections, none at 32, and 32 is faster).
                "BRIDGE_TWILIO__MAX_CONNECTIONS": "32",
                "BRIDGE_HTTP__HOST": "127.0.0.1",
                "BRIDGE_HTTP__PORT": str(self.http_port),
                # No load balancer to wait for; tests that test the delay set their own.
                "BRIDGE_HTTP__DRAIN_DELAY_S": "0",
                # Each test's own, so one test's webhooks are never another's duplicates.
                "BRIDGE_WEBHOOK__DEDUPE_TOPIC": f"seen-{self.topics.group}",
                "BRIDGE_DEDUPE__TOPIC": f"outcomes-{self.topics.group}",
                "BRIDGE_DEDUPE__ANSWERS_TOPIC": f"answers-{self.topics.group}",
                "BRIDGE_DEDUPE__PARTITIONS": "2",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> BridgeProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, within_s: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(within_s)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_ready(self, within_s: float = 30) -> None:
        """Until ``/readyz`` answers 200; fails with the end of the log after ``within_s``, or
        as soon as the process has exited."""
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise AssertionError("bridge exited:\n" + self.log()[-3000:])
                try:
                    if (await http.get(f"{self.http_url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("bridge never ready:\n" + self.log()[-3000:])


Headers = list[tuple[str, bytes]]


async def produce(
    bootstrap: str,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes | None]],
    headers: Callable[[bytes | None], Headers] | None = None,
) -> None:
    """Publish (key, value) pairs in order, with ``headers(key)`` if given; wait for acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers(key) if headers else None)
            for key, value in items
        ]
        for fut in futures:
            await fut
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Received:
    key: bytes | None
    value: Any
    headers: dict[str, bytes]
    partition: int
    offset: int


async def collect(
    bootstrap: str, topic: str, want: int, within_s: float = 60, *, settle_s: float = 0.0
) -> list[Received]:
    """Read ``topic`` from the start until ``want`` records arrived (or time is up).

    With ``settle_s``, keep reading that long after reaching ``want`` to catch extras.
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Received] = []
    try:
        deadline = time.monotonic() + within_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if len(found) >= want:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    found.append(
                        Received(r.key, json.loads(r.value), dict(r.headers), r.partition, r.offset)
                    )
    finally:
        await consumer.stop()
    return found


class TopicReader:
    """Reads ``topic`` from its start in the background while open (``async with``), keeping
    every record; survives a broker restart.

    It counts the records it read and never asks for an end offset: Tansu on S3 storage can
    answer ListOffsets with a stale one.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[Received] = []
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
        )
        self._grew = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.gather(self._task or asyncio.sleep(0), return_exceptions=True)
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200)
            except KafkaError:  # the broker is down: try again
                await asyncio.sleep(0.2)
                continue
            for records in batch.values():
                for r in records:
                    value = json.loads(r.value) if r.value else None
                    self.records.append(
                        Received(r.key, value, dict(r.headers), r.partition, r.offset)
                    )
            if batch:
                self._grew.set()

    def ids(self) -> Counter[str]:
        """Records per ``id`` of their JSON value."""
        return Counter(r.value["id"] for r in self.records if isinstance(r.value, dict))

    async def until(self, condition: Callable[[TopicReader], bool], within_s: float) -> None:
        """Return once ``condition(self)`` holds; AssertionError after ``within_s``."""
        deadline = time.monotonic() + within_s
        while not condition(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not reached in {within_s} s ({len(self.records)} read)")
            self._grew.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grew.wait(), min(left, 1.0))


async def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int]:
    """The group's committed offsets for each partition of ``topic`` (-1 when none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        out = []
        for p in range(partitions):
            off = await consumer.committed(TopicPartition(topic, p))
            out.append(-1 if off is None else off)
        return out
    finally:
        await consumer.stop()


async def run_through_mock(
    bootstrap: str,
    base_url: str,
    tmp_path: Path,
    envelopes: list[tuple[bytes | None, bytes | None]],
    env: dict[str, str],
    headers: Callable[[bytes | None], Headers],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run every envelope through a fresh bridge against ``fast_twilio``: replies by id, stats.

    ``headers(key)`` gives each record's headers, for the envelope to forward to the mock.
    """
    topics = Topics.fresh()
    await topics.create(bootstrap, 2)
    bridge = BridgeProcess(bootstrap, base_url, topics, tmp_path / "bridge.log", env).start()
    try:
        await produce(bootstrap, topics.requests, envelopes, headers)
        replies = await collect(bootstrap, topics.replies, len(envelopes), 90)
    finally:
        assert bridge.stop() == 0
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{base_url}/__stats")).json()
    by_id = {r.value["id"]: r.value for r in replies}
    assert len(by_id) == len(envelopes), bridge.log()[-3000:]
    return by_id, stats


def counted_post(n: int, tag: str = "post") -> tuple[bytes, bytes]:
    """(key, value) of a CreateMessage envelope ``tag-n`` that forwards its id as
    ``I-Request-Id``, which ``fast_twilio`` counts: a second call for it would show."""
    envelope: dict[str, Any] = {
        "id": f"{tag}-{n}",
        "mode": "basic",
        "operation": "CreateMessage",
        "body": {"To": "+14155550100", "From": "+14155550101", "Body": f"hello {n}"},
        "request_headers": ["I-Request-Id"],
    }
    return envelope["id"].encode(), json.dumps(envelope).encode()


def forward_id(key: bytes | None) -> Headers:
    """Record headers for ``counted_post``: its key (the id) as ``I-Request-Id``."""
    return [("I-Request-Id", key or b"")]
