"""Creating topics: an existing topic is fine, any other refusal is a BrokerError."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from bridge.config import KafkaSettings
from bridge.kafka import admin as admin_module
from bridge.kafka.admin import create_topic, create_topics
from bridge.kafka.errors import BrokerError


@dataclass
class Response:
    topic_errors: list[tuple[str, int, str]]


@dataclass
class FakeAdmin:
    """aiokafka's admin client, answering every topic with ``code``."""

    code: int = 0
    start_failure: Exception | None = None
    closed: bool = False
    created: list[Any] = field(default_factory=list)
    connection: dict[str, Any] = field(default_factory=dict)

    async def start(self) -> None:
        if self.start_failure is not None:
            raise self.start_failure

    async def create_topics(self, topics: list[Any]) -> Response:
        self.created += topics
        return Response([(topic.name, self.code, "the broker's reason") for topic in topics])

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    fake = FakeAdmin()

    def client(**connection: Any) -> FakeAdmin:
        fake.connection = connection
        return fake

    monkeypatch.setattr(admin_module, "AIOKafkaAdminClient", client)
    return fake


@pytest.mark.parametrize("code", [0, 36], ids=["created", "already there"])
async def test_a_topic_created_or_already_there_is_fine(admin: FakeAdmin, code: int) -> None:
    admin.code = code
    await create_topics("k:9092", (name for name in ["a", "b"]), partitions=3)
    assert [(t.name, t.num_partitions) for t in admin.created] == [("a", 3), ("b", 3)]
    assert admin.closed


async def test_a_refused_topic_is_a_broker_error(admin: FakeAdmin) -> None:
    admin.code = 44  # POLICY_VIOLATION
    with pytest.raises(BrokerError) as raised:
        await create_topics("k:9092", ["a"])
    assert str(raised.value) == (
        "creating topics a: PolicyViolationError: cannot create topic a: the broker's reason"
    )
    assert raised.value.retriable is False


async def test_an_unreachable_broker_is_a_broker_error_and_the_client_is_closed(
    admin: FakeAdmin,
) -> None:
    admin.start_failure = KafkaConnectionError("Unable to bootstrap")
    with pytest.raises(BrokerError, match="creating topics a, b: KafkaConnectionError"):
        await create_topics("k:9092", ["a", "b"])
    assert admin.closed


async def test_one_topic_of_the_bridge_is_created_over_its_connection(admin: FakeAdmin) -> None:
    settings = KafkaSettings(bootstrap_servers="k:9093", client_id="bridge-7")
    await create_topic(settings, "seen", 2, {"cleanup.policy": "compact"})
    assert [(t.name, t.num_partitions, t.topic_configs) for t in admin.created] == [
        ("seen", 2, {"cleanup.policy": "compact"})
    ]
    assert admin.connection["bootstrap_servers"] == "k:9093"
    assert admin.connection["client_id"] == "bridge-7"
