"""Searching the log for ids started in partitions this replica does not own
(``bridge.outbound.idempotency.search``), over stand-ins for the two topics' readers."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.config import IdempotencySettings, KafkaSettings
from bridge.kafka.errors import BrokerError
from bridge.kafka.records import Record
from bridge.outbound.idempotency.index import Answered, Started, digest
from bridge.outbound.idempotency.records import ANSWER, STARTS, STATE, starts_headers
from bridge.outbound.idempotency.search import LogSearch

NOW = 1000.0


@dataclass
class FakeTopic:
    """``RecordLookup.scan``'s contract over records held here, per partition."""

    records: dict[int, list[Record]] = field(default_factory=dict)
    scans: list[tuple[int, int | None]] = field(default_factory=list)
    failures: list[BrokerError] = field(default_factory=list)
    hold: asyncio.Event | None = None

    def add(
        self, partition: int, value: bytes, headers: list[tuple[str, bytes]], at: float
    ) -> None:
        held = self.records.setdefault(partition, [])
        record = Record("t", partition, len(held), b"k", value, tuple(headers), round(at * 1000))
        held.append(record)

    async def scan(
        self, partition: int, start: int | None, on_record: Callable[[Record], bool]
    ) -> None:
        self.scans.append((partition, start))
        if self.hold is not None:
            await self.hold.wait()
        if self.failures:
            raise self.failures.pop(0)
        for record in self.records.get(partition, [])[start or 0 :]:
            if on_record(record):
                return

    async def stop(self) -> None:
        pass


def _search() -> tuple[LogSearch, FakeTopic, FakeTopic]:
    search = LogSearch(KafkaSettings(), IdempotencySettings(window_s=100), lambda: NOW)
    starts, answers = FakeTopic(), FakeTopic()
    search._starts, search._answers = starts, answers  # type: ignore[assignment]
    return search, starts, answers


def _starts(*ids: str) -> bytes:
    return b"".join(struct.pack(">Q", digest(i)) for i in ids)


def _answers(*ids: str) -> bytes:
    return b"".join(ANSWER.pack(digest(i), 2) + b"{}" for i in ids)


async def test_a_start_is_found_with_its_answer_from_where_the_start_says() -> None:
    search, starts, answers = _search()
    answers.add(3, _answers("old"), [(STATE, b"answers")], at=950)  # offset 0
    starts.add(3, _starts("a", "b"), starts_headers(1), at=990)
    answers.add(3, _answers("x", "a"), [(STATE, b"answers")], at=991)  # offset 1
    assert await search.find(digest("a"), 3) == Answered(991, 3, 1)
    assert await search.find(digest("b"), 3) == Started(990)  # never answered
    assert await search.find(digest("c"), 3) is None  # a false match of the filter
    assert answers.scans[0] == (3, 1)  # the answers before the start were not read


async def test_expired_starts_and_starts_of_the_single_topic_format_are_not_taken() -> None:
    search, starts, _ = _search()
    starts.add(3, _starts("gone"), starts_headers(0), at=NOW - 100)
    starts.add(3, _starts("single"), [(STATE, STARTS)], at=990)
    assert await search.find(digest("gone"), 3) is None
    assert await search.find(digest("single"), 3) is None


async def test_questions_about_one_partition_share_a_search() -> None:
    search, starts, answers = _search()
    starts.add(3, _starts("a", "b"), starts_headers(0), at=990)
    answers.add(3, _answers("a", "b"), [(STATE, b"answers")], at=991)
    starts.hold = asyncio.Event()
    first = asyncio.create_task(search.find(digest("a"), 3))
    await asyncio.sleep(0.01)  # the first search holds the partition
    waiting = [asyncio.create_task(search.find(digest(i), 3)) for i in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    starts.hold.set()
    assert await first == Answered(991, 3, 0)
    assert await asyncio.gather(*waiting) == [Answered(991, 3, 0), Answered(991, 3, 0), None]
    assert search.searches == 2  # the one under way, then one for all who came meanwhile
    assert await search.find(digest("b"), 3) == Answered(991, 3, 0)  # a later one searches again
    assert search.searches == 3
    await search.stop()


async def test_a_failed_read_is_searched_again_never_taken_for_nothing() -> None:
    search, starts, answers = _search()
    starts.add(3, _starts("a"), starts_headers(0), at=990)
    starts.failures.append(BrokerError("reading", "KafkaConnectionError", retriable=True))
    assert await search.find(digest("a"), 3) == Started(990)
    assert len(starts.scans) == 2
