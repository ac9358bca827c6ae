"""Read a whole topic from its beginning, then keep following it: the state every replica shares.

Used for state that must survive restarts and be seen by every replica without local disk
(webhook ids published, outbound request outcomes): each replica reads the topic at start-up
and follows it; ``catch_up`` waits until everything written before the call has been read. A
follower may follow only some partitions, and change which (``follow``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.config import KafkaSettings
from bridge.kafka.admin import create_topic
from bridge.kafka.closing import stop_following
from bridge.kafka.connection import FETCH_MAX_BYTES, connection_kwargs
from bridge.kafka.errors import kafka_errors
from bridge.kafka.retry import until_taken

__all__ = ["MAX_RECORDS", "TopicFollower"]

OnRecord = Callable[[Any], None]
_FETCH_MAX_WAIT_MS = 100
# Records handed over per fetch: each is an object with its whole value until handled, so a
# large backlog is read a slice at a time (a broker may answer a fetch with far more than
# fetch_max_bytes: Tansu does).
MAX_RECORDS = 1_000


class TopicFollower:
    """Feeds every record of ``topic``, old and new, to ``on_record``, in a background task."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        on_record: OnRecord,
        *,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._on_record = on_record
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self.partitions: frozenset[int] = frozenset()  # the topic's, once started
        # Per partition followed: the offset after the last record handed over.
        self._next: dict[TopicPartition, int] = {}

    async def start(
        self,
        partitions: int,
        configs: Mapping[str, str],
        *,
        follow: Collection[int] | None = None,
        wait: bool = True,
    ) -> None:
        """Create the topic if missing, assign it (only the partitions in ``follow`` when
        given), read it to its end unless ``wait`` is false, then follow.

        Raises ``BrokerError`` when any of it fails.
        """
        await create_topic(self._settings, self.topic, partitions, configs)
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings),
            group_id=None,
            enable_auto_commit=False,
            # A partition assigned later starts at its beginning even if a fetch comes first.
            auto_offset_reset="earliest",
            # A broker answers catch_up's offset request only after the fetch it holds on the
            # same connection: with the default 500 ms, requests waited ~400 ms for every
            # rebalance (Tansu holds a fetch for half the wait).
            fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
            fetch_max_bytes=FETCH_MAX_BYTES,
        )
        with kafka_errors(f"starting to follow {self.topic}"):
            await consumer.start()
            self._consumer = consumer
            self.partitions = frozenset(await self._partitions(consumer))
            chosen = self.partitions if follow is None else self.partitions & set(follow)
            assigned = [TopicPartition(self.topic, p) for p in chosen]
            consumer.assign(assigned)
            if assigned:
                await consumer.seek_to_beginning(*assigned)
        self._task = asyncio.create_task(self._follow(consumer))
        if wait:
            await self.catch_up()

    async def follow(self, partitions: Collection[int]) -> None:
        """Follow only ``partitions`` from now on: those followed already go on from where
        they are, the others are read from their beginning. Raises ``BrokerError``."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        wanted = {TopicPartition(self.topic, p) for p in partitions if p in self.partitions}
        current = consumer.assignment()
        if wanted == current:
            return
        kept = {tp: self._next[tp] for tp in wanted & current if tp in self._next}
        with kafka_errors(f"following {self.topic}"):
            # A new assignment forgets every position: the kept ones are set again at once.
            consumer.assign(list(wanted))
            for tp, offset in kept.items():
                consumer.seek(tp, offset)
            new = wanted - set(kept)
            if new:
                await consumer.seek_to_beginning(*new)
        for tp in current - wanted:
            self._next.pop(tp, None)

    async def catch_up(self) -> None:
        """Return once every record written before this call has been handed over.

        Raises ``BrokerError`` when the broker does not tell where the topic ends.
        """
        consumer = self._consumer
        assert consumer is not None, "start() first"
        assigned = list(consumer.assignment())
        if not assigned:
            return
        with kafka_errors(f"catching up with {self.topic}"):
            ends = await consumer.end_offsets(assigned)
            for tp, end in ends.items():
                while await consumer.position(tp) < end:
                    self._progress.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._progress.wait(), 1.0)

    async def stop(self) -> None:
        """Stop following and disconnect."""
        await stop_following(self._task, self._consumer, f"stopping to follow {self.topic}")

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
            for tp, records in batches.items():
                for record in records:
                    self._on_record(record)
                if records:
                    self._next[tp] = records[-1].offset + 1
            self._progress.set()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        with kafka_errors(f"reading {self.topic}"):
            batches: dict[TopicPartition, list[Any]] = await consumer.getmany(
                timeout_ms=500, max_records=self._max_records
            )
        return batches
