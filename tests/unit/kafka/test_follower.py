"""The topic follower's broker boundary: start and catch_up raise BrokerError, reading in the
background is retried until the broker answers. aiokafka's consumer is a fake here."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from bridge.config import KafkaSettings
from bridge.kafka import follower as follower_module
from bridge.kafka.errors import BrokerError
from bridge.kafka.follower import TopicFollower
from tests.helpers import FakeConsumer, consumed, use_fake_consumer

SEEN = TopicPartition("seen", 0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeConsumer:
    """The aiokafka consumer of every follower of the test, over an existing topic ``seen``."""
    return use_fake_consumer(monkeypatch, follower_module, FakeConsumer(ends={SEEN: 0}))


async def test_start_raises_a_broker_error(fake: FakeConsumer) -> None:
    fake.failures["start"] = [KafkaConnectionError("Unable to bootstrap")]
    with pytest.raises(BrokerError, match="starting to follow seen: KafkaConnectionError"):
        await TopicFollower(KafkaSettings(), "seen", lambda _: None).start(1, {})


async def test_a_failed_read_is_retried_and_catch_up_raises(fake: FakeConsumer) -> None:
    read: list[Any] = []
    came = asyncio.Event()

    def on_record(record: Any) -> None:
        read.append(record)
        came.set()

    follower = TopicFollower(KafkaSettings(), "seen", on_record)
    await follower.start(1, {})
    assert fake.assigned == {SEEN} and (SEEN, 0) in fake.seeks
    fake.failures["getmany"] = [KafkaConnectionError("gone")]
    fake.records = [consumed("seen", 0, 0, b"id-1", b"")]
    await asyncio.wait_for(came.wait(), 10)  # after the failed read, a pause, then the record
    assert [r.key for r in read] == [b"id-1"]
    fake.failures["end_offsets"] = [KafkaTimeoutError()]
    with pytest.raises(BrokerError, match="catching up with seen: KafkaTimeoutError"):
        await follower.catch_up()
    await follower.stop()


async def test_a_topic_without_metadata_yet_is_refreshed_until_its_partitions_show(
    fake: FakeConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = TopicPartition("later", 0)
    refreshed = 0

    async def force_metadata_update() -> None:
        nonlocal refreshed
        refreshed += 1
        if refreshed == 2:
            fake.ends[later] = 0  # the broker's metadata now has the new topic

    monkeypatch.setattr(fake, "refresh_metadata", force_metadata_update)
    follower = TopicFollower(KafkaSettings(), "later", lambda _: None)
    await follower.start(1, {})
    assert refreshed == 2 and fake.assigned == {later}
    await follower.stop()
