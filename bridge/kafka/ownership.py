"""A state topic's partitions shared out by a consumer group, each read from its start by its owner.

A compacted topic keeps the latest state of each key, every key in one partition; replicas that
join one group on it own each partition (and so each key) one at a time. A new owner reads its
partitions from the beginning, because that is where the states are, and ``caught_up`` tells
when it has read what was there when it got them: a restart or a rebalance neither replays
history nor skips anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from bridge.config import KafkaSettings
from bridge.kafka.admin import create_topic
from bridge.kafka.closing import stop_consumer
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.errors import kafka_errors
from bridge.kafka.records import Record

__all__ = ["OwnedPartitions"]

log = logging.getLogger(__name__)


class OwnedPartitions:
    """This replica's share of ``topic``'s partitions, as a member of ``group_id``; ``owner``
    says whose share it is in the log."""

    def __init__(self, settings: KafkaSettings, topic: str, group_id: str, owner: str) -> None:
        self._settings = settings
        self.topic = topic
        self._group_id = group_id
        self.owner = owner
        self._consumer: AIOKafkaConsumer | None = None
        self._ends: dict[int, int] = {}  # partition → end offset to read before owning it
        # Counts assignments: a change tells that the partitions are being read again.
        self.assignments = 0

    async def start(self, partitions: int, configs: Mapping[str, str]) -> None:
        """Create the topic if missing and join the group; raises ``BrokerError`` when either
        fails."""
        await create_topic(self._settings, self.topic, partitions, configs)
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._settings.session_timeout_ms,
        )
        self._consumer = consumer
        consumer.subscribe([self.topic], listener=_Reread(self, consumer))
        with kafka_errors(f"joining the group of {self.topic}"):
            await consumer.start()

    async def stop(self) -> None:
        """Leave the group."""
        if self._consumer is not None:
            await stop_consumer(self._consumer, f"leaving the group of {self.topic}")

    def owned(self) -> set[int]:
        """The partitions assigned to this replica now."""
        assert self._consumer is not None, "start() first"
        return {tp.partition for tp in self._consumer.assignment()}

    async def caught_up(self, partition: int) -> bool:
        """True once the records that were in ``partition`` when it was assigned have been
        read; raises ``BrokerError`` when the broker does not tell."""
        assert self._consumer is not None, "start() first"
        end = self._ends.get(partition)
        if end is None:
            return False
        with kafka_errors(f"reading the position in {self.topic}"):
            position: int = await self._consumer.position(TopicPartition(self.topic, partition))
        return position >= end

    async def fetch(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        """The records that came within ``timeout_ms``, at most ``max_records`` (the rest
        come next time); raises ``BrokerError`` when the fetch fails."""
        assert self._consumer is not None, "start() first"
        with kafka_errors(f"reading {self.topic}"):
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [Record.of(raw) for records in batches.values() for raw in records]


class _Reread(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, read each partition from the start: that is where the states are."""

    def __init__(self, owner: OwnedPartitions, consumer: AIOKafkaConsumer) -> None:
        self._owner = owner
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self._owner._ends.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._owner.assignments += 1
        owned = sorted(tp.partition for tp in assigned)
        log.info("%s: owns state partitions %s", self._owner.owner, owned)
        if not assigned:
            return
        await self._consumer.seek_to_beginning(*assigned)
        ends = await self._consumer.end_offsets(assigned)
        for tp in assigned:
            self._owner._ends[tp.partition] = ends[tp]
