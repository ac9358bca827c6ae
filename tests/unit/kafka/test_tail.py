"""Following new records (``bridge.kafka.tail``): partitions added to the topic are picked up
without losing the place in the others. The broker is a stand-in here: Tansu cannot add
partitions (no CreatePartitions); reading the new records of every partition is exercised
against it in ``tests/integration/test_twiml.py``."""

from __future__ import annotations

from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.config import KafkaSettings
from bridge.kafka.tail import TopicTail

TOPIC = "answers"


class Consumer:
    """What the tail asks of aiokafka's consumer, for a topic the metadata says has ``found``."""

    def __init__(self, found: set[int], positions: dict[int, int]) -> None:
        self.found = found
        self.positions = {TopicPartition(TOPIC, p): o for p, o in positions.items()}
        self.calls: list[str] = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.found

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def assign(self, partitions: list[TopicPartition]) -> None:
        # As aiokafka does: a new assignment forgets every position.
        self.calls.append(f"assign {sorted(tp.partition for tp in partitions)}")
        self.positions = {tp: -1 for tp in partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0


def tail() -> TopicTail:
    return TopicTail(KafkaSettings(), TOPIC, lambda _: None)


async def test_an_added_partition_is_read_from_its_start_and_the_others_keep_their_place() -> None:
    consumer = Consumer({0, 1, 2}, {0: 40, 1: 7})
    await tail()._add_new_partitions(cast(AIOKafkaConsumer, consumer))
    assert consumer.calls == ["assign [0, 1, 2]"]
    assert {tp.partition: o for tp, o in consumer.positions.items()} == {0: 40, 1: 7, 2: 0}


async def test_nothing_changes_while_the_partitions_stay_the_same() -> None:
    consumer = Consumer({0, 1}, {0: 40, 1: 7})
    await tail()._add_new_partitions(cast(AIOKafkaConsumer, consumer))
    assert consumer.calls == []
