"""Read records of a topic back by their place (partition and offset), or a whole partition.

For a record whose place was noted when it was written or read (the idempotency log's first
reply to a request), or a partition searched now and then: one consumer, outside any group,
started on the first read and pointed at each place in turn, so reads take turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.config import KafkaSettings
from bridge.kafka.closing import stop_consumer
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.errors import BrokerError, kafka_errors
from bridge.kafka.records import Record

__all__ = ["RecordLookup"]

# How long one read waits for the broker to hand the record over.
_READ_TIMEOUT_MS = 5000
# Records a scan takes from one fetch.
_SCAN_RECORDS = 1000


class RecordLookup:
    """Reads the record at a given offset of ``topic``."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._settings = settings
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._reading = asyncio.Lock()  # the consumer reads one place at a time

    async def read(self, partition: int, offset: int) -> Record | None:
        """The record at ``offset`` of ``partition``, or None when it is no longer there
        (compacted away or expired); raises ``BrokerError`` when the read fails, including
        when the broker hands nothing over in time for a place that its log still covers."""
        tp = TopicPartition(self.topic, partition)
        what = f"reading {self.topic}/{partition} at {offset}"
        async with self._reading:
            with kafka_errors(what):
                consumer = await self._started()
                consumer.assign([tp])
                consumer.seek(tp, offset)
                batch = await consumer.getmany(tp, timeout_ms=_READ_TIMEOUT_MS, max_records=1)
                records = batch.get(tp, [])
                if records:
                    # A later record: this one was compacted away, or deleted and read from
                    # the partition's start.
                    return Record.of(records[0]) if records[0].offset == offset else None
                start = (await consumer.beginning_offsets([tp]))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
        if offset < start or offset >= end:
            return None  # deleted by retention, or not in the log (any more)
        # Nothing in time, though the log covers the place (a broker slow after a restart):
        # a read that failed, never "gone", which would send a request again or drop a send.
        timed_out = f"no record within {_READ_TIMEOUT_MS} ms"
        raise BrokerError(what, "ReadTimeout", timed_out, retriable=True)

    async def scan(
        self, partition: int, start: int | None, on_record: Callable[[Record], bool]
    ) -> None:
        """Hand ``on_record`` every record of ``partition`` from offset ``start`` (its
        beginning when None) up to at least its end as it is now, until it returns True;
        raises ``BrokerError`` when a read fails.

        Whole fetches are handed over, never cut at the end offset: Tansu answers the end
        offset of a partition as the first offset of its last batch plus one.
        """
        tp = TopicPartition(self.topic, partition)
        what = f"reading {self.topic}/{partition}"
        async with self._reading:
            with kafka_errors(what):
                consumer = await self._started()
                consumer.assign([tp])
                end = (await consumer.end_offsets([tp]))[tp]
                if start is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, start)
            while True:
                with kafka_errors(what):
                    if await consumer.position(tp) >= end:
                        return
                    batch = await consumer.getmany(
                        tp, timeout_ms=_READ_TIMEOUT_MS, max_records=_SCAN_RECORDS
                    )
                for raw in batch.get(tp, []):
                    if on_record(Record.of(raw)):
                        return

    async def stop(self) -> None:
        """Disconnect, if a read ever connected."""
        if self._consumer is not None:
            await stop_consumer(self._consumer, f"stopping to read {self.topic}")

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **connection_kwargs(self._settings),
                group_id=None,
                enable_auto_commit=False,
                # A place already deleted by retention reads from the partition's start: the
                # record at it is gone, and a scan from it misses nothing still there.
                auto_offset_reset="earliest",
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer
