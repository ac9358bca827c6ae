"""Read a whole topic from its beginning, then keep following it: the state every replica shares.

Used for state that must survive restarts and be seen by every replica without local disk
(webhook ids published, outbound request outcomes): each replica reads the topic at start-up
and follows it; ``catch_up`` waits until everything written before the call has been read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.config import KafkaSettings
from bridge.kafka.admin import create_topic
from bridge.kafka.closing import stop_consumer
from bridge.kafka.connection import FETCH_MAX_BYTES, connection_kwargs
from bridge.kafka.errors import kafka_errors
from bridge.kafka.retry import until_taken

__all__ = ["TopicFollower"]

OnRecord = Callable[[Any], None]
_FETCH_MAX_WAIT_MS = 100
# Records handed over per fetch: each is an object with its whole value (a reply, for the
# idempotency log) until handled, so a large backlog is read a slice at a time.
_MAX_RECORDS = 1_000


class TopicFollower:
    """Feeds every record of ``topic``, old and new, to ``on_record``, in a background task."""

    def __init__(self, settings: KafkaSettings, topic: str, on_record: OnRecord) -> None:
        self._settings = settings
        self.topic = topic
        self._on_record = on_record
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()

    async def start(self, partitions: int, configs: Mapping[str, str]) -> None:
        """Create the topic if missing, assign all of it, read it to its end, then follow.

        Raises ``BrokerError`` when any of it fails.
        """
        await create_topic(self._settings, self.topic, partitions, configs)
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings),
            group_id=None,
            enable_auto_commit=False,
            # A broker answers catch_up's offset request only after the fetch it holds on the
            # same connection: with the default 500 ms, requests waited ~400 ms for every
            # rebalance (Tansu holds a fetch for half the wait).
            fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
            fetch_max_bytes=FETCH_MAX_BYTES,
        )
        with kafka_errors(f"starting to follow {self.topic}"):
            await consumer.start()
            self._consumer = consumer
            assigned = [TopicPartition(self.topic, p) for p in await self._partitions(consumer)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
        self._task = asyncio.create_task(self._follow(consumer))
        await self.catch_up()

    async def catch_up(self) -> None:
        """Return once every record written before this call has been handed over.

        Raises ``BrokerError`` when the broker does not tell where the topic ends.
        """
        consumer = self._consumer
        assert consumer is not None, "start() first"
        with kafka_errors(f"catching up with {self.topic}"):
            ends = await consumer.end_offsets(list(consumer.assignment()))
            for tp, end in ends.items():
                while await consumer.position(tp) < end:
                    self._progress.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._progress.wait(), 1.0)

    async def stop(self) -> None:
        """Stop following and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await stop_consumer(self._consumer, f"stopping to follow {self.topic}")

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        for _ in range(50):  # metadata for a topic just created takes a moment
            found: set[int] | None = consumer.partitions_for_topic(self.topic)
            if found:
                return found
            # The consumer has no public refresh; its client's is what partitions_for_topic reads.
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise KafkaError(f"topic {self.topic} has no partitions")

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await until_taken(lambda: self._fetch(consumer), f"reading {self.topic}")
            for records in batches.values():
                for record in records:
                    self._on_record(record)
            self._progress.set()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        with kafka_errors(f"reading {self.topic}"):
            batches: dict[TopicPartition, list[Any]] = await consumer.getmany(
                timeout_ms=500, max_records=_MAX_RECORDS
            )
        return batches
