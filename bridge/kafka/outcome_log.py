"""The outcome of every state-changing request, shared by all replicas through one Kafka topic.

Before a POST/PUT/PATCH/DELETE goes to Twilio, a *started* record with the request id is
acknowledged by Kafka; once the reply exists, the reply itself is written as the *answered*
record. Every replica reads the topic at start-up and follows it, so a redelivered or resent
id, on any replica and after any restart, finds what became of it: the first reply to answer
with, or a start without an answer (the process died while sending: the outcome is unknown).
Only digests and offsets are held in memory; a first reply is read back from Kafka when a
duplicate needs it.

The starts of one turn of the event loop share one record (``state: starts``, the ids'
8-byte digests one after another, a key of its own): one send and one acknowledgement for a
few dozen requests instead of one each (a send costs ~20 µs of CPU in aiokafka, most of a
start's cost). A single ``started`` record keyed by the id, as written before, is still read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.idempotency import Answered, OutcomeIndex, Prior, digest
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.follower import TopicFollower
from bridge.kafka.producer import Publisher
from bridge.settings import DedupeSettings, KafkaSettings

__all__ = ["OutcomeLog"]

log = logging.getLogger(__name__)
_STATE = "state"
_STARTED = b"started"
_STARTS = b"starts"
_ANSWERED = b"answered"
_STARTS_HEADERS = [(_STATE, _STARTS)]
_ANSWERED_HEADERS = [(_STATE, _ANSWERED)]
_DIGEST_BYTES = 8


class _Starts:
    """Digests to be written in one ``starts`` record, and its acknowledgement."""

    __slots__ = ("keys", "sent")

    def __init__(self) -> None:
        self.keys = bytearray()
        self.sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()


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
        # Starts have a connection of their own: aiokafka sends one request at a time per
        # connection, and a start waiting behind a request full of replies holds its HTTP
        # call back. They are batched per loop turn already, so no linger either.
        self._starts_publisher: Publisher | None = None  # made by start()
        self._clock = clock
        self._index = OutcomeIndex(settings.window_s)
        self._follower = TopicFollower(kafka, settings.topic, self._read)
        # Requests with a given id being sent by this process right now; the future is made
        # only when a duplicate has to wait for one.
        self._running: dict[str, asyncio.Future[None] | None] = {}
        self._starts: _Starts | None = None  # filling during this turn of the loop
        self._sending: set[asyncio.Future[tuple[int, int]]] = set()
        self._reader: AIOKafkaConsumer | None = None
        self._reading = asyncio.Lock()
        self._synced: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._index)

    async def start(self) -> None:
        """Create the topic if needed and read every outcome of the window."""
        retention = str(int(self._settings.window_s * 1000))
        # Deleted after the window; compacted so that an answer replaces the single start
        # records of earlier versions.
        configs = {"cleanup.policy": "compact,delete", "retention.ms": retention}
        await self._follower.start(self._settings.partitions, configs)
        self._starts_publisher = Publisher(self._kafka, linger_ms=0)
        await self._starts_publisher.start()
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
        running = self._running
        while request_id in running:
            waiting = running[request_id]
            if waiting is None:
                waiting = running[request_id] = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiting)
        return self._index.prior(request_id, self._clock())

    async def begin(self, request_id: str) -> None:
        """Record, acknowledged by Kafka, that ``request_id`` is about to be sent."""
        self._running[request_id] = None
        key = digest(request_id)
        starts = self._starts
        if starts is None:
            starts = self._starts = _Starts()
            asyncio.get_running_loop().call_soon(self._send_starts)
        starts.keys += key.to_bytes(_DIGEST_BYTES, "big")  # as struct ">Q" reads it
        try:
            await asyncio.shield(starts.sent)
        except BaseException:
            # Cancelled (partition revoked) or refused: a later copy must not wait for this one.
            self.release(request_id)
            raise
        self._index.record_started(key, self._clock())

    def _send_starts(self) -> None:
        starts, self._starts = self._starts, None
        assert starts is not None
        # A compacted topic needs a key; one of its own keeps every batch until the window ends.
        key = b"\0starts/" + os.urandom(8)
        publisher = self._starts_publisher
        assert publisher is not None, "start() first"
        publish = publisher.publish(self._settings.topic, key, bytes(starts.keys), _STARTS_HEADERS)
        task = asyncio.ensure_future(publish)
        self._sending.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(lambda done: _settle(starts.sent, done))

    async def finish(self, request_id: str, reply: bytes) -> None:
        """Record the reply as ``request_id``'s answer, then let waiting duplicates see it."""
        topic = self._settings.topic
        partition, offset = await self._publisher.publish(
            topic, request_id.encode(), reply, _ANSWERED_HEADERS
        )
        self._index.record_answered(digest(request_id), self._clock(), partition, offset)
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
        if self._starts_publisher is not None:
            await self._starts_publisher.stop()
        if self._reader is not None:
            await self._reader.stop()

    def _read(self, record: Any) -> None:
        key = record.key
        if key is None:
            return
        state = dict(record.headers or ()).get(_STATE)
        at = record.timestamp / 1000
        index = self._index
        index.tick(self._clock())
        if state == _ANSWERED:
            request_id = key.decode(errors="replace")
            index.record_answered(digest(request_id), at, record.partition, record.offset)
        elif state == _STARTS:
            value: bytes = record.value or b""
            whole = len(value) - len(value) % _DIGEST_BYTES
            for (started,) in struct.iter_unpack(">Q", value[:whole]):
                index.record_started(started, at)
        elif state == _STARTED:
            index.record_started(digest(key.decode(errors="replace")), at)


def _settle(sent: asyncio.Future[None], done: asyncio.Future[tuple[int, int]]) -> None:
    """Hand a batch's acknowledgement (or why there is none) to every start in it."""
    if sent.done():
        return
    if done.cancelled():
        sent.cancel()
    elif (exc := done.exception()) is not None:
        sent.set_exception(exc)
    else:
        sent.set_result(None)
