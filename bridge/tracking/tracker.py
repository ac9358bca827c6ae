"""The owner of state partitions: applies their events, publishes delivery records, reconciles.

The replicas share the state topic as one consumer group (``<group id>.tracking``), so each
token's partition, and with it each tracked send, has one owner at a time: it alone judges the
send's statuses (``Book``), publishes its delivery records (key = the request's key, header
``id``), writes its state after them (its last of each turn), tombstones the events that
state stands for, and fetches it from Twilio when no final status came within
``reconcile_after_s``. A fetch goes through the same rate limiter as the requests; one that
fails publishes nothing and is tried again later, with backoff, until ``give_up_after_s``
ends the send with ``expired``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.config import KafkaSettings, TrackingSettings
from bridge.contract.envelopes import BasicRequest, utc_timestamp
from bridge.contract.errors import BridgeError
from bridge.kafka.errors import BrokerError
from bridge.kafka.lookup import RecordLookup
from bridge.kafka.ownership import OwnedPartitions
from bridge.kafka.producer import Publisher
from bridge.kafka.records import Record
from bridge.kafka.retry import pause, until_taken
from bridge.observability.metrics import DELIVERIES, DELIVERIES_TRACKED
from bridge.tracking.book import STATE, Book, Change
from bridge.tracking.pending import Pending
from bridge.tracking.send import TrackedSend, finished, learnt
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter
from bridge.twilio.responses import parse_body

__all__ = ["DeliveryTracker"]

log = logging.getLogger(__name__)

_FETCHES = {"message": "FetchMessage", "call": "FetchCall"}
_MAX_FETCHES = 16  # reconciling fetches in flight at once
# Records applied per turn. Each may wait for two acknowledged writes, so a turn over a whole
# fetch (thousands of records) on a slow broker can outlast max.poll.interval.ms (300 s), after
# which aiokafka leaves the group until the next fetch.
_MAX_RECORDS = 256
_SCAN_EVERY_S = 10.0


class DeliveryTracker:
    """Applies the events of the owned state partitions and reconciles their sends."""

    def __init__(
        self,
        settings: TrackingSettings,
        kafka: KafkaSettings,
        publisher: Publisher,
        fetch_with: tuple[Accounts, CallBuilder, TwilioClient, Limiter],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._accounts, self._builder, self._client, self._limiter = fetch_with
        self._clock = clock
        self._me = uuid.uuid4().hex
        self.book = Book(self._me)
        self._owned = OwnedPartitions(
            kafka, settings.state_topic, f"{kafka.group_id}.tracking", owner="tracking"
        )
        self._lookup = RecordLookup(kafka, settings.state_topic)
        self._assignments = 0
        self._due: deque[str] = deque()  # sends to fetch or give up on, found by _scan
        self._scan_at = 0.0
        self._fetching: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        # Events whose states the last write put in Kafka: tombstoned with the next one.
        self._spent: list[tuple[int, bytes | None]] = []
        DELIVERIES_TRACKED.set_function(lambda: len(self.book))

    async def start(self) -> None:
        """Create the state topic if needed and join the owners' group."""
        # Events and states of sends that never end are deleted a day after the bridge gave
        # up on them; finished sends leave a tombstone, compacted away.
        retention = str(int((self._settings.give_up_after_s + 86_400) * 1000))
        configs = {"cleanup.policy": "compact,delete", "retention.ms": retention}
        await self._owned.start(self._settings.partitions, configs)

    async def stop(self) -> None:
        """Stop the fetches under way and leave the group."""
        for task in self._fetching.values():
            task.cancel()
        await self._owned.stop()
        await self._lookup.stop()

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the owned partitions and reconcile their sends until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                await self._turn()
            except BrokerError as exc:
                await pause("tracking: reading the state topic", exc, 1.0)

    async def _turn(self) -> None:
        records = await self._owned.fetch(timeout_ms=200, max_records=_MAX_RECORDS)
        if self._owned.assignments != self._assignments:
            # Assigned anew: every partition is read again from its beginning.
            self._assignments = self._owned.assignments
            self.book.reset()
            self._due.clear()
            self._scan_at = 0.0
        writes = _Writes()
        for record in records:
            await self._recall(self.book.wanted(record), writes)
            for change in self.book.read(record, utc_timestamp):
                self._settle(change, "callback", writes)
            if self.book.spent(record):
                writes.spent.append((record.partition, record.key))
        for partition in self._owned.owned() - self.book.live:
            if await self._owned.caught_up(partition):
                for offset, token, event, key in self.book.caught_up(partition):
                    if await self._recall(token, writes):
                        held = self.book.apply(token, offset, event, utc_timestamp)
                        if held is not None:
                            self._settle(held, "callback", writes)
                    writes.spent.append((partition, key))
        await self._write(writes)
        await self._reconcile()

    async def _recall(self, token: str | None, writes: _Writes | None = None) -> bool:
        """Have the whole send of ``token`` at hand, read back from the state topic if need
        be; False when it is not tracked here (any more)."""
        if token is None:
            return False
        if writes is not None and token in writes.states and self.book.whole(token) is None:
            # Changed earlier in this turn, then pushed out of the sends at hand: the turn's
            # writes go first, so that the read below finds its latest state.
            await self._write(writes)
            writes.clear()
        pending = self.book.pending(token)
        if pending is None:
            return False
        if self.book.whole(token) is None:
            # Never "gone" for a read that failed: that would drop the send.
            record = await until_taken(
                lambda: self._lookup.read(pending.partition, pending.where),
                "tracking: reading a tracked send back",
            )
            self.book.recall(token, _whole(record))
        return self.book.whole(token) is not None

    def _settle(self, change: Change, source: str, writes: _Writes) -> None:
        """Take ``change`` into memory at once, so the next event of its send in this turn is
        judged against it, and queue what must be written for it: its record, then the send's
        new state (or its tombstone) when that differs from what the state topic has."""
        send = change.send
        if change.record is not None:
            value = change.record.model_dump_json().encode()
            writes.records.setdefault(send.key, []).append((value, send.record_headers()))
        pending = self.book.pending(change.token)
        if pending is not None and (change.gone or send != self.book.whole(change.token)):
            # Only the send's last state of the turn: it stands for every record before it.
            writes.states[change.token] = (pending.partition, None if change.gone else send)
        self.book.settle(change)
        DELIVERIES.labels(source, _outcome(change)).inc()

    async def _write(self, writes: _Writes) -> None:
        """Publish the queued records, then, once Kafka has them all, the states, with the
        tombstones of the events done with at the last write: a state never gets ahead of a
        record it stands for, nor an event goes before the state that stands for it, and a
        turn waits for two rounds of acknowledgements however many sends it changed. The
        records under one key go one after the other, so that they keep their order."""
        topic, state_topic = self._settings.topic, self._settings.state_topic
        await asyncio.gather(
            *(self._in_turn(topic, key, items) for key, items in writes.records.items())
        )
        # A finished send leaves nothing but tombstones, which compaction then removes.
        gone: list[_Item] = [(None, [("by", self._me.encode())])]
        spent, self._spent = self._spent, []
        tokens = list(writes.states)
        places = await asyncio.gather(
            *(self._state(t, *writes.states[t]) for t in tokens),
            *(self._in_turn(state_topic, key, gone, partition) for partition, key in spent),
        )
        for token, place in zip(tokens, places[: len(tokens)], strict=True):
            if place is not None:
                self.book.placed(token, place)
        # Kafka has the states that stand for these events now: they go with the next write
        # (the next turn's, within a fetch's wait), a round of their own saved.
        self._spent = writes.spent.copy()

    async def _state(self, token: str, partition: int, send: TrackedSend | None) -> int | None:
        """Write a send's state (None: its tombstone); the offset, None for a tombstone."""
        mine = [("by", self._me.encode())]
        item: _Item = (None, mine) if send is None else (send.to_json(), [*mine, _STATE_KIND])
        offset = await self._in_turn(self._settings.state_topic, token.encode(), [item], partition)
        return None if send is None else offset

    async def _in_turn(
        self, topic: str, key: bytes | None, items: list[_Item], partition: int | None = None
    ) -> int:
        """Publish ``items`` under ``key`` one after the other; the offset of the last."""
        offset = -1
        for value, headers in items:
            _, offset = await self._publisher.publish(topic, key, value, headers, partition)
        return offset

    async def _write_one(self, change: Change) -> None:
        writes = _Writes()
        self._settle(change, "reconcile", writes)
        await self._write(writes)

    async def _reconcile(self) -> None:
        """Apply the fetches that finished, then give up on the sends too old and start the
        fetches due, as many at once as ``_MAX_FETCHES``."""
        for token, task in [(t, task) for t, task in self._fetching.items() if task.done()]:
            del self._fetching[token]
            fetched = None if task.cancelled() or task.exception() else task.result()
            status = fetched.get("status") if fetched is not None else None
            if isinstance(status, str) and fetched is not None and await self._recall(token):
                send = self.book.whole(token)
                assert send is not None
                verdict, after, record = learnt(
                    send, status, fetched, source="reconcile", at=utc_timestamp()
                )
                change = Change(token, verdict, after, record, gone=finished(after))
                await self._write_one(change)
        now = self._clock()
        if not self._due and now >= self._scan_at:
            self._scan(now)
        while self._due and len(self._fetching) < _MAX_FETCHES:
            token = self._due.popleft()
            pending = self.book.pending(token)
            if pending is None or token in self._fetching or not await self._recall(token):
                continue
            if now >= pending.created_at + self._settings.give_up_after_s:
                await self._write_one(self.book.expire(token, utc_timestamp()))
                continue
            send = self.book.whole(token)
            assert send is not None
            self.book.fetched(token)
            self._fetching[token] = asyncio.create_task(self._fetch(send))

    def _scan(self, now: float) -> None:
        """Queue the sends to give up on or fetch now. The packed sends are looked over at
        most every ``_SCAN_EVERY_S`` (a tenth of ``reconcile_after_s`` when shorter): a
        fetch or the end comes that much late at most."""
        settings = self._settings
        after_s = settings.reconcile_after_s
        for token, packed in self.book.sends.items():
            pending = Pending.unpack(packed)
            if pending.partition not in self.book.live or token in self._fetching:
                continue
            ending = now >= pending.created_at + settings.give_up_after_s
            fetching = not pending.final and pending.answered and now >= pending.fetch_at(after_s)
            if ending or fetching:
                self._due.append(token)
        self._scan_at = now + min(_SCAN_EVERY_S, after_s / 10)

    async def _fetch(self, send: TrackedSend) -> dict[str, Any] | None:
        """The resource as Twilio has it now, or None when the fetch failed."""
        account = self._accounts.get(send.credential)
        if account is None or account.account_sid != send.account_sid or send.sid is None:
            return None
        request = BasicRequest(
            id=f"reconcile-{send.request_id}",
            mode="basic",
            operation=_FETCHES[send.resource],
            api="api.v2010",
            credential=send.credential,
            params={"Sid": send.sid},
        )
        try:
            call = self._builder.build(request)
            async with self._limiter.slot(account.name, None, account.rate_limit):
                result = await self._client.send(call)
        except BridgeError as exc:
            log.warning("tracking: fetching %s failed: %s", send.sid, exc.message)
            return None
        body = parse_body(result) if result.status < 400 else None
        if not isinstance(body, dict):
            log.warning("tracking: fetching %s answered HTTP %s", send.sid, result.status)
            return None
        return body


# A record to write: its value (None: a tombstone) and headers.
_Item = tuple[bytes | None, list[tuple[str, bytes]]]
_STATE_KIND = ("kind", STATE)


@dataclass
class _Writes:
    """What a turn must write, in the order it was decided: delivery records by Kafka key,
    then each send's last state by token (with the state partition; None: a tombstone); and
    the events done with (partition and key), tombstoned with the next write."""

    records: dict[bytes | None, list[_Item]] = field(default_factory=dict)
    states: dict[str, tuple[int, TrackedSend | None]] = field(default_factory=dict)
    spent: list[tuple[int, bytes | None]] = field(default_factory=list)

    def clear(self) -> None:
        """Written: nothing left to write."""
        self.records.clear()
        self.states.clear()
        self.spent.clear()


def _outcome(change: Change) -> str:
    if change.record is not None:
        return "published"
    return str(change.verdict)


def _whole(record: Record | None) -> TrackedSend | None:
    """The send a record of the state topic holds, if it holds one."""
    if record is None or record.value is None:
        return None
    try:
        return TrackedSend.from_json(record.value)
    except ValueError:
        return None
