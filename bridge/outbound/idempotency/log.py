"""The outcome of every state-changing request, shared by all replicas through two Kafka topics.

Before a POST/PUT/PATCH/DELETE goes to Twilio, a *start* with the request id's digest is
acknowledged by Kafka; once the reply exists, the reply itself is written as the *answer*.
Both go to the log partition of the request's partition (``records`` has the formats), so a
replica needs exactly only what its own request partitions recorded:

* the starts of every partition, read by every replica (8 bytes an id), fill a compact filter
  of every id of the window (``filter``, 5 bytes an id): where each id may have been started;
* the answers of the partitions it owns, read from their beginning when it gets them and
  followed while it keeps them, and its own starts, make the exact index of those partitions
  (``index``); the index goes with the partition.

An id redelivered or resent on an owned partition and answered is answered from the index. An
id the filter places in a partition whose index does not have it (started elsewhere and resent
under another key, or started by a process that died before its answer) is searched for in
that partition of the log (``search``): the filter never decides alone. A first reply is read
back from Kafka when a duplicate needs it. After a rebalance, requests wait until the answers
of the partitions gained and every partition's starts are read to the end their previous owner
left: what it recorded is known before their first record runs again.

The starts of one turn of the event loop share one record per partition, and so do its
answers: one send, one acknowledgement and one record for the followers to read for a few dozen
requests instead of one each.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.aio import TaskSet
from bridge.config import IdempotencySettings, KafkaSettings
from bridge.kafka.follower import TopicFollower
from bridge.kafka.lookup import RecordLookup
from bridge.kafka.producer import Publisher
from bridge.kafka.retry import until_taken
from bridge.observability.metrics import IDEMPOTENCY_LOAD_SECONDS
from bridge.outbound.idempotency.filter import IdFilter
from bridge.outbound.idempotency.index import Answered, IdempotencyIndex, Prior, digest
from bridge.outbound.idempotency.records import (
    ANSWER,
    ANSWERED,
    ANSWERS,
    ANSWERS_FROM,
    DIGEST,
    STARTED,
    STARTS,
    STATE,
    answers,
    answers_from,
    batch_key,
    digests,
    header,
    starts_headers,
)
from bridge.outbound.idempotency.search import LogSearch

__all__ = ["IdempotencyLog", "InStartsTopic"]

log = logging.getLogger(__name__)
_ANSWERS_HEADERS = [(STATE, ANSWERS)]
# A batch of answers is sent before it grows past this: followers read every batch whole.
_ANSWERS_BYTES = 256 * 1024
# Records read at a time, each held whole until handled: starts are ~8 bytes an id, answers
# up to _ANSWERS_BYTES. A hundred thousand answers read 1,000 records at a time left the
# process ~6 MB larger than 50 at a time did, and no faster.
_STARTS_AT_ONCE = 256
_ANSWERS_AT_ONCE = 32


@dataclass(frozen=True, slots=True)
class InStartsTopic(Answered):
    """An answer of the single-topic format: its reply is in the starts topic."""


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
        self._filter = IdFilter(settings.window_s)
        # Exact outcomes: of the partitions owned, and of records in the single-topic format.
        self._owned: dict[int, IdempotencyIndex] = {}
        self._single = IdempotencyIndex(settings.window_s)
        # Log partitions: the fewer of the two topics' (request partition p records in p mod
        # this); the settings' until start() has seen the topics.
        self._partitions = settings.partitions
        self._starts = TopicFollower(
            kafka, settings.topic, self._read_start, max_records=_STARTS_AT_ONCE
        )
        self._answers = TopicFollower(
            kafka, settings.answers_topic, self._read_answer, max_records=_ANSWERS_AT_ONCE
        )
        # Per partition owned: the offset after the last answer read (the answers of the
        # starts written now will be at or after it).
        self._answers_next: dict[int, int] = {}
        # Partitions gained whose answers are being read for the first time.
        self._loading: set[int] = set()
        # Requests with a given id being sent by this process right now; the future is made
        # only when a duplicate has to wait for one.
        self._running: dict[str, asyncio.Future[None] | None] = {}
        # The batches filling during this turn of the loop, per partition.
        self._starts_batches: dict[int, _Batch] = {}
        self._answers_batches: dict[int, _Batch] = {}
        self._sending = TaskSet("idempotency log")
        self._replies = RecordLookup(kafka, settings.answers_topic)
        self._single_replies = RecordLookup(kafka, settings.topic)
        self._search = LogSearch(kafka, settings, clock)
        # What check() waits for: the starts read, then each assignment's partitions.
        self._loads = TaskSet("idempotency log loads")
        self._synced: asyncio.Task[None] | None = None
        self._started_at = self._read_s = 0.0  # the first read of every partition's starts
        self._warned = False
        self.ready = False  # the starts read, and the partitions of an assignment loaded

    async def start(self) -> None:
        """Create the topics if needed and start reading every partition's starts; ``ready``
        once they and the partitions of the first assignment are read."""
        retention = str(int(self._settings.window_s * 1000))
        # Deleted after the window; compacted so that an answer replaces the single start
        # records of the single-topic format.
        configs = {"cleanup.policy": "compact,delete", "retention.ms": retention}
        self._started_at = time.monotonic()
        partitions = self._settings.partitions
        await self._starts.start(partitions, configs, wait=False)
        await self._answers.start(partitions, configs, follow=(), wait=False)
        self._partitions = min(len(self._starts.partitions), len(self._answers.partitions))
        self._starts_publisher = Publisher(self._kafka, linger_ms=0)
        await self._starts_publisher.start()
        self._synced = self._loads.add(self._read_starts())

    async def _read_starts(self) -> None:
        # A broker outage delays requests here; it must not turn into a wrong answer.
        await until_taken(self._starts.catch_up, "idempotency: reading the starts")
        self._read_s = time.monotonic() - self._started_at
        log.info(
            "idempotency: %d request ids of the last %.0f s in %d partitions read in %.2f s "
            "(%d in the single-topic format)",
            len(self._filter),
            self._settings.window_s,
            self._partitions,
            self._read_s,
            len(self._single),
        )

    def assigned(self, partitions: frozenset[tuple[str, int]]) -> None:
        """The request partitions this replica owns now (after each rebalance): the log
        partitions gained are read before the next ``check`` answers, those lost forgotten."""
        owned = {p % self._partitions for _, p in partitions}
        if not self._warned and any(p >= self._partitions for _, p in partitions):
            self._warned = True
            log.warning(
                "idempotency: request partitions beyond %d share log partitions; set "
                "BRIDGE_DEDUPE__PARTITIONS to the request topics' partition count",
                self._partitions,
            )
        gained = owned - set(self._owned)
        for partition in set(self._owned) - owned:
            del self._owned[partition]
        for partition in gained:
            # Sized for the ids the filter knows were started there: no growing while loading.
            expected = self._filter.count(partition)
            self._owned[partition] = IdempotencyIndex(self._settings.window_s, expected)
        self._synced = self._loads.add(self._load(self._synced, owned, gained))

    async def _load(
        self, before: asyncio.Task[None] | None, owned: set[int], gained: set[int]
    ) -> None:
        """Read what the partitions ``gained`` recorded, after what ``before`` reads."""
        if before is not None:
            await asyncio.shield(before)
        began = time.monotonic()
        self._loading |= gained & owned
        await until_taken(lambda: self._answers.follow(owned), "idempotency: following answers")
        await until_taken(self._starts.catch_up, "idempotency: reading the starts")
        await until_taken(self._answers.catch_up, "idempotency: reading the answers")
        self._loading -= gained
        took = time.monotonic() - began
        first = not self.ready
        IDEMPOTENCY_LOAD_SECONDS.set(took + self._read_s if first else took)
        self.ready = True
        _return_freed_memory()
        log.info(
            "idempotency: owns partitions %s: %d request ids of %s read in %.2f s",
            sorted(owned),
            sum(len(self._owned[p]) for p in owned if p in self._owned),
            sorted(gained),
            took,
        )

    async def check(self, request_id: str, partition: int) -> Prior | None:
        """What became of ``request_id`` (consumed from request ``partition``) before, once
        any send of it here has finished."""
        synced = self._synced
        if synced is not None and not synced.done():
            await asyncio.shield(synced)
        running = self._running
        while request_id in running:
            waiting = running[request_id]
            if waiting is None:
                waiting = running[request_id] = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiting)
        return await self._prior(digest(request_id), partition % self._partitions)

    async def _prior(self, key: int, partition: int) -> Prior | None:
        """The outcome of ``key``: in the index of its own partition, else wherever the
        filter says it was started (an owned partition's index, or else the log)."""
        now = self._clock()
        single = self._single.prior_of(key, now)
        here = self._outcome(key, partition, now)
        prior = _decisive(
            InStartsTopic(single.at, single.partition, single.offset)
            if isinstance(single, Answered)
            else single,
            here,
        )
        for other in self._started_in(key, now):
            if isinstance(prior, Answered):
                break
            if other == partition and here is not None:
                continue  # known here already
            found = self._outcome(key, other, now) if other != partition else None
            if found is None:
                found = await self._search.find(key, other)
            prior = _decisive(prior, found)
        return prior

    def _outcome(self, key: int, partition: int, now: float) -> Prior | None:
        index = self._owned.get(partition)
        return index.prior_of(key, now) if index is not None else None

    def _started_in(self, key: int, now: float) -> list[int]:
        """The log partitions the filter says ``key`` may have been started in."""
        tags = self._filter.tags(key, now)
        return [p for p in range(self._partitions) if p & 0xFF in tags] if tags else []

    async def begin(self, request_id: str, partition: int) -> None:
        """Record, acknowledged by Kafka, that ``request_id`` (consumed from request
        ``partition``) is about to be sent."""
        self._running[request_id] = None
        key = digest(request_id)
        partition %= self._partitions
        starts = self._starts_batches.get(partition)
        if starts is None:
            starts = self._starts_batches[partition] = _Batch()
            asyncio.get_running_loop().call_soon(self._send_starts, partition)
        starts.value += DIGEST.pack(key)
        try:
            await asyncio.shield(starts.sent)
        except BaseException:
            # Cancelled (partition revoked) or refused: a later copy must not wait for this one.
            self.release(request_id)
            raise
        index = self._owned.get(partition)
        if index is not None:
            index.record_started(key, self._clock())

    def _send_starts(self, partition: int) -> None:
        starts = self._starts_batches.pop(partition)
        publisher = self._starts_publisher
        assert publisher is not None, "start() first"
        headers = starts_headers(self._answers_next.get(partition, 0))
        self._send(publisher, partition, starts, headers, lambda batch, where: None)

    def finish(self, request_id: str, reply: bytes, partition: int) -> asyncio.Future[None]:
        """Record the reply as ``request_id``'s answer; done once Kafka acknowledged it (or
        refused), and the id released either way so that waiting duplicates see it."""
        key = digest(request_id)
        partition %= self._partitions
        answers = self._answers_batches.get(partition)
        size = ANSWER.size + len(reply)
        if answers is not None and len(answers.value) + size > _ANSWERS_BYTES:
            self._send_answers(partition)
            answers = None
        if answers is None:
            answers = self._answers_batches[partition] = _Batch()
            asyncio.get_running_loop().call_soon(self._send_answers, partition, answers)
        answers.value += ANSWER.pack(key, len(reply))
        answers.value += reply
        answers.ids.append(request_id)
        answers.keys.append(key)
        # Shielded: one caller giving up (its partition revoked) must not cancel the batch.
        return asyncio.shield(answers.sent)

    def _send_answers(self, partition: int, batch: _Batch | None = None) -> None:
        answers = self._answers_batches.get(partition)
        if answers is None or (batch is not None and answers is not batch):
            return  # sent already, when it grew too large
        del self._answers_batches[partition]
        self._send(self._publisher, partition, answers, _ANSWERS_HEADERS, self._answered)

    def _answered(self, answers: _Batch, where: tuple[int, int] | None) -> None:
        if where is not None:
            now = self._clock()
            index = self._owned.get(where[0])
            if index is not None:
                for key in answers.keys:
                    index.record_answered(key, now, *where)
        for request_id in answers.ids:
            self.release(request_id)

    def _send(
        self,
        publisher: Publisher,
        partition: int,
        batch: _Batch,
        headers: list[tuple[str, bytes]],
        written: Callable[[_Batch, tuple[int, int] | None], None],
    ) -> None:
        """Publish ``batch`` to ``partition``; then ``written`` (with where it lies, None if it
        failed) and its ``sent`` settled."""
        state = headers[0][1]
        topic = self._settings.topic if state == STARTS else self._settings.answers_topic
        value = bytes(batch.value)
        publish = publisher.publish(topic, batch_key(state), value, headers, partition)
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
        lookup = self._single_replies if isinstance(answered, InStartsTopic) else self._replies
        # Never "not found" for a read that failed: that would send again.
        record = await until_taken(
            lambda: lookup.read(answered.partition, answered.offset),
            "idempotency: reading a reply",
        )
        if record is None:
            return None  # compacted away or expired meanwhile
        value: bytes = record.value or b""
        if header(record.headers, STATE) != ANSWERS:
            return value  # a single answer, keyed by the id
        wanted = digest(request_id)
        for key, start, end in answers(value):
            if key == wanted:
                return value[start:end]
        return None

    async def stop(self) -> None:
        """Stop following; release anything still waiting."""
        for request_id in list(self._running):
            self.release(request_id)
        self._loads.cancel()
        await self._starts.stop()
        await self._answers.stop()
        if self._starts_publisher is not None:
            await self._starts_publisher.stop()
        await self._replies.stop()
        await self._single_replies.stop()
        await self._search.stop()

    def _read_start(self, record: Any) -> None:
        """A record of the starts topic: its ids into the filter; a record of the single-topic
        format into its own index."""
        key, headers = record.key, record.headers or ()
        if key is None:
            return
        at = record.timestamp / 1000
        state = header(headers, STATE)
        if state != STARTS or answers_from(header(headers, ANSWERS_FROM)) is None:
            self._read_single(record, state, at)
            return
        self._filter.tick(self._clock())
        self._filter.add_all(record.value or b"", record.partition, at)

    def _read_single(self, record: Any, state: bytes | None, at: float) -> None:
        """A record of the single-topic format: exact, whatever its partition."""
        index = self._single
        index.tick(self._clock())
        if state == ANSWERS:
            partition, offset = record.partition, record.offset
            for answered, _, _ in answers(record.value or b""):
                index.record_answered(answered, at, partition, offset)
        elif state == STARTS:
            for started in digests(record.value or b""):
                index.record_started(started, at)
        elif state == ANSWERED:
            request_id = record.key.decode(errors="replace")
            index.record_answered(digest(request_id), at, record.partition, record.offset)
        elif state == STARTED:
            index.record_started(digest(record.key.decode(errors="replace")), at)

    def _read_answer(self, record: Any) -> None:
        """A record of the answers topic, in a partition owned: its answers into the index."""
        partition = record.partition
        self._answers_next[partition] = record.offset + 1
        index = self._owned.get(partition)
        if index is None or header(record.headers or (), STATE) != ANSWERS:
            return
        at, offset = record.timestamp / 1000, record.offset
        index.tick(self._clock())
        keys = (key for key, _, _ in answers(record.value or b""))
        if partition in self._loading:
            index.load_answered(keys, at, partition, offset)
        else:
            for answered in keys:
                index.record_answered(answered, at, partition, offset)


def _return_freed_memory() -> None:
    """Give the C heap's free memory back to the system, where the C library can (glibc).

    A load reads megabytes of records through buffers freed at once, and glibc keeps most of
    that memory in the process unless asked: measured, a replica loading a million ids kept
    ~6 MB of ~23 it no longer used. Elsewhere (musl, macOS) there is nothing to call.
    """
    trim = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _decisive(first: Prior | None, second: Prior | None) -> Prior | None:
    """The outcome that decides: an answer over a start, a start over nothing."""
    if isinstance(first, Answered) or second is None:
        return first
    if isinstance(second, Answered) or first is None:
        return second
    return first
