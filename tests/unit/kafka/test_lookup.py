"""Reading a record back by its place: the record, None once it is gone, or a BrokerError."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from bridge.config import KafkaSettings
from bridge.kafka import lookup as lookup_module
from bridge.kafka.errors import BrokerError
from bridge.kafka.lookup import RecordLookup
from bridge.kafka.records import Record
from tests.helpers import FakeConsumer, consumed, use_fake_consumer


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeConsumer:
    return use_fake_consumer(monkeypatch, lookup_module, FakeConsumer())


async def test_the_record_at_its_place_or_none_when_gone(fake: FakeConsumer) -> None:
    lookup = RecordLookup(KafkaSettings(), "outcomes")
    fake.records = [consumed("outcomes", 2, 7, b"k", b"reply")]
    assert await lookup.read(2, 7) == Record(
        "outcomes", 2, 7, b"k", b"reply", (("state", b"x"),), 1_000
    )
    assert fake.seeks == [(TopicPartition("outcomes", 2), 7)]
    fake.records = [consumed("outcomes", 2, 9, b"k", b"later")]  # 7 compacted away
    assert await lookup.read(2, 7) is None
    assert await lookup.read(2, 7) is None  # nothing there at all
    assert fake.calls.count("start") == 1  # one consumer for every read
    await lookup.stop()


async def test_nothing_in_time_where_the_log_still_reaches_is_a_failed_read(
    fake: FakeConsumer,
) -> None:
    # A broker slow to hand over a record its log still holds (after a restart, say): "gone"
    # would send the request again, so it is a BrokerError, retried by the caller.
    fake.ends = {TopicPartition("outcomes", 2): 10}
    lookup = RecordLookup(KafkaSettings(), "outcomes")
    with pytest.raises(BrokerError, match="reading outcomes/2 at 7: ReadTimeout") as raised:
        await lookup.read(2, 7)
    assert raised.value.retriable
    assert await lookup.read(2, 10) is None  # past the end: not there
    await lookup.stop()


async def test_a_failed_read_is_a_broker_error(fake: FakeConsumer) -> None:
    fake.failures["getmany"] = [KafkaConnectionError("gone")]
    lookup = RecordLookup(KafkaSettings(), "outcomes")
    with pytest.raises(BrokerError, match="reading outcomes/0 at 3: KafkaConnectionError"):
        await lookup.read(0, 3)
    await lookup.stop()


class FetchingConsumer(FakeConsumer):
    """A fake whose position moves past what each fetch handed over, as aiokafka's does."""

    async def getmany(
        self, *tps: TopicPartition, **kwargs: Any
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batch = await super().getmany(*tps, **kwargs)
        for tp, records in batch.items():
            self.positions[tp] = records[-1].offset + 1
        return batch


async def test_a_scan_hands_over_a_partition_up_to_its_end_or_until_told_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = use_fake_consumer(monkeypatch, lookup_module, FetchingConsumer())
    lookup = RecordLookup(KafkaSettings(), "outcomes")
    tp = TopicPartition("outcomes", 1)
    fake.ends[tp] = 2  # as Tansu tells it when offsets 1-3 are one batch
    fake.records = [consumed("outcomes", 1, n, b"k", b"%d" % n) for n in range(4)]
    seen: list[int] = []

    def every(record: Record) -> bool:
        seen.append(record.offset)
        return False

    await lookup.scan(1, None, every)
    assert seen == [0, 1, 2, 3]  # the whole fetch: never cut at the end offset
    assert fake.seeks == [(tp, 0)]
    fake.positions[tp] = 0
    fake.records = [consumed("outcomes", 1, n, b"k", b"") for n in (1, 2)]
    seen.clear()

    def first(record: Record) -> bool:
        seen.append(record.offset)
        return True

    await lookup.scan(1, 1, first)
    assert seen == [1] and fake.seeks[-1] == (tp, 1)  # stopped when told to
    fake.positions[tp] = 0
    fake.failures["getmany"] = [KafkaConnectionError("gone")]
    with pytest.raises(BrokerError, match="reading outcomes/1: KafkaConnectionError"):
        await lookup.scan(1, None, lambda record: False)
    await lookup.stop()
