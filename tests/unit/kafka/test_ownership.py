"""A state topic's partitions owned through a group: each reread from its start on assignment,
caught up once read to where it ended then; broker failures are BrokerErrors."""

from __future__ import annotations

import logging

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from bridge.config import KafkaSettings
from bridge.kafka import ownership as ownership_module
from bridge.kafka.errors import BrokerError
from bridge.kafka.ownership import OwnedPartitions
from tests.helpers import FakeConsumer, consumed, use_fake_consumer

P0, P1 = TopicPartition("state", 0), TopicPartition("state", 1)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeConsumer:
    return use_fake_consumer(monkeypatch, ownership_module, FakeConsumer(ends={P0: 4, P1: 0}))


async def test_assigned_partitions_are_reread_and_caught_up_once_read(
    fake: FakeConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    owned = OwnedPartitions(KafkaSettings(), "state", "g.poller", "poller")
    await owned.start(2, {"cleanup.policy": "compact"})
    assert fake.calls[:2] == ["subscribe", "start"]
    fake.assign([P0, P1])
    with caplog.at_level(logging.INFO, "bridge.kafka.ownership"):
        await fake.listener.on_partitions_assigned([P0, P1])
    assert caplog.messages == ["poller: owns state partitions [0, 1]"]
    assert fake.seeks == [(P0, 0), (P1, 0)]
    assert owned.owned() == {0, 1}
    assert not await owned.caught_up(0)  # four records to read first
    assert await owned.caught_up(1)  # it was empty
    fake.records = [consumed("state", 0, n, b"cred", b"{}") for n in range(4)]
    assert [r.offset for r in await owned.fetch(500, max_records=3)] == [0, 1, 2]
    assert [(r.partition, r.offset) for r in await owned.fetch(500)] == [(0, 3)]
    fake.positions[P0] = 4
    assert await owned.caught_up(0)
    await fake.listener.on_partitions_revoked([P0])
    assert not await owned.caught_up(0)  # no longer known to be read
    await owned.stop()


async def test_broker_failures_are_broker_errors(fake: FakeConsumer) -> None:
    owned = OwnedPartitions(KafkaSettings(), "state", "g.poller", "poller")
    fake.failures["start"] = [KafkaConnectionError("Unable to bootstrap")]
    with pytest.raises(BrokerError, match="joining the group of state: KafkaConnectionError"):
        await owned.start(1, {})
    fake.failures["getmany"] = [KafkaTimeoutError()]
    with pytest.raises(BrokerError, match="reading state: KafkaTimeoutError"):
        await owned.fetch(500)
    fake.assign([P0])
    await fake.listener.on_partitions_assigned([P0])
    fake.failures["position"] = [KafkaTimeoutError()]
    with pytest.raises(BrokerError, match="reading the position in state: KafkaTimeoutError"):
        await owned.caught_up(0)
