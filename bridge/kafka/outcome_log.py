"""The outcome of every state-changing request, shared by all replicas through one Kafka topic.

Before a POST/PUT/PATCH/DELETE goes to Twilio, a *started* record with the request id is
acknowledged by Kafka; once the reply exists, the reply itself is written as the *answered*
record. Every replica reads the topic at start-up and follows it, so a redelivered or resent
id, on any replica and after any restart, finds what became of it: the first reply to answer
with, or a start without an answer (the process died while sending: the outcome is unknown).
Only digests and offsets are held in memory; a first reply is read back from Kafka when a
duplicate needs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.idempotency import Answered, OutcomeIndex, Prior
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.follower import TopicFollower
from bridge.kafka.producer import Publisher
from bridge.settings import DedupeSettings, KafkaSettings

__all__ = ["OutcomeLog"]

log = logging.getLogger(__name__)
_STATE = "state"
_STARTED = b"started"
_ANSWERED = b"answered"


class OutcomeLog:
    """Records starts and answers of state-changing requests; tells a duplicate what happened."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: DedupeSettings,
        publisher: Publisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._publisher = publisher
        self._clock = clock
        self._index = OutcomeIndex(settings.window_s)
        self._follower = TopicFollower(kafka, settings.topic, self._read)
        # Requests with a given id being sent by this process right now.
        self._running: dict[str, asyncio.Future[None]] = {}
        self._reader: AIOKafkaConsumer | None = None
        self._reading = asyncio.Lock()
        self._synced: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._index)

    async def start(self) -> None:
        """Create the topic if needed and read every outcome of the window."""
        retention = str(int(self._settings.window_s * 1000))
        # Compacted (the answer replaces the start) and deleted after the window.
        configs = {"cleanup.policy": "compact,delete", "retention.ms": retention}
        await self._follower.start(self._settings.partitions, configs)
        log.info(
            "outbound dedupe: %d request ids of the last %.0f s",
            len(self),
            self._settings.window_s,
        )

    def resync(self) -> None:
        """Read every outcome written so far before the next ``check`` answers.

        Called when request partitions are assigned: what their previous owner recorded must
        be known before their requests run again.
        """
        self._synced = asyncio.create_task(self._catch_up())

    async def _catch_up(self) -> None:
        # A broker outage delays requests here; it must not turn into a wrong answer.
        while True:
            try:
                await self._follower.catch_up()
                return
            except KafkaError as exc:
                log.warning(
                    "outbound dedupe: catching up failed (%s); retrying", type(exc).__name__
                )
                await asyncio.sleep(1)

    async def check(self, request_id: str) -> Prior | None:
        """What became of ``request_id`` before, once any send of it here has finished."""
        if self._synced is not None and not self._synced.done():
            await asyncio.shield(self._synced)
        while (running := self._running.get(request_id)) is not None:
            await asyncio.shield(running)
        return self._index.prior(request_id, self._clock())

    async def begin(self, request_id: str) -> None:
        """Record, acknowledged by Kafka, that ``request_id`` is about to be sent."""
        self._running[request_id] = asyncio.get_running_loop().create_future()
        key = request_id.encode()
        await self._publisher.publish(self._settings.topic, key, b"", [(_STATE, _STARTED)])
        self._index.record(request_id, "started", self._clock())

    async def finish(self, request_id: str, reply: bytes) -> None:
        """Record the reply as ``request_id``'s answer, then let waiting duplicates see it."""
        topic = self._settings.topic
        partition, offset = await self._publisher.publish(
            topic, request_id.encode(), reply, [(_STATE, _ANSWERED)]
        )
        self._index.record(request_id, "answered", self._clock(), partition, offset)
        self.release(request_id)

    def release(self, request_id: str) -> None:
        """End this process's send of ``request_id`` (answered or not)."""
        running = self._running.pop(request_id, None)
        if running is not None and not running.done():
            running.set_result(None)

    async def first_reply(self, answered: Answered) -> bytes | None:
        """The reply recorded for an answered id, read back from Kafka (None if gone)."""
        tp = TopicPartition(self._settings.topic, answered.partition)
        async with self._reading:
            while True:
                try:
                    reader = await self._started_reader()
                    reader.assign([tp])
                    reader.seek(tp, answered.offset)
                    batch = await reader.getmany(tp, timeout_ms=5000, max_records=1)
                    break
                except KafkaError as exc:
                    # Never "not found" for a read that failed: that would send again.
                    log.warning("outbound dedupe: reading a reply failed (%s)", type(exc).__name__)
                    await asyncio.sleep(1)
        records = batch.get(tp, [])
        if not records or records[0].offset != answered.offset:
            return None  # compacted away or expired meanwhile
        value: bytes = records[0].value
        return value

    async def _started_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                **connection_kwargs(self._kafka), group_id=None, enable_auto_commit=False
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def stop(self) -> None:
        """Stop following; release anything still waiting."""
        for request_id in list(self._running):
            self.release(request_id)
        if self._synced is not None:
            self._synced.cancel()
        await self._follower.stop()
        if self._reader is not None:
            await self._reader.stop()

    def _read(self, record: Any) -> None:
        if record.key is None:
            return
        state = dict(record.headers or ()).get(_STATE)
        at = record.timestamp / 1000
        request_id = record.key.decode(errors="replace")
        if state == _ANSWERED:
            self._index.record(request_id, "answered", at, record.partition, record.offset)
        elif state == _STARTED:
            self._index.record(request_id, "started", at)
