"""What many tests share: the project's root, a Twilio account SID, a stored instance, and a
stand-in for aiokafka's consumer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from bridge.instances.model import Instance

__all__ = [
    "ACCOUNT",
    "CHART",
    "INSTANCE_ACCOUNT",
    "README",
    "ROOT",
    "SCHEMAS",
    "FakeConsumer",
    "consumed",
    "stored_instance",
]

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
CHART = ROOT / "helm" / "twilio-kafka-bridge"
README = ROOT / "README.md"
# Test account SIDs: any 32 hex digits will do; an instance's differs from the settings' one.
ACCOUNT = "AC" + "0" * 32
INSTANCE_ACCOUNT = "AC" + "c" * 32


def stored_instance(
    name: str,
    account_sid: str,
    auth_token: str,
    *,
    revision: int = 1,
    tags: tuple[str, ...] = (),
    **configuration: Any,
) -> Instance:
    """Instance ``name`` of ``account_sid`` with ``auth_token``, plus ``configuration``."""
    return Instance.model_validate(
        {
            "name": name,
            "configuration": {
                "account_sid": account_sid,
                "auth_token": auth_token,
                **configuration,
            },
            "tags": list(tags),
            "revision": revision,
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-02T00:00:00.000Z",
        }
    )


@dataclass
class FakeConsumer:
    """aiokafka's consumer, for the Kafka adapter's unit tests: ``records`` come in one fetch,
    each call named in ``failures`` raises what it holds (the first in its list, once)."""

    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=set)
    listener: Any = None
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.failures.get(name):
            raise self.failures[name].pop(0)

    async def start(self) -> None:
        self._call("start")

    async def stop(self) -> None:
        self._call("stop")

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self._call("subscribe")
        self.listener = listener

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = set(partitions)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.ends if tp.topic == topic}

    async def force_metadata_update(self) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.seeks += [(tp, 0) for tp in tps]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._call("end_offsets")
        return {tp: self.ends.get(tp, 0) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    async def position(self, tp: TopicPartition) -> int:
        self._call("position")
        return self.positions.get(tp, 0)

    async def getmany(
        self, *_: TopicPartition, **__: Any
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self._call("getmany")
        if not self.records:
            await asyncio.sleep(0.01)  # as a fetch waits for records that do not come
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for record in self.records:
            batch.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        self.records = []
        return batch


def consumed(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka's consumer hands it over."""
    return ConsumerRecord(
        topic, partition, offset, 1_000, 0, key, value, None, 0, 0, [("state", b"x")]
    )


def use_fake_consumer(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, consumer: FakeConsumer
) -> FakeConsumer:
    """Make ``module`` (of ``bridge.kafka``) create ``consumer`` instead of aiokafka's, and
    find every topic it creates already there."""

    async def topic_exists(*_: Any, **__: Any) -> None:
        pass

    monkeypatch.setattr(module, "AIOKafkaConsumer", lambda **_: consumer)
    if hasattr(module, "create_topic"):
        monkeypatch.setattr(module, "create_topic", topic_exists)
    return consumer
