"""Consume request topics with bounded concurrency, per-key order and safe commits.

Records are fetched only while fewer than ``max_in_flight`` are unfinished, so memory is
bounded by that limit, not by the backlog. Records with the same key (in one partition) run
one after another; records without a key run freely. An offset is committed only when every
record before it in its partition is finished, i.e. its reply was acknowledged (at-least-once).
On rebalance, revoked partitions finish their work (within the grace period), commit, and any
work still running for them is cancelled so no task outlives its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from bridge.config import KafkaSettings, ProcessingSettings
from bridge.kafka.closing import stop_consumer
from bridge.kafka.connection import FETCH_MAX_BYTES, connection_kwargs
from bridge.kafka.errors import BrokerError, kafka_errors
from bridge.kafka.offsets import PartitionOffsets
from bridge.kafka.ordering import KeyedRunner
from bridge.kafka.records import Record

__all__ = ["COMMIT_TIMEOUT_S", "OnAssigned", "RequestConsumer"]

log = logging.getLogger(__name__)
Handler = Callable[[Record], Awaitable[None]]
COMMIT_TIMEOUT_S = 2.0
# Told the partitions (topic, partition) this member owns after each rebalance.
OnAssigned = Callable[[frozenset[tuple[str, int]]], None]


class _Pulse:
    """Wakes every waiter whenever something finished (a condition without the lock)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, at_most_s: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), at_most_s)
        except TimeoutError:
            pass


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RequestConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # A member with no partition (more replicas than partitions) has joined all the same.
        self._owner.joined = True
        if self._owner.on_assigned is not None:
            # Fetching has already resumed: the callback can only start what records of
            # these partitions must wait for (their previous owner's outcomes, say). It gets
            # the whole assignment, every time (possibly none).
            self._owner.on_assigned(frozenset((tp.topic, tp.partition) for tp in assigned))
        log.info("assigned %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class RequestConsumer:
    """The consumer-group member that feeds records to ``handle``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        processing: ProcessingSettings,
        handle: Handler,
        on_assigned: OnAssigned | None = None,
    ) -> None:
        self._kafka = kafka
        self._max_in_flight = processing.max_in_flight
        self._grace_s = processing.shutdown_grace_s
        self._handle = handle
        self.on_assigned = on_assigned
        self._consumer = AIOKafkaConsumer(
            **connection_kwargs(kafka),
            group_id=kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            session_timeout_ms=kafka.session_timeout_ms,
            # Kafka's guidance: heartbeat at most a third of the session timeout.
            heartbeat_interval_ms=min(3000, kafka.session_timeout_ms // 3),
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            # At most max_in_flight records are handled at once; a fetch far larger only sits
            # in memory (aiokafka's 50 MB default: a 100,000-record backlog added ~12 MB of
            # peak RSS under Tansu, ~7 MB with 1 MiB). A larger record still comes whole.
            fetch_max_bytes=FETCH_MAX_BYTES,
        )
        self._runner = KeyedRunner()
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._unfinished: Counter[TopicPartition] = Counter()
        self._in_flight = 0
        self._pulse = _Pulse()
        self.joined = False

    @property
    def in_flight(self) -> int:
        """Records fetched and not finished."""
        return self._in_flight

    async def start(self) -> None:
        """Connect and join the consumer group; raises ``BrokerError`` when it cannot."""
        with kafka_errors("starting the request consumer"):
            await self._consumer.start()
            self._consumer.subscribe(self._kafka.request_topics, listener=_Listener(self))

    async def run(self, stopping: asyncio.Event) -> None:
        """Fetch and dispatch until ``stopping`` is set; commits finished offsets as it goes.

        Raises ``BrokerError`` when a fetch fails; a failed commit is only logged (retried at
        the next interval).
        """
        interval = self._kafka.commit_interval_s
        next_commit = time.monotonic() + interval
        # Beside the loop, one at a time: with the broker gone a commit waits for its timeout,
        # and the loop must still notice ``stopping`` at once.
        committing: asyncio.Task[None] | None = None
        try:
            while not stopping.is_set():
                free = self._max_in_flight - self._in_flight
                if free <= 0:
                    await self._pulse.wait(interval)
                else:
                    with kafka_errors("fetching requests"):
                        batch = await self._consumer.getmany(timeout_ms=100, max_records=free)
                    for tp, records in batch.items():
                        for record in records:
                            self._dispatch(tp, record)
                if time.monotonic() >= next_commit and (committing is None or committing.done()):
                    committing = asyncio.create_task(self._commit())
                    next_commit = time.monotonic() + interval
        finally:
            if committing is not None:  # drain() commits whatever it would have
                committing.cancel()
                await asyncio.gather(committing, return_exceptions=True)

    async def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: its end offset minus the group's committed offset.

        Raises ``BrokerError`` when the broker does not tell.
        """
        tps = list(self._consumer.assignment())
        if not tps:
            return {}
        with kafka_errors("measuring consumer lag"):
            ends = await self._consumer.end_offsets(tps)
            committed = await asyncio.gather(*(self._consumer.committed(tp) for tp in tps))
            never = [tp for tp, c in zip(tps, committed, strict=True) if c is None]
            starts = await self._consumer.beginning_offsets(never) if never else {}
        return {
            tp: max(0, ends[tp] - (c if c is not None else starts[tp]))
            for tp, c in zip(tps, committed, strict=True)
        }

    def _dispatch(self, tp: TopicPartition, raw: object) -> None:
        record = Record.of(raw)
        offsets = self._offsets.setdefault(tp, PartitionOffsets())
        offsets.add(record.offset)
        self._unfinished[tp] += 1
        self._in_flight += 1
        # Keyless records have no order to keep, so each gets a key of its own.
        key: Hashable = (tp, record.key if record.key is not None else record.offset)

        async def job() -> None:
            await self._handle(record)
            offsets.complete(record.offset)
            self._unfinished[tp] -= 1
            self._in_flight -= 1
            self._pulse.fire()

        self._runner.submit(key, job)

    async def _wait_finished(self, tps: set[TopicPartition] | None, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while True:
            left = self._in_flight if tps is None else sum(self._unfinished[tp] for tp in tps)
            remaining = deadline - time.monotonic()
            if left == 0:
                return True
            if remaining <= 0:
                return False
            await self._pulse.wait(min(remaining, 0.5))

    async def _commit(self, tps: set[TopicPartition] | None = None) -> None:
        offsets = {
            tp: off
            for tp, tracker in self._offsets.items()
            if (tps is None or tp in tps) and (off := tracker.committable()) is not None
        }
        if not offsets:
            return
        try:
            with kafka_errors("committing offsets"):
                # aiokafka waits for a group coordinator for as long as it takes: with the
                # broker gone the loop would stop noticing a signal.
                await asyncio.wait_for(self._consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except (BrokerError, TimeoutError) as exc:
            # Not fatal: the same offsets are committed next time, or re-read by the next owner.
            reason = exc.reason if isinstance(exc, BrokerError) else "no answer"
            log.warning("commit failed (%s); will retry", reason)
            return
        for tp, off in offsets.items():
            self._offsets[tp].committed(off)

    async def release(self, tps: set[TopicPartition]) -> None:
        """Finish, commit and forget partitions being revoked."""
        if not await self._wait_finished(tps, self._grace_s):
            log.warning("revoking partitions with unfinished work; it will be redelivered")
        await self._runner.cancel(lambda key: isinstance(key, tuple) and key[0] in tps)
        await self._commit(tps)
        for tp in tps:
            self._offsets.pop(tp, None)
            self._in_flight -= self._unfinished.pop(tp, 0)
        self._pulse.fire()

    async def drain(self, within_s: float | None = None) -> bool:
        """Wait for in-flight work up to ``within_s`` (the grace period), commit (up to
        ``COMMIT_TIMEOUT_S`` more); True when all finished."""
        finished = await self._wait_finished(None, self._grace_s if within_s is None else within_s)
        await self._runner.cancel()
        await self._commit()
        return finished

    async def stop(self) -> None:
        """Cancel anything left and leave the group."""
        await self._runner.cancel()
        await stop_consumer(self._consumer, "stopping the request consumer")
