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


async def test_a_follower_of_some_partitions_changes_which_and_keeps_its_place(
    fake: FakeConsumer,
) -> None:
    one, two, three = (TopicPartition("seen", p) for p in (1, 2, 3))
    fake.ends.update({one: 0, two: 0, three: 0})
    read: list[tuple[int, int]] = []
    came = asyncio.Event()

    def on_record(record: Any) -> None:
        read.append((record.partition, record.offset))
        came.set()

    follower = TopicFollower(KafkaSettings(), "seen", on_record, max_records=10)
    await follower.start(1, {}, follow=(), wait=False)
    assert follower.partitions == {0, 1, 2, 3} and fake.assigned == set()
    await follower.catch_up()  # nothing followed: nothing to wait for
    await follower.follow({1, 2, 9})  # 9: not a partition of the topic
    assert fake.assigned == {one, two} and set(fake.seeks) == {(one, 0), (two, 0)}
    fake.records = [consumed("seen", 1, 4, b"k", b"")]
    await asyncio.wait_for(came.wait(), 10)
    fake.seeks.clear()
    await follower.follow({1, 3})
    # Partition 1 goes on after offset 4; 3 starts at its beginning; 2 is dropped.
    assert fake.assigned == {one, three} and set(fake.seeks) == {(one, 5), (three, 0)}
    assert read == [(1, 4)]
    await follower.stop()
