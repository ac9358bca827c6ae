"""The outcome index's compact storage; the idempotency log's batched starts and answers per
partition, what a replica knows of its own partitions and where it asks about others; the
processor handing the reply's bytes and the answer's write to the service.

No broker here: the log's publisher is a stand-in; tests/integration/test_faults.py drives the
real one (SIGKILL under load: no POST twice).
"""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
from collections.abc import Collection
from dataclasses import dataclass, field

import pytest

from bridge.config import IdempotencySettings, KafkaSettings
from bridge.kafka.errors import BrokerError
from bridge.kafka.records import Record
from bridge.outbound.idempotency import index as index_module
from bridge.outbound.idempotency.index import Answered, IdempotencyIndex, Prior, Started, digest
from bridge.outbound.idempotency.log import IdempotencyLog, InStartsTopic
from bridge.outbound.idempotency.records import starts_headers
from bridge.outbound.replies import reply_bytes
from tests.helpers import (
    CREATED_MESSAGE,
    ENVELOPE,
    MemoryIdempotencyStore,
    answering,
    outbound_processor,
    request_record,
)

# --- the index -----------------------------------------------------------------------------


def test_ids_sharing_a_bucket_keep_their_own_entries() -> None:
    index = IdempotencyIndex(window_s=100)
    index._spread = 1  # a digest's top 16 bits pick its bucket
    keys = [7 << 48 | n for n in range(1, 50)]  # one bucket
    for n, key in enumerate(keys):
        index.record_started(key, at=10)
        if n % 2:
            index.record_answered(key, at=11, partition=n, offset=1000 + n)
    for n, key in enumerate(keys):
        expected = Answered(11, n, 1000 + n) if n % 2 else Started(10)
        assert index.prior_of(key, now=20) == expected
    assert index.prior_of(7 << 48 | 50, now=20) is None
    assert len(index) == len(keys)


def test_a_digest_that_appears_inside_another_entry_is_not_taken_for_it() -> None:
    index = IdempotencyIndex(window_s=100)
    index._spread = 1  # a digest's top 16 bits pick its bucket
    # An answer at partition 5, offset 0x1233 is stored as 5 << 48 | 0x1234: the same 8 bytes
    # as the digest below, which falls in the same bucket.
    index.record_answered(5 << 48 | 0xABC, at=10, partition=5, offset=0x1233)
    impostor = 5 << 48 | 0x1234
    assert index.prior_of(impostor, now=20) is None
    index.record_started(impostor, at=12)
    assert index.prior_of(impostor, now=20) == Started(12)
    assert index.prior_of(5 << 48 | 0xABC, now=20) == Answered(10, 5, 0x1233)


def test_expired_ids_leave_memory_as_the_sweep_passes() -> None:
    index = IdempotencyIndex(window_s=100)
    for n in range(10):
        index.record_answered(digest(f"old-{n}"), at=0, partition=0, offset=n)
    index.tick(200)
    for n in range(1 << 16):  # a write per bucket: the sweep has been everywhere
        index.record_started(digest(f"new-{n}"), at=200)
    assert len(index) == 1 << 16
    assert index.prior("old-3", now=200) is None


def test_another_replicas_clock_running_ahead_expires_nothing_early() -> None:
    index = IdempotencyIndex(window_s=100)
    index.record_answered(digest("a"), at=10, partition=1, offset=2)
    index.record_started(digest("b"), at=10_000)  # a record stamped by a clock far ahead
    for n in range(1 << 16):
        index.record_started(digest(f"new-{n}"), at=10_000)
    assert index.prior("a", now=20) == Answered(10, 1, 2)


def test_buckets_grow_a_few_at_a_time_and_every_id_stays_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(index_module, "_PER_BUCKET", 2)  # grow past 8,192 ids, not a million
    index = IdempotencyIndex(window_s=100)
    keys = [digest(f"req-{n}") for n in range(12_000)]
    for n, key in enumerate(keys):
        index.record_started(key, at=10)
        if n == 8_200:  # growing: some buckets moved, most not yet
            assert index._old is not None and index._bits == 14
            assert all(index.prior_of(k, now=20) == Started(10) for k in keys[: n + 1])
    assert index._old is None and len(index) == len(keys)
    for n, key in enumerate(keys):
        index.record_answered(key, at=11, partition=1, offset=n)
    assert all(index.prior_of(k, now=20) == Answered(11, 1, n) for n, k in enumerate(keys))
    assert index.prior("req-x", now=20) is None


def test_answers_loaded_at_once_are_found_and_an_id_answered_twice_keeps_its_first() -> None:
    index = IdempotencyIndex(window_s=100)
    index.load_answered((digest(f"a-{n}") for n in range(1000)), at=10, partition=2, offset=7)
    index.load_answered([digest("a-3")], at=12, partition=2, offset=9)
    assert index.prior("a-5", now=20) == Answered(10, 2, 7)
    assert index.prior("a-3", now=20) == Answered(10, 2, 7)
    index.record_started(digest("a-3"), at=13)  # an answer stands
    assert index.prior("a-3", now=20) == Answered(10, 2, 7)
    assert index.prior("a-5", now=110) is None  # and goes with the window


def test_an_index_is_sized_for_the_ids_it_expects() -> None:
    assert IdempotencyIndex(window_s=100)._bits == 12  # 4,096 buckets, to a million ids
    assert IdempotencyIndex(window_s=100, expected=2_000_000)._bits == 14


def test_an_id_costs_well_under_a_hundred_bytes() -> None:
    index = IdempotencyIndex(window_s=86_400)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(100_000):
            key = digest(f"req-{n}")
            index.record_started(key, at=1000)
            index.record_answered(key, at=1000, partition=n % 12, offset=10**9 + n)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A dict of tuples took ~260 bytes an id; 24-byte entries plus the buckets, ~60.
    assert used / 100_000 < 100
    assert index.prior_of(digest("req-77"), now=1001) == Answered(1000, 77 % 12, 10**9 + 77)


# --- the log: batched starts and answers, per partition ------------------------------------

STARTS_TOPIC, ANSWERS_TOPIC = IdempotencySettings().topic, IdempotencySettings().answers_topic
ANSWERS = [("state", b"answers")]
Sent = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]], int | None]


@dataclass
class FakePublisher:
    """Publisher.publish's contract; holds each acknowledgement until ``ack`` is set."""

    sent: list[Sent] = field(default_factory=list)
    ack: asyncio.Event = field(default_factory=asyncio.Event)
    fail: Exception | None = None

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> tuple[int, int]:
        self.sent.append((topic, key, value, headers, partition))
        await self.ack.wait()
        if self.fail is not None:
            raise self.fail
        return partition or 0, len(self.sent) - 1


@dataclass
class FakeFollower:
    """``TopicFollower``'s contract for the log: which partitions it follows, and a catch-up
    that waits for ``caught`` when one is given."""

    followed: set[int] = field(default_factory=set)
    caught: asyncio.Event | None = None

    async def follow(self, partitions: Collection[int]) -> None:
        self.followed = set(partitions)

    async def catch_up(self) -> None:
        if self.caught is not None:
            await self.caught.wait()

    async def stop(self) -> None:
        pass


@dataclass
class FakeRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int = 5_000
    partition: int = 0
    offset: int = 0


@dataclass
class FakeSearch:
    """``LogSearch``'s contract: what it finds, and what it was asked."""

    found: dict[tuple[int, int], Prior] = field(default_factory=dict)
    asked: list[tuple[int, int]] = field(default_factory=list)

    async def find(self, key: int, partition: int) -> Prior | None:
        self.asked.append((key, partition))
        return self.found.get((key, partition))

    async def stop(self) -> None:
        pass


def _log(publisher: FakePublisher, now: float = 10.0) -> IdempotencyLog:
    settings = IdempotencySettings(partitions=4)
    log = IdempotencyLog(KafkaSettings(), settings, publisher, clock=lambda: now)  # type: ignore[arg-type]
    log._starts_publisher = publisher  # type: ignore[assignment]
    log._starts = FakeFollower()  # type: ignore[assignment]
    log._answers = FakeFollower()  # type: ignore[assignment]
    log._search = FakeSearch()  # type: ignore[assignment]
    return log


async def _owning(log: IdempotencyLog, *partitions: int) -> None:
    log.assigned(frozenset(("requests", p) for p in partitions))
    assert log._synced is not None
    await log._synced


async def test_starts_of_one_turn_share_a_record_per_partition_and_wait_for_it() -> None:
    publisher = FakePublisher()
    log = _log(publisher)
    await _owning(log, 1, 2)
    log._answers_next[1] = 7  # the answers of partition 1 read so far
    begins = [asyncio.create_task(log.begin(f"req-{n}", 1)) for n in range(3)]
    begins.append(asyncio.create_task(log.begin("req-3", 6)))  # request partition 6: log 2
    await asyncio.sleep(0.01)
    assert [(t, p, h) for t, _, _, h, p in publisher.sent] == [
        (STARTS_TOPIC, 1, starts_headers(7)),
        (STARTS_TOPIC, 2, starts_headers(0)),
    ]
    _, key, value, _, _ = publisher.sent[0]
    assert key is not None and key.startswith(b"\0starts/")
    assert value == b"".join(struct.pack(">Q", digest(f"req-{n}")) for n in range(3))
    # Not acknowledged yet: nobody may call Twilio.
    assert not any(task.done() for task in begins)
    assert await log.check("other", 1) is None
    publisher.ack.set()
    await asyncio.gather(*begins)
    for n, partition in ((0, 1), (1, 1), (2, 1), (3, 2)):
        log.release(f"req-{n}")
        assert await log.check(f"req-{n}", partition) == Started(10.0)


async def test_a_start_that_was_not_written_fails_every_begin_of_its_batch() -> None:
    publisher = FakePublisher(fail=RuntimeError("refused"))
    publisher.ack.set()
    log = _log(publisher)
    await _owning(log, 0)
    results = await asyncio.gather(log.begin("a", 0), log.begin("b", 0), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    # Nothing was recorded, and a later copy of the id does not wait for the failed one.
    assert await asyncio.wait_for(log.check("a", 0), 1) is None


async def test_a_cancelled_begin_leaves_no_send_behind() -> None:
    publisher = FakePublisher()
    log = _log(publisher)
    begin = asyncio.create_task(log.begin("a", 0))
    await asyncio.sleep(0.01)
    begin.cancel()
    with pytest.raises(asyncio.CancelledError):
        await begin
    publisher.ack.set()
    assert await asyncio.wait_for(log.check("a", 0), 1) is None


def _answers_value(*answers: tuple[str, bytes]) -> bytes:
    return b"".join(struct.pack(">QI", digest(i), len(r)) + r for i, r in answers)


async def test_answers_of_one_turn_share_a_record_per_partition_and_release_their_ids() -> None:
    publisher = FakePublisher()
    log = _log(publisher)
    await _owning(log, 1)
    publisher.ack.set()
    await asyncio.gather(*(log.begin(f"req-{n}", 1) for n in range(3)))
    publisher.sent.clear()
    publisher.ack.clear()
    written = [log.finish(f"req-{n}", f'{{"n":{n}}}'.encode(), 1) for n in range(3)]
    await asyncio.sleep(0.01)
    assert len(publisher.sent) == 1
    topic, key, value, headers, partition = publisher.sent[0]
    assert (topic, partition, headers) == (ANSWERS_TOPIC, 1, [("state", b"answers")])
    assert key is not None and key.startswith(b"\0answers/")
    assert value == _answers_value(*((f"req-{n}", f'{{"n":{n}}}'.encode()) for n in range(3)))
    # Not acknowledged: a duplicate still waits, and nothing counts as written.
    duplicate = asyncio.create_task(log.check("req-1", 1))
    await asyncio.sleep(0.01)
    assert not duplicate.done() and not any(w.done() for w in written)
    publisher.ack.set()
    await asyncio.gather(*written)
    assert await duplicate == Answered(10.0, 1, 0)  # the batch's place in the topic
    assert log._running == {}
    # A caller giving up (its partition revoked) leaves the batch to the others.
    again = log.finish("req-9", b"{}", 1)
    other = log.finish("req-8", b"{}", 1)
    again.cancel()
    await other


async def test_answers_past_the_batch_size_go_in_a_record_of_their_own() -> None:
    publisher = FakePublisher()
    publisher.ack.set()
    log = _log(publisher)
    big = b"x" * (200 * 1024)
    await asyncio.gather(
        log.finish("a", big, 0), log.finish("b", big, 0), log.finish("c", b"{}", 0)
    )
    assert [len(value or b"") for _, _, value, _, _ in publisher.sent] == [
        12 + len(big),
        12 + len(big) + 12 + 2,
    ]


async def test_a_refused_answer_fails_its_batch_and_frees_its_ids() -> None:
    publisher = FakePublisher(fail=RuntimeError("refused"))
    publisher.ack.set()
    log = _log(publisher)
    log._running["a"] = None  # as begin left it
    with pytest.raises(RuntimeError):
        await log.finish("a", b"{}", 0)
    assert await asyncio.wait_for(log.check("a", 0), 1) is None  # nothing recorded, nothing waits


# --- the log: what a replica knows, and where it asks ---------------------------------------


async def test_requests_wait_until_the_partitions_gained_are_read_to_their_end() -> None:
    log = _log(FakePublisher())
    answers = log._answers
    assert isinstance(answers, FakeFollower)
    answers.caught = asyncio.Event()
    log.assigned(frozenset({("requests", 1), ("other-requests", 1), ("requests", 6)}))
    assert not log.ready and answers.followed == set()
    waiting = asyncio.create_task(log.check("a", 1))
    await asyncio.sleep(0.01)
    assert not waiting.done() and answers.followed == {1, 2}  # 6 % 4 partitions: 2
    log._read_answer(FakeRecord(b"\0answers/x", _answers_value(("a", b"{}")), ANSWERS, 9_000, 1, 4))
    answers.caught.set()
    assert await waiting == Answered(9.0, 1, 4)
    assert log.ready and log._answers_next == {1: 5}


async def test_a_partition_lost_is_forgotten_and_its_answers_no_longer_followed() -> None:
    log = _log(FakePublisher())
    await _owning(log, 1)
    log._read_answer(FakeRecord(b"\0answers/x", _answers_value(("a", b"{}")), ANSWERS, 9_000, 1))
    await _owning(log, 2)
    assert log._answers.followed == {2} and set(log._owned) == {2}  # type: ignore[attr-defined]
    log._read_answer(FakeRecord(b"\0answers/y", _answers_value(("b", b"{}")), ANSWERS, 9_000, 1))
    assert await log.check("a", 2) is None and await log.check("b", 1) is None
    await _owning(log)  # none at all: more replicas than partitions
    assert log._owned == {} and log.ready


async def test_an_id_started_in_another_owned_partition_is_known_there() -> None:
    log = _log(FakePublisher())
    await _owning(log, 1, 2)
    log._read_start(FakeRecord(b"\0starts/x", _digests("a"), starts_headers(0), 8_000, 2))
    log._read_answer(FakeRecord(b"\0answers/x", _answers_value(("a", b"{}")), ANSWERS, 9_000, 2))
    assert await log.check("a", 1) == Answered(9.0, 2, 0)  # resent under a key of partition 1
    assert log._search.asked == []  # type: ignore[attr-defined]


async def test_an_id_started_in_a_partition_owned_elsewhere_is_searched_for_there() -> None:
    log = _log(FakePublisher())
    await _owning(log, 1)
    log._read_start(FakeRecord(b"\0starts/x", _digests("a", "b"), starts_headers(0), 8_000, 3))
    search = log._search
    assert isinstance(search, FakeSearch)
    search.found[(digest("a"), 3)] = Answered(9.0, 3, 12)
    assert await log.check("a", 1) == Answered(9.0, 3, 12)
    # The filter never answers alone: "b" is not in partition 3's log after all.
    assert await log.check("b", 1) is None
    assert await log.check("c", 1) is None  # not in the filter: nothing to search
    assert search.asked == [(digest("a"), 3), (digest("b"), 3)]


async def test_a_start_of_an_owned_partition_without_its_answer_is_searched_for() -> None:
    """Started by the partition's previous owner, which died before the answer."""
    log = _log(FakePublisher())
    await _owning(log, 1)
    log._read_start(FakeRecord(b"\0starts/x", _digests("a"), starts_headers(0), 8_000, 1))
    log._search.found[(digest("a"), 1)] = Started(8.0)  # type: ignore[attr-defined]
    assert await log.check("a", 1) == Started(8.0)


def _digests(*ids: str) -> bytes:
    return b"".join(struct.pack(">Q", digest(i)) for i in ids)


async def test_what_the_single_topic_format_holds_is_read_back_whole() -> None:
    log = _log(FakePublisher())
    await _owning(log, 0)
    starts = _digests("batched-1", "batched-2")
    log._read_start(FakeRecord(b"\0starts/x", starts, [("state", b"starts")]))
    log._read_start(FakeRecord(b"single", b"", [("state", b"started")]))
    log._read_start(FakeRecord(b"batched-2", b"{}", [("state", b"answered")], 6_000, 3, 41))
    log._read_start(FakeRecord(None, b"", [("state", b"started")]))  # not ours: ignored
    answers = _answers_value(("batched-3", b'{"a":1}'), ("batched-4", b""))
    log._read_start(FakeRecord(b"\0answers/x", answers, ANSWERS, 7_000, 2, 9))
    cut = _answers_value(("batched-5", b"{}"))[:-1]  # a reply cut short: nothing from it
    log._read_start(FakeRecord(b"\0answers/y", cut, ANSWERS, 7_000, 2, 10))
    assert await log.check("batched-1", 0) == Started(5.0)
    assert await log.check("single", 3) == Started(5.0)
    assert await log.check("batched-2", 0) == InStartsTopic(6.0, 3, 41)
    for request_id in ("batched-3", "batched-4"):
        assert await log.check(request_id, 1) == InStartsTopic(7, 2, 9)
    assert await log.check("batched-5", 0) is None
    assert len(log._filter) == 0 and log._search.asked == []  # type: ignore[attr-defined]


@dataclass
class FakeLookup:
    """``RecordLookup``'s contract: the record at a place, None when it is gone."""

    record: FakeRecord
    failures: list[BrokerError] = field(default_factory=list)  # raised first, one per read
    reads: int = 0

    async def read(self, partition: int, offset: int) -> Record | None:
        self.reads += 1
        if self.failures:
            raise self.failures.pop(0)
        found = self.record
        if (partition, offset) != (found.partition, found.offset):
            return None
        return Record(
            "t", found.partition, found.offset, found.key, found.value, tuple(found.headers)
        )

    async def stop(self) -> None:
        pass


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            FakeRecord(
                b"\0answers/x", _answers_value(("a", b"1"), ("b", b"22")), ANSWERS, offset=4
            ),
            b"22",
        ),
        (FakeRecord(b"\0answers/x", _answers_value(("a", b"1")), ANSWERS, offset=4), None),
        (FakeRecord(b"b", b"33", [("state", b"answered")], offset=4), b"33"),
        (FakeRecord(b"b", b"33", [("state", b"answered")], offset=5), None),
    ],
    ids=["in a batch", "not in the batch", "a single answer", "gone"],
)
@pytest.mark.parametrize("where", [Answered, InStartsTopic])
async def test_a_first_reply_is_read_back_from_its_record_in_its_topic(
    record: FakeRecord, expected: bytes | None, where: type[Answered]
) -> None:
    log = _log(FakePublisher())
    elsewhere = FakeLookup(FakeRecord(None, b"wrong topic", ANSWERS, offset=4))
    lookups = (FakeLookup(record), elsewhere)
    if where is InStartsTopic:
        lookups = lookups[::-1]
    log._replies, log._single_replies = lookups  # type: ignore[assignment]
    assert await log.first_reply("b", where(1.0, 0, 4)) == expected
    assert elsewhere.reads == 0


async def test_a_failed_read_is_tried_again_never_taken_for_a_missing_reply() -> None:
    log = _log(FakePublisher())
    failure = BrokerError("reading", "KafkaConnectionError", retriable=True)
    lookup = FakeLookup(FakeRecord(b"b", b"33", [("state", b"answered")], offset=4), [failure])
    log._replies = lookup  # type: ignore[assignment]
    assert await log.first_reply("b", Answered(1.0, 0, 4)) == b"33"
    assert lookup.reads == 2


# --- the processor -------------------------------------------------------------------------


async def test_the_reply_is_serialised_once_and_the_answer_is_written_beside_it() -> None:
    twilio, store = answering(201, CREATED_MESSAGE), MemoryIdempotencyStore()
    processor = outbound_processor(twilio, idempotency=store)
    outcome = await processor.process(request_record(ENVELOPE))
    assert outcome.reply is not None and outcome.recorded is not None
    assert outcome.reply_value == reply_bytes(outcome.reply, 1_032_192)
    await outcome.recorded
    assert store.replies[0] == outcome.reply_value


async def test_a_duplicate_waits_until_the_answer_is_written() -> None:
    twilio, store = answering(201, CREATED_MESSAGE), MemoryIdempotencyStore()
    written = asyncio.Event()
    finish = store.finish

    def slow_finish(request_id: str, reply: bytes, partition: int) -> asyncio.Future[None]:
        async def later() -> None:
            await written.wait()
            await finish(request_id, reply, partition)

        return asyncio.ensure_future(later())

    store.finish = slow_finish  # type: ignore[method-assign]
    processor = outbound_processor(twilio, idempotency=store)
    first = await processor.process(request_record(ENVELOPE))
    again = asyncio.create_task(processor.process(request_record(ENVELOPE)))
    await asyncio.sleep(0.02)
    assert not again.done()  # the first answer is not acknowledged yet
    written.set()
    assert first.recorded is not None
    await first.recorded
    duplicate = await again
    assert len(twilio.requests) == 1
    assert duplicate.reply is not None and duplicate.reply.warnings[-1].startswith("duplicate")


@pytest.mark.parametrize("window_s", [0.001, 3600.0])
def test_a_start_never_replaces_a_live_answer(window_s: float) -> None:
    index = IdempotencyIndex(window_s)
    index.record_answered(digest("a"), at=10, partition=0, offset=1)
    index.record_started(digest("a"), at=10 + window_s / 2)
    assert index.prior("a", now=10 + window_s / 2) == Answered(10, 0, 1)
