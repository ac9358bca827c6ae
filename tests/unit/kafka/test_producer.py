"""The publisher's broker boundary: aiokafka errors become BrokerError, publishes are retried
until acknowledged, an oversized record is refused at once, refusals at start-up say what to
change, connections tell reachability. aiokafka's producer is a fake here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    UnknownError,
)

from bridge.config import KafkaSettings
from bridge.kafka import producer as producer_module
from bridge.kafka.errors import BrokerError
from bridge.kafka.producer import Publisher, RecordTooLarge


@dataclass
class Sent:
    partition: int = 3
    offset: int = 42


@dataclass(frozen=True)
class Broker:
    nodeId: int  # noqa: N815 - aiokafka's name


@dataclass
class FakeCluster:
    known: set[Broker] = field(default_factory=set)

    def brokers(self) -> set[Broker]:
        return self.known


@dataclass
class Answer:
    topics: list[tuple[int, str, bool, list[Any]]]


@dataclass
class FakeClient:
    failure: Exception | None = None
    topics: list[str] = field(default_factory=list)
    cluster: FakeCluster = field(default_factory=FakeCluster)
    codes: dict[str, int] = field(default_factory=dict)  # metadata error code per topic
    coordinator_failure: Exception | None = None
    ready_nodes: set[int] = field(default_factory=set)

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request: Any) -> Answer:
        names = request._topics
        return Answer([(self.codes.get(name, 0), name, False, []) for name in names])

    async def coordinator_lookup(self, kind: Any, group: str) -> int:
        if self.coordinator_failure is not None:
            raise self.coordinator_failure
        return 1

    async def ready(self, node: int) -> bool:
        if node < 0:
            raise KafkaConnectionError("refused")
        return node in self.ready_nodes

    async def add_topic(self, topic: str) -> None:
        self.topics.append(topic)

    async def fetch_all_metadata(self) -> None:
        if self.failure is not None:
            raise self.failure


@dataclass
class FakeProducer:
    """aiokafka's producer: raises ``failures`` one per send, then acknowledges."""

    failures: list[Exception] = field(default_factory=list)
    client: FakeClient = field(default_factory=FakeClient)
    sends: int = 0
    start_failure: Exception = field(
        default_factory=lambda: KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")
    )

    async def start(self) -> None:
        raise self.start_failure

    async def stop(self) -> None:
        raise KafkaTimeoutError()

    async def send_and_wait(self, topic: str, value: bytes | None, **_: Any) -> Sent:
        self.sends += 1
        if self.failures:
            raise self.failures.pop(0)
        return Sent()


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> FakeProducer:
    """The producer every Publisher of the test gets."""
    fake = FakeProducer()
    monkeypatch.setattr(producer_module, "AIOKafkaProducer", lambda **_: fake)
    return fake


def _publisher() -> Publisher:
    return Publisher(KafkaSettings(), max_backoff_s=0.2)


async def test_start_and_stop_raise_broker_errors(producer: FakeProducer) -> None:
    publisher = _publisher()
    with pytest.raises(BrokerError) as started:
        await publisher.start()
    assert (started.value.what, started.value.reason) == (
        "starting the producer",
        "KafkaConnectionError",
    )
    with pytest.raises(BrokerError, match="stopping the producer: KafkaTimeoutError"):
        await publisher.stop()


async def test_a_publish_is_retried_until_acknowledged(
    producer: FakeProducer, caplog: pytest.LogCaptureFixture
) -> None:
    producer.failures += [KafkaTimeoutError(), KafkaConnectionError("gone")]
    with caplog.at_level(logging.WARNING, "bridge.kafka.retry"):
        assert await _publisher().publish("replies", b"k", b"v", []) == (3, 42)
    assert producer.sends == 3
    assert producer.client.topics == ["replies"]
    assert caplog.messages == [
        "publish to replies failed (KafkaTimeoutError); retrying in 0.1 s",
        "publish to replies failed (KafkaConnectionError); retrying in 0.2 s",
    ]


async def test_an_oversized_record_is_refused_without_retrying(producer: FakeProducer) -> None:
    producer.failures.append(MessageSizeTooLargeError())
    with pytest.raises(RecordTooLarge, match="3 bytes exceed the producer limit"):
        await _publisher().publish("replies", None, b"abc", [])
    assert producer.sends == 1


@pytest.mark.parametrize(
    "failure", [None, KafkaConnectionError("gone"), OSError(), TimeoutError()], ids=repr
)
async def test_reachable_says_false_instead_of_raising(
    producer: FakeProducer, failure: Exception | None
) -> None:
    producer.client.failure = failure
    assert await _publisher().reachable(1.0) is (failure is None)


@pytest.mark.parametrize(
    ("refusal", "why"),
    [
        (UnknownError(), "does not support it"),
        (ClusterAuthorizationFailedError(), "IdempotentWrite"),
    ],
)
async def test_a_refused_idempotent_producer_says_which_setting_to_change(
    producer: FakeProducer, refusal: Exception, why: str
) -> None:
    producer.client.cluster.known = {Broker(1)}  # connected: the producer id was refused
    producer.start_failure = refusal
    with pytest.raises(BrokerError) as started:
        await _publisher().start()
    assert started.value.reason == type(refusal).__name__
    assert "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER=false" in started.value.detail
    assert why in started.value.detail


async def test_without_idempotence_a_refusal_at_start_is_passed_on_as_it_is(
    producer: FakeProducer,
) -> None:
    producer.client.cluster.known = {Broker(1)}
    producer.start_failure = UnknownError()
    with pytest.raises(BrokerError) as started:
        await Publisher(KafkaSettings(idempotent_producer=False)).start()
    assert started.value.reason == "UnknownError"
    assert "IDEMPOTENT" not in str(started.value)


async def test_access_check_names_every_refused_topic(producer: FakeProducer) -> None:
    producer.client.codes = {"replies": 3, "errors": 29, "requests": 5}  # 5: no leader yet
    with pytest.raises(BrokerError) as checked:
        await _publisher().check_access(["requests", "replies", "errors"], "group")
    assert checked.value.reason == "UnknownTopicOrPartitionError"
    assert "topic replies does not exist" in checked.value.detail
    assert "not authorised for topic errors" in checked.value.detail
    assert "requests" not in checked.value.detail


async def test_access_check_names_a_refused_group_and_waits_out_the_rest(
    producer: FakeProducer,
) -> None:
    producer.client.coordinator_failure = GroupCoordinatorNotAvailableError()
    await _publisher().check_access(["requests"], "group-a")
    producer.client.coordinator_failure = GroupAuthorizationFailedError()
    with pytest.raises(BrokerError) as checked:
        await _publisher().check_access(["requests"], "group-a")
    assert "consumer group group-a" in checked.value.detail


async def test_connected_follows_the_connections_to_the_brokers(producer: FakeProducer) -> None:
    publisher = _publisher()
    assert not await publisher.connected(1.0)  # no broker known
    producer.client.cluster.known = {Broker(-1), Broker(2)}
    assert not await publisher.connected(1.0)  # one refuses, the other is not ready
    producer.client.ready_nodes = {2}
    assert await publisher.connected(1.0)
