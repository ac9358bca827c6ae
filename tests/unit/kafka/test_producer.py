"""The publisher's broker boundary: aiokafka errors become BrokerError, publishes are retried
until acknowledged, an oversized record is refused at once. aiokafka's producer is a fake here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from bridge.config import KafkaSettings
from bridge.kafka import producer as producer_module
from bridge.kafka.errors import BrokerError
from bridge.kafka.producer import Publisher, RecordTooLarge


@dataclass
class Sent:
    partition: int = 3
    offset: int = 42


@dataclass
class FakeClient:
    failure: Exception | None = None
    topics: list[str] = field(default_factory=list)

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

    async def start(self) -> None:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")

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
