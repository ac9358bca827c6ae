"""The request consumer's broker boundary: aiokafka errors become BrokerError; lag is measured.
aiokafka's consumer is a fake here; tests/integration drives the real one."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RecordTooLargeError

from bridge.config import KafkaSettings, ProcessingSettings
from bridge.kafka import consumer as consumer_module
from bridge.kafka.consumer import RequestConsumer
from bridge.kafka.errors import BrokerError
from bridge.kafka.records import Record
from tests.helpers import FakeConsumer, consumed, use_fake_consumer

REQUESTS = TopicPartition("requests", 0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeConsumer:
    """The aiokafka consumer every RequestConsumer of the test gets."""
    return use_fake_consumer(monkeypatch, consumer_module, FakeConsumer())


def _consumer(
    handled: list[Record] | None = None, came: asyncio.Event | None = None
) -> RequestConsumer:
    async def handle(record: Record) -> None:
        if handled is not None:
            handled.append(record)
        if came is not None:
            came.set()

    return RequestConsumer(KafkaSettings(), ProcessingSettings(), handle)


async def test_start_raises_a_broker_error(fake: FakeConsumer) -> None:
    fake.failures["start"] = [KafkaConnectionError("Unable to bootstrap")]
    with pytest.raises(BrokerError) as raised:
        await _consumer().start()
    assert (raised.value.what, raised.value.reason) == (
        "starting the request consumer",
        "KafkaConnectionError",
    )
    assert "subscribe" not in fake.calls


async def test_lag_is_measured_or_raises_a_broker_error(fake: FakeConsumer) -> None:
    consumer = _consumer()
    assert await consumer.lag() == {}  # nothing assigned: nothing to ask
    fake.assign([REQUESTS])
    fake.ends[REQUESTS] = 7
    assert await consumer.lag() == {REQUESTS: 7}  # never committed: from the beginning
    fake.failures["end_offsets"] = [KafkaTimeoutError()]
    with pytest.raises(BrokerError, match="measuring consumer lag: KafkaTimeoutError"):
        await consumer.lag()


async def test_a_failed_fetch_ends_run_with_a_broker_error(fake: FakeConsumer) -> None:
    handled: list[Record] = []
    came = asyncio.Event()
    fake.records = [consumed("requests", 0, 5, b"k", b"{}")]
    fake.failures["getmany"] = [RecordTooLargeError()]
    consumer = _consumer(handled, came)
    with pytest.raises(BrokerError, match="fetching requests: RecordTooLargeError"):
        await consumer.run(asyncio.Event())
    assert handled == []
    fake.failures["getmany"] = []
    stopping = asyncio.Event()
    running = asyncio.create_task(consumer.run(stopping))
    await asyncio.wait_for(came.wait(), 10)
    stopping.set()
    await running
    assert [(r.topic, r.partition, r.offset, r.key) for r in handled] == [("requests", 0, 5, b"k")]
    await consumer.stop()


async def test_every_assignment_is_told_whole_even_an_empty_one(fake: FakeConsumer) -> None:
    told: list[frozenset[tuple[str, int]]] = []

    async def handle(record: Record) -> None:
        pass

    consumer = RequestConsumer(KafkaSettings(), ProcessingSettings(), handle, told.append)
    await consumer.start()
    await fake.listener.on_partitions_assigned({REQUESTS, TopicPartition("requests", 3)})
    await fake.listener.on_partitions_assigned(set())  # more replicas than partitions
    assert told == [frozenset({("requests", 0), ("requests", 3)}), frozenset()]
    assert consumer.joined
