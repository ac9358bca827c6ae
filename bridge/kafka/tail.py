"""Read what is written to a topic from now on, on every partition, partitions added later too.

For answers meant for whichever replica holds a request: every replica reads every new record
(no consumer group, so no replica gets a share only), starting at the end of each partition
when it starts. The consumer re-reads the topic's metadata every ``refresh_s``; a partition
that appeared meanwhile is read from its beginning, since all it holds is new.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.config import KafkaSettings
from bridge.kafka.admin import create_topics
from bridge.kafka.closing import stop_following
from bridge.kafka.connection import FETCH_MAX_BYTES, connection_kwargs
from bridge.kafka.errors import BrokerError, kafka_errors
from bridge.kafka.records import Record

__all__ = ["TopicTail"]

log = logging.getLogger(__name__)
OnRecord = Callable[[Record], None]


class TopicTail:
    """Hands each record written to ``topic`` after ``start`` to ``on_record``, in order per
    partition, from a background task."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        on_record: OnRecord,
        *,
        refresh_s: float = 5.0,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._on_record = on_record
        self._refresh_s = refresh_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, partitions: int = 1) -> None:
        """Create the topic with ``partitions`` if missing, and follow it from its end."""
        settings = self._settings
        with kafka_errors(f"following {self.topic}"):
            await create_topics(
                settings.bootstrap_servers,
                [self.topic],
                partitions=partitions,
                **connection_kwargs(settings),
            )
            consumer = AIOKafkaConsumer(
                **connection_kwargs(settings),
                group_id=None,
                enable_auto_commit=False,
                # Kafka answers a fetch as soon as a record arrives; Tansu holds an empty one
                # for half of this, and an answer waits for it.
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                fetch_max_bytes=FETCH_MAX_BYTES,
                metadata_max_age_ms=int(self._refresh_s * 1000),
            )
            self._consumer = consumer
            await consumer.start()
            assigned = [TopicPartition(self.topic, p) for p in await self._partitions(consumer)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
        self._task = asyncio.create_task(self._follow(consumer))

    async def stop(self) -> None:
        """Stop following and disconnect."""
        await stop_following(self._task, self._consumer, f"stopping to tail {self.topic}")

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        # Assigning a partition makes the client track the topic's metadata: partition 0 is
        # there whatever the count.
        consumer.assign([TopicPartition(self.topic, 0)])
        for _ in range(50):
            found: set[int] | None = consumer.partitions_for_topic(self.topic)
            if found:
                return found
            await asyncio.sleep(0.1)
        raise BrokerError(f"following {self.topic}", "NoPartitions", retriable=True)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                await self._add_new_partitions(consumer)
            except KafkaError as exc:
                log.warning("reading %s failed (%s); retrying", self.topic, type(exc).__name__)
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for r in records:
                    record = Record(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        tuple(r.headers),
                        r.timestamp,
                    )
                    self._hand_over(record)

    def _hand_over(self, record: Record) -> None:
        try:
            self._on_record(record)
        except Exception:  # a bug there must not stop every later record
            log.exception(
                "handling %s[%d]@%d failed", record.topic, record.partition, record.offset
            )

    async def _add_new_partitions(self, consumer: AIOKafkaConsumer) -> None:
        """Follow the partitions the latest metadata shows and the assignment lacks."""
        found = consumer.partitions_for_topic(self.topic) or set()
        assigned = set(consumer.assignment())
        added = {TopicPartition(self.topic, p) for p in found} - assigned
        if not added:
            return
        # A new assignment forgets positions: keep the old partitions' own.
        positions = {tp: await consumer.position(tp) for tp in assigned}
        consumer.assign([*assigned, *added])
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        await consumer.seek_to_beginning(*added)
        log.info("%s: following %d new partitions", self.topic, len(added))
