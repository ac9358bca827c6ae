from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from bridge.config import KafkaSettings, TrackingSettings
from bridge.kafka import ownership as ownership_module
from bridge.kafka.records import Record
from bridge.tracking import book as book_module
from bridge.tracking.book import EVENT, SEND, STATE
from bridge.tracking.send import Event, TrackedSend
from bridge.tracking.tracker import DeliveryTracker
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder
from bridge.twilio.catalog import Catalog
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter
from tests.helpers import (
    ACCOUNT,
    CREDENTIALS,
    TWILIO_SETTINGS,
    FakeConsumer,
    RecordingPublisher,
    RecordingTwilio,
    answering,
    use_fake_consumer,
)

SETTINGS = TrackingSettings(partitions=1, reconcile_after_s=60, give_up_after_s=3600)
STATE_TOPIC, DELIVERIES = SETTINGS.state_topic, SETTINGS.topic
TP = TopicPartition(STATE_TOPIC, 0)
SID = "SM" + "a" * 32


def _send(n: int) -> TrackedSend:
    return TrackedSend(
        f"{n:024d}", f"req-{n}", f"key-{n}".encode(), {"n": n}, "message", ACCOUNT, "default", 0.0
    )


def _raw(offset: int, key: str, value: bytes, kind: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        STATE_TOPIC, 0, offset, 1_000, 0, key.encode(), value, None, 0, 0, [("kind", kind)]
    )


def _event(offset: int, token: str, event: Event) -> ConsumerRecord[bytes, bytes]:
    return _raw(offset, f"{token}/{offset}", event.to_json(), EVENT)


def _callback(offset: int, token: str, status: str) -> ConsumerRecord[bytes, bytes]:
    params = {"AccountSid": ACCOUNT, "MessageSid": SID, "MessageStatus": status}
    return _event(offset, token, Event("callback", account_sid=ACCOUNT, params=params))


class Clock:
    now = 10.0

    def __call__(self) -> float:
        return self.now


class StateRecords:
    """``RecordLookup``'s contract over the records given; keeps the places read."""

    def __init__(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.records = {r.offset: Record.of(r) for r in records}
        self.reads: list[tuple[int, int]] = []

    async def read(self, partition: int, offset: int) -> Record | None:
        self.reads.append((partition, offset))
        return self.records.get(offset)

    async def stop(self) -> None:
        pass


class Owner:
    """A tracker owning partition 0 of the state topic, read through a fake consumer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, twilio: RecordingTwilio) -> None:
        self.consumer = use_fake_consumer(monkeypatch, ownership_module, FakeConsumer())
        self.publisher = RecordingPublisher()
        self.clock = Clock()
        self.twilio = twilio
        accounts = Accounts(CREDENTIALS)
        builder = CallBuilder(Catalog.load(), accounts, TWILIO_SETTINGS)
        client = TwilioClient(TWILIO_SETTINGS, transport=httpx.MockTransport(twilio))
        fetch_with = (accounts, builder, client, Limiter())
        self.tracker = DeliveryTracker(
            SETTINGS, KafkaSettings(), self.publisher, fetch_with, self.clock
        )
        self.lookup = StateRecords([])
        self.tracker._lookup = self.lookup  # type: ignore[assignment]

    async def start(self) -> None:
        await self.tracker.start()
        self.consumer.assigned = {TP}
        await self.consumer.listener.on_partitions_assigned([TP])
        await self.turn()  # read to its end (empty): live

    async def turn(self, *records: ConsumerRecord[bytes, bytes]) -> None:
        self.consumer.records = list(records)
        self.lookup.records |= {r.offset: Record.of(r) for r in records}
        await self.tracker._turn()

    def deliveries(self) -> list[tuple[bytes | None, str, int, bool, str]]:
        found = []
        for topic, key, value, headers, _ in self.publisher.sent:
            if topic == DELIVERIES and value is not None:
                doc = orjson.loads(value)
                assert dict(headers)["id"] == doc["id"].encode()
                found.append((key, doc["status"], doc["sequence"], doc["final"], doc["source"]))
        return found

    def states(self) -> list[tuple[bytes | None, bytes | None]]:
        """(key, kind) of each state of a send written; kind None for a tombstone."""
        return [
            (key, dict(headers).get("kind") if value is not None else None)
            for topic, key, value, headers, _ in self.publisher.sent
            if topic == STATE_TOPIC and b"/" not in (key or b"")
        ]

    def spent(self) -> list[bytes]:
        """The keys of the events tombstoned, in the order written."""
        found = []
        for topic, key, value, _, _ in self.publisher.sent:
            if topic == STATE_TOPIC and key is not None and b"/" in key:
                assert value is None
                found.append(key)
        return found


@pytest.fixture
def owner(monkeypatch: pytest.MonkeyPatch) -> Iterator[Owner]:
    body = {"sid": SID, "status": "delivered", "error_code": None}
    yield Owner(monkeypatch, answering(200, body))


async def test_callbacks_are_published_on_the_requests_key_then_the_send_is_tombstoned(
    owner: Owner,
) -> None:
    await owner.start()
    send = _send(1)
    answer = Event("answer", account_sid=ACCOUNT, sid=SID)
    await owner.turn(
        _raw(0, send.token, send.to_json(), SEND),
        _event(1, send.token, answer),
        _callback(2, send.token, "sent"),
        _callback(3, send.token, "sent"),
        _callback(4, send.token, "delivered"),
    )
    assert owner.deliveries() == [
        (b"key-1", "sent", 1, False, "callback"),
        (b"key-1", "delivered", 2, True, "callback"),
    ]
    token = send.token.encode()
    # One state per send and turn, the last: here the tombstone, which stands for the answer
    # and both 'sent' applied before it.
    assert owner.states() == [(token, None)]
    assert owner.spent() == []
    # Kafka has it: the next turn's write tombstones the events, and nothing else is left.
    await owner.turn()
    assert sorted(owner.spent()) == [f"{send.token}/{n}".encode() for n in range(1, 5)]
    assert len(owner.tracker.book) == 0


async def test_a_turn_writes_every_record_before_any_state_and_keeps_each_sends_order(
    owner: Owner,
) -> None:
    await owner.start()
    first, second = _send(1), _send(2)
    await owner.turn(
        _raw(0, first.token, first.to_json(), SEND),
        _raw(1, second.token, second.to_json(), SEND),
        _callback(2, first.token, "sent"),
        _callback(3, second.token, "sent"),
        _callback(4, first.token, "delivered"),
    )
    written = [(topic, key) for topic, key, _, _, _ in owner.publisher.sent]
    one, two = first.token.encode(), second.token.encode()
    # Two rounds of acknowledgements for the turn, not two per callback: the records (each
    # send's in order), then each send's last state (the first send's is its tombstone).
    assert written == [
        (DELIVERIES, b"key-1"),
        (DELIVERIES, b"key-1"),
        (DELIVERIES, b"key-2"),
        (STATE_TOPIC, one),
        (STATE_TOPIC, two),
    ]
    assert [d[1:3] for d in owner.deliveries()] == [("sent", 1), ("delivered", 2), ("sent", 1)]
    assert owner.states() == [(one, None), (two, STATE)]
    assert len(owner.tracker.book) == 1
    # The tombstones of the events the states stand for go with the next turn's states,
    # whose round they share: after the state each stands for, without a round of their own.
    after = _send(3)
    await owner.turn(_raw(5, after.token, after.to_json(), SEND), _callback(6, after.token, "sent"))
    written = [(topic, key) for topic, key, _, _, _ in owner.publisher.sent[5:]]
    assert written[0] == (DELIVERIES, b"key-3")
    assert sorted(written[1:]) == sorted(
        [
            (STATE_TOPIC, after.token.encode()),
            (STATE_TOPIC, f"{first.token}/2".encode()),
            (STATE_TOPIC, f"{second.token}/3".encode()),
            (STATE_TOPIC, f"{first.token}/4".encode()),
        ]
    )


async def test_a_new_owner_tombstones_the_events_it_finds_once_their_state_is_written(
    owner: Owner,
) -> None:
    # The last owner applied 'sent' and wrote the state after it, then died before its
    # tombstone of that event, and before it applied 'delivered'.
    send = _send(1)
    after_sent = replace(send, sid=SID, status="sent", sequence=1, applied=1)
    log = [
        _raw(0, send.token, send.to_json(), SEND),
        _callback(1, send.token, "sent"),
        _raw(2, send.token, after_sent.to_json(), STATE),
        _callback(3, send.token, "delivered"),
    ]
    await owner.tracker.start()
    owner.consumer.assigned = {TP}
    owner.consumer.ends = {TP: len(log)}
    await owner.consumer.listener.on_partitions_assigned([TP])
    await owner.turn(*log)  # read, not yet to its end: the events are held
    assert owner.publisher.sent == []
    owner.consumer.positions[TP] = len(log)
    await owner.turn()
    assert owner.deliveries() == [(b"key-1", "delivered", 2, True, "callback")]
    await owner.turn()
    token = send.token.encode()
    # The send's tombstone first, then both events': the one the last state stood for too.
    assert [key for topic, key, _, _, _ in owner.publisher.sent if topic == STATE_TOPIC] == [
        token,
        token + b"/1",
        token + b"/3",
    ]


@pytest.fixture
def one_at_hand(owner: Owner, monkeypatch: pytest.MonkeyPatch) -> Owner:
    """An owner that keeps one whole send at hand."""
    monkeypatch.setattr(book_module, "RECENT", 1)
    return owner


async def _first_then_second(owner: Owner, *between: ConsumerRecord[bytes, bytes]) -> str:
    """Sends 1 and 2, in that order with ``between`` in between; the first's token."""
    await owner.start()
    first, second = _send(1), _send(2)
    await owner.turn(
        _raw(0, first.token, first.to_json(), SEND),
        *between,
        _raw(1 + len(between), second.token, second.to_json(), SEND),
    )
    return first.token


async def test_a_send_no_longer_at_hand_is_read_back_from_its_latest_state(
    one_at_hand: Owner,
) -> None:
    owner = one_at_hand
    token = _send(1).token
    await _first_then_second(owner, _callback(1, token, "sent"))
    assert owner.tracker.book.whole(token) is None  # only the last one is at hand
    # The state written after 'sent' is the latest whole record of the first send.
    # (The recording publisher's offsets count what it was sent.)
    sent = owner.publisher.sent
    [state_offset] = [n for n, s in enumerate(sent) if s[:2] == (STATE_TOPIC, token.encode())]
    state = sent[state_offset][2]
    owner.lookup.records[state_offset] = Record(STATE_TOPIC, 0, state_offset, None, state, ())
    await owner.turn(_callback(3, token, "delivered"))
    assert owner.lookup.reads == [(0, state_offset)]
    assert owner.deliveries()[-1] == (b"key-1", "delivered", 2, True, "callback")


async def test_a_send_pushed_out_within_a_turn_is_read_back_with_the_state_the_turn_wrote(
    one_at_hand: Owner,
) -> None:
    owner = one_at_hand
    await owner.start()
    # The state topic's log runs on past what was consumed: the owner's writes land after it,
    # and what it writes there can be read back.
    owner.publisher.sent.extend([("before", None, None, [], None)] * 10)
    publish = owner.publisher.publish

    async def written(
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        partition: int | None = None,
    ) -> tuple[int, int]:
        at = await publish(topic, key, value, headers, partition)
        if topic == STATE_TOPIC:
            owner.lookup.records[at[1]] = Record(STATE_TOPIC, 0, at[1], key, value, ())
        return at

    owner.publisher.publish = written  # type: ignore[method-assign]
    first, second = _send(1), _send(2)
    await owner.turn(
        _raw(0, first.token, first.to_json(), SEND),
        _callback(1, first.token, "sent"),
        _raw(2, second.token, second.to_json(), SEND),  # the only send at hand from here
        _callback(3, first.token, "delivered"),
    )
    # 'delivered' is judged against the 'sent' state written in this same turn, not the send
    # record before it: the state went out before the read back.
    assert owner.deliveries() == [
        (b"key-1", "sent", 1, False, "callback"),
        (b"key-1", "delivered", 2, True, "callback"),
    ]


async def test_a_send_whose_record_is_gone_is_forgotten(one_at_hand: Owner) -> None:
    owner = one_at_hand
    token = await _first_then_second(owner)
    del owner.lookup.records[0]  # compacted or expired away
    await owner.turn(_callback(2, token, "delivered"))
    assert owner.lookup.reads == [(0, 0)]
    assert owner.deliveries() == [] and len(owner.tracker.book) == 1


async def _reconciled(owner: Owner, at: float) -> None:
    owner.clock.now = at
    await owner.turn()
    for task in list(owner.tracker._fetching.values()):
        await task
    await owner.turn()


async def test_a_send_without_a_final_status_is_fetched_then_given_up(owner: Owner) -> None:
    await owner.start()
    send = _send(1)
    answer = Event("answer", account_sid=ACCOUNT, sid=SID)
    await owner.turn(_raw(0, send.token, send.to_json(), SEND), _event(1, send.token, answer))
    await _reconciled(owner, 59.0)  # not yet due
    assert owner.twilio.requests == []
    owner.twilio.answer = answering(500).answer  # a fetch that fails publishes nothing
    await _reconciled(owner, 66.0)  # the sends are looked over every 6 s (a tenth of 60)
    assert [r.url.path for r in owner.twilio.requests] == [
        f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{SID}.json"
    ]
    assert owner.deliveries() == []
    await _reconciled(owner, 110.0)  # the next fetch is due 60 s after the first was
    assert len(owner.twilio.requests) == 1
    owner.twilio.answer = answering(200, {"sid": SID, "status": "sent"}).answer
    await _reconciled(owner, 121.0)
    assert owner.deliveries() == [(b"key-1", "sent", 1, False, "reconcile")]
    await _reconciled(owner, 3600.0)
    assert owner.deliveries()[-1] == (b"key-1", "expired", 2, True, "reconcile")
    assert owner.states()[-1] == (send.token.encode(), None)
    assert len(owner.tracker.book) == 0
