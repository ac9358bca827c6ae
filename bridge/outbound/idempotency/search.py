"""What became of ids started in log partitions this replica does not own, read from the log.

A replica keeps exact outcomes only for the partitions it owns. When the id filter says that an
id may have been started in another partition (a client resending under another Kafka key), that
partition's starts are searched for it, and its answers from where the start says they begin.
Questions about one partition that come while it is being searched wait for the next search,
which answers all of them: a batch of ids resent under new keys costs one search a partition,
not one an id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.aio import TaskSet
from bridge.config import IdempotencySettings, KafkaSettings
from bridge.kafka.lookup import RecordLookup
from bridge.kafka.records import Record
from bridge.kafka.retry import until_taken
from bridge.outbound.idempotency.index import Answered, Prior, Started
from bridge.outbound.idempotency.records import (
    ANSWERS,
    ANSWERS_FROM,
    STARTS,
    STATE,
    answers,
    answers_from,
    digests,
    header,
)

__all__ = ["LogSearch"]


class LogSearch:
    """Answers "what became of this digest in that partition?" from the log itself."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: IdempotencySettings,
        clock: Callable[[], float],
    ) -> None:
        self._starts = RecordLookup(kafka, settings.topic)
        self._answers = RecordLookup(kafka, settings.answers_topic)
        self._window_s = settings.window_s
        self._clock = clock
        # Per partition: the digests asked about and not yet searched for.
        self._waiting: dict[int, dict[int, asyncio.Future[Prior | None]]] = {}
        self._searching = TaskSet("idempotency log searches")  # one task per partition
        self.searches = 0

    async def find(self, key: int, partition: int) -> Prior | None:
        """What became of digest ``key`` in ``partition`` within the window, if anything."""
        waiting = self._waiting.setdefault(partition, {})
        found = waiting.get(key)
        if found is None:
            found = waiting[key] = asyncio.get_running_loop().create_future()
        searching = self._searching.get(partition)
        if searching is None or searching.done():  # done: its last look found nobody waiting
            self._searching.add(self._search_all(partition), partition)
        return await asyncio.shield(found)

    async def stop(self) -> None:
        """Give up the searches under way, disconnect."""
        self._searching.cancel()
        await self._searching.wait(1.0)
        await self._starts.stop()
        await self._answers.stop()

    async def _search_all(self, partition: int) -> None:
        """Search ``partition`` until nobody waits for it any more."""
        while wanted := self._waiting.pop(partition, None):
            try:
                # Never "not found" for a read that failed: that would send again.
                found = await until_taken(
                    lambda: self._search(partition, set(wanted)),
                    f"idempotency: searching partition {partition}",
                )
            except BaseException:
                for future in wanted.values():
                    future.cancel()
                raise
            for key, future in wanted.items():
                if not future.done():
                    future.set_result(found.get(key))

    async def _search(self, partition: int, keys: set[int]) -> dict[int, Prior]:
        """The outcome of each of ``keys`` started in ``partition`` within the window."""
        self.searches += 1
        horizon = self._clock() - self._window_s
        # Digest → when it was last started, and the earliest offset its answer may be at.
        starts: dict[int, tuple[float, int]] = {}

        def on_start(record: Record) -> bool:
            begin = answers_from(header(record.headers, ANSWERS_FROM))
            at = (record.timestamp_ms or 0) / 1000
            if header(record.headers, STATE) != STARTS or begin is None or at <= horizon:
                return False  # not a start of this format, or expired
            for key in digests(record.value or b""):
                if key in keys:
                    earlier = starts.get(key)
                    starts[key] = (at, begin if earlier is None else min(begin, earlier[1]))
            return False

        await self._starts.scan(partition, None, on_start)
        if not starts:
            return {}
        answered: dict[int, Answered] = {}

        def on_answer(record: Record) -> bool:
            if header(record.headers, STATE) == ANSWERS:
                at = (record.timestamp_ms or 0) / 1000
                for key, _, _ in answers(record.value or b""):
                    if key in starts and key not in answered:
                        answered[key] = Answered(at, record.partition, record.offset)
            return len(answered) == len(starts)  # the rest were never answered

        await self._answers.scan(partition, min(b for _, b in starts.values()), on_answer)
        return {key: answered.get(key) or Started(at) for key, (at, _) in starts.items()}
