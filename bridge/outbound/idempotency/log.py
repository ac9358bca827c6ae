"""The outcome of every state-changing request, shared by all replicas through one Kafka topic.

Before a POST/PUT/PATCH/DELETE goes to Twilio, a *start* with the request id is acknowledged
by Kafka; once the reply exists, the reply itself is written as the *answer*. Every replica
reads the topic at start-up and follows it, so a redelivered or resent id, on any replica and
after any restart, finds what became of it: the first reply to answer with, or a start without
an answer (the process died while sending: the outcome is unknown). Only digests and offsets
are held in memory; a first reply is read back from Kafka when a duplicate needs it.

The starts of one turn of the event loop share one record (``state: starts``, the ids' 8-byte
digests one after another), and so do its answers (``state: answers``, each a digest, the
reply's length and the reply), each batch under a key of its own: one send, one acknowledgement
and one record for the followers to read for a few dozen requests instead of one each (a send
costs ~20 µs of CPU in aiokafka, a record read back about as much). The single ``started`` and
``answered`` records keyed by the id, as written before, are still read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from bridge.aio import TaskSet
from bridge.config import IdempotencySettings, KafkaSettings
from bridge.kafka.follower import TopicFollower
from bridge.kafka.lookup import RecordLookup
from bridge.kafka.producer import Publisher
from bridge.kafka.retry import until_taken
from bridge.outbound.idempotency.index import Answered, IdempotencyIndex, Prior, digest

__all__ = ["IdempotencyLog"]

log = logging.getLogger(__name__)
_STATE = "state"
_STARTED = b"started"
_STARTS = b"starts"
_ANSWERED = b"answered"
_ANSWERS = b"answers"
_STARTS_HEADERS = [(_STATE, _STARTS)]
_ANSWERS_HEADERS = [(_STATE, _ANSWERS)]
_DIGEST = struct.Struct(">Q")
# An answer in a batch: the id's digest and the reply's length, then the reply.
_ANSWER = struct.Struct(">QI")
# A batch of answers is sent before it grows past this: followers read every batch whole.
_ANSWERS_BYTES = 256 * 1024


class _Batch:
    """What one record will carry (ids' digests, replies), and its acknowledgement."""

    __slots__ = ("ids", "keys", "sent", "value")

    def __init__(self) -> None:
        self.value = bytearray()
        self.ids: list[str] = []  # answers only: released once the batch is written
        self.keys: list[int] = []
        self.sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class IdempotencyLog:
    """Records starts and answers of state-changing requests; tells a duplicate what happened."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: IdempotencySettings,
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
        self._index = IdempotencyIndex(settings.window_s)
        self._follower = TopicFollower(kafka, settings.topic, self._read)
        # Requests with a given id being sent by this process right now; the future is made
        # only when a duplicate has to wait for one.
        self._running: dict[str, asyncio.Future[None] | None] = {}
        # The batches filling during this turn of the loop.
        self._starts: _Batch | None = None
        self._answers: _Batch | None = None
        self._sending = TaskSet("idempotency log")
        self._replies = RecordLookup(kafka, settings.topic)
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
            "idempotency: %d request ids of the last %.0f s",
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
        await until_taken(self._follower.catch_up, "idempotency: catching up")

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
            starts = self._starts = _Batch()
            asyncio.get_running_loop().call_soon(self._send_starts)
        starts.value += _DIGEST.pack(key)
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
        publisher = self._starts_publisher
        assert publisher is not None, "start() first"
        self._send(publisher, starts, _STARTS_HEADERS, lambda batch, where: None)

    def finish(self, request_id: str, reply: bytes) -> asyncio.Future[None]:
        """Record the reply as ``request_id``'s answer; done once Kafka acknowledged it (or
        refused), and the id released either way so that waiting duplicates see it."""
        key = digest(request_id)
        answers = self._answers
        size = _ANSWER.size + len(reply)
        if answers is not None and len(answers.value) + size > _ANSWERS_BYTES:
            self._send_answers()
            answers = None
        if answers is None:
            answers = self._answers = _Batch()
            asyncio.get_running_loop().call_soon(self._send_answers)
        answers.value += _ANSWER.pack(key, len(reply))
        answers.value += reply
        answers.ids.append(request_id)
        answers.keys.append(key)
        # Shielded: one caller giving up (its partition revoked) must not cancel the batch.
        return asyncio.shield(answers.sent)

    def _send_answers(self) -> None:
        answers, self._answers = self._answers, None
        if answers is not None:  # None: sent already, when it grew too large
            self._send(self._publisher, answers, _ANSWERS_HEADERS, self._answered)

    def _answered(self, answers: _Batch, where: tuple[int, int] | None) -> None:
        if where is not None:
            now = self._clock()
            for key in answers.keys:
                self._index.record_answered(key, now, *where)
        for request_id in answers.ids:
            self.release(request_id)

    def _send(
        self,
        publisher: Publisher,
        batch: _Batch,
        headers: list[tuple[str, bytes]],
        written: Callable[[_Batch, tuple[int, int] | None], None],
    ) -> None:
        """Publish ``batch``; then ``written`` (with where it lies, None if it failed) and its
        ``sent`` settled."""
        # A compacted topic needs a key; one of its own keeps every batch until the window ends.
        key = b"\0" + headers[0][1] + b"/" + os.urandom(8)
        publish = publisher.publish(self._settings.topic, key, bytes(batch.value), headers)
        task = self._sending.add(publish)

        def settle(done: asyncio.Future[tuple[int, int]]) -> None:
            # Everything waiting on the batch gets its acknowledgement, or why there is none.
            sent = batch.sent
            if done.cancelled():
                written(batch, None)
                sent.cancel()
            elif (exc := done.exception()) is not None:
                written(batch, None)
                sent.set_exception(exc)
            else:
                written(batch, done.result())
                sent.set_result(None)

        task.add_done_callback(settle)

    def release(self, request_id: str) -> None:
        """End this process's send of ``request_id`` (answered or not)."""
        running = self._running.pop(request_id, None)
        if running is not None and not running.done():
            running.set_result(None)

    async def first_reply(self, request_id: str, answered: Answered) -> bytes | None:
        """The reply recorded for an answered id, read back from Kafka (None if gone)."""
        # Never "not found" for a read that failed: that would send again.
        record = await until_taken(
            lambda: self._replies.read(answered.partition, answered.offset),
            "idempotency: reading a reply",
        )
        if record is None:
            return None  # compacted away or expired meanwhile
        value: bytes = record.value or b""
        if dict(record.headers).get(_STATE) != _ANSWERS:
            return value  # a single answer, as written before
        wanted = digest(request_id)
        for key, start, end in _answers(value):
            if key == wanted:
                return value[start:end]
        return None

    async def stop(self) -> None:
        """Stop following; release anything still waiting."""
        for request_id in list(self._running):
            self.release(request_id)
        if self._synced is not None:
            self._synced.cancel()
        await self._follower.stop()
        if self._starts_publisher is not None:
            await self._starts_publisher.stop()
        await self._replies.stop()

    def _read(self, record: Any) -> None:
        key = record.key
        if key is None:
            return
        state = dict(record.headers or ()).get(_STATE)
        at = record.timestamp / 1000
        index = self._index
        index.tick(self._clock())
        if state == _ANSWERS:
            partition, offset = record.partition, record.offset
            for answered, _, _ in _answers(record.value or b""):
                index.record_answered(answered, at, partition, offset)
        elif state == _STARTS:
            value: bytes = record.value or b""
            whole = len(value) - len(value) % _DIGEST.size
            for (started,) in _DIGEST.iter_unpack(value[:whole]):
                index.record_started(started, at)
        elif state == _ANSWERED:
            request_id = key.decode(errors="replace")
            index.record_answered(digest(request_id), at, record.partition, record.offset)
        elif state == _STARTED:
            index.record_started(digest(key.decode(errors="replace")), at)


def _answers(value: bytes) -> list[tuple[int, int, int]]:
    """The answers in a batch: each id's digest and where its reply lies in ``value``."""
    found = []
    pos, size, end = 0, _ANSWER.size, len(value)
    while pos + size <= end:
        key, length = _ANSWER.unpack_from(value, pos)
        start = pos + size
        pos = start + length
        if pos > end:
            break  # cut short: not written by this code
        found.append((key, start, pos))
    return found
