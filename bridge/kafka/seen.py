"""Ids published in the last window, shared by every replica through one Kafka topic.

A replica that published an event writes its id to the topic; every replica reads the whole
topic at start-up and then follows it, so a Twilio retry that reaches another replica, or this
one after a restart, is recognised. Nothing is kept on local disk. The topic is created when
missing, with time retention equal to the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.dedupe import SeenWindow
from bridge.kafka.admin import create_topics
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.producer import Publisher
from bridge.settings import KafkaSettings

__all__ = ["SeenLog"]

log = logging.getLogger(__name__)


class SeenLog:
    """The ids of the last ``window_s`` seconds, local and shared through ``topic``."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        window_s: float,
        publisher: Publisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._window = SeenWindow(window_s)
        self._publisher = publisher
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task[None] | None = None
        self._sharing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._window)

    def contains(self, key: str) -> bool:
        """True when ``key`` was published by any replica within the window."""
        return self._window.contains(key, self._clock())

    def add(self, key: str) -> None:
        """Remember ``key`` here at once, and tell the other replicas in the background."""
        self._window.add(key, self._clock())
        task = asyncio.create_task(self._publisher.publish(self.topic, key.encode(), b"", []))
        self._sharing.add(task)
        task.add_done_callback(self._sharing.discard)

    async def start(self) -> None:
        """Create the topic if needed, read what it holds, then follow it in the background."""
        retention = str(int(self._window.window_s * 1000))
        await create_topics(
            self._settings.bootstrap_servers,
            [self.topic],
            configs={"cleanup.policy": "delete", "retention.ms": retention},
            **connection_kwargs(self._settings),
        )
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        self._consumer = consumer
        partitions = [TopicPartition(self.topic, p) for p in await self._partitions(consumer)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                await self._read(consumer, timeout_ms=500)
        log.info("dedupe: %d ids seen in the last %.0f s", len(self), self._window.window_s)
        self._follow = asyncio.create_task(self._follow_topic(consumer))

    async def stop(self, grace_s: float = 5.0) -> None:
        """Finish telling the others what was seen (within ``grace_s``), stop following."""
        if self._sharing:
            await asyncio.wait(self._sharing, timeout=grace_s)
        for task in self._sharing:
            task.cancel()
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        if self._consumer is not None:
            await self._consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        for _ in range(50):  # metadata for a topic just created takes a moment
            found: set[int] | None = consumer.partitions_for_topic(self.topic)
            if found:
                return found
            await consumer.force_metadata_update()
            await asyncio.sleep(0.1)
        raise KafkaError(f"topic {self.topic} has no partitions")

    async def _follow_topic(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._read(consumer, timeout_ms=1000)
            except KafkaError as exc:
                log.warning("dedupe: reading %s failed (%s)", self.topic, type(exc).__name__)
                await asyncio.sleep(1)

    async def _read(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        for records in batches.values():
            for record in records:
                if record.key is not None:
                    self._window.add(record.key.decode(errors="replace"), record.timestamp / 1000)
