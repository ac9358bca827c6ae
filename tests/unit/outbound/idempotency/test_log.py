"""The outcome index's compact storage, the idempotency log's batched starts and answers, and the
processor handing the reply's bytes and the answer's write to the service.

No broker here: the log's publisher is a stand-in; tests/integration/test_faults.py drives the
real one (SIGKILL under load: no POST twice).
"""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
from dataclasses import dataclass, field

import pytest

from bridge.config import IdempotencySettings, KafkaSettings
from bridge.kafka.errors import BrokerError
from bridge.kafka.records import Record
from bridge.outbound.idempotency.index import Answered, IdempotencyIndex, Started, digest
from bridge.outbound.idempotency.log import IdempotencyLog
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


# --- batched starts ------------------------------------------------------------------------


@dataclass
class FakePublisher:
    """Publisher.publish's contract; holds each acknowledgement until ``ack`` is set."""

    sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = field(
        default_factory=list
    )
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
        self.sent.append((topic, key, value, headers))
        await self.ack.wait()
        if self.fail is not None:
            raise self.fail
        return 0, len(self.sent) - 1


@dataclass
class FakeRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int = 5_000
    partition: int = 0
    offset: int = 0


def _log(publisher: FakePublisher, now: float = 10.0) -> IdempotencyLog:
    log = IdempotencyLog(KafkaSettings(), IdempotencySettings(), publisher, clock=lambda: now)  # type: ignore[arg-type]
    log._starts_publisher = publisher  # type: ignore[assignment]
    return log


async def test_starts_of_one_turn_share_one_record_and_wait_for_its_acknowledgement() -> None:
    publisher = FakePublisher()
    log = _log(publisher)
    begins = [asyncio.create_task(log.begin(f"req-{n}")) for n in range(3)]
    await asyncio.sleep(0.01)
    assert len(publisher.sent) == 1
    topic, key, value, headers = publisher.sent[0]
    assert topic == IdempotencySettings().topic and key is not None
    assert headers == [("state", b"starts")]
    assert value == b"".join(struct.pack(">Q", digest(f"req-{n}")) for n in range(3))
    # Not acknowledged yet: nobody may call Twilio.
    assert not any(task.done() for task in begins)
    assert await log.check("other") is None
    publisher.ack.set()
    await asyncio.gather(*begins)
    for n in range(3):
        log.release(f"req-{n}")
        assert await log.check(f"req-{n}") == Started(10.0)


async def test_a_start_that_was_not_written_fails_every_begin_of_its_batch() -> None:
    publisher = FakePublisher(fail=RuntimeError("refused"))
    publisher.ack.set()
    log = _log(publisher)
    results = await asyncio.gather(log.begin("a"), log.begin("b"), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    # Nothing was recorded, and a later copy of the id does not wait for the failed one.
    assert await asyncio.wait_for(log.check("a"), 1) is None


async def test_a_cancelled_begin_leaves_no_send_behind() -> None:
    publisher = FakePublisher()
    log = _log(publisher)
    begin = asyncio.create_task(log.begin("a"))
    await asyncio.sleep(0.01)
    begin.cancel()
    with pytest.raises(asyncio.CancelledError):
        await begin
    publisher.ack.set()
    assert await asyncio.wait_for(log.check("a"), 1) is None


def test_what_another_replica_wrote_is_read_back_in_every_format() -> None:
    log = _log(FakePublisher())
    starts = struct.pack(">Q", digest("batched-1")) + struct.pack(">Q", digest("batched-2"))
    log._read(FakeRecord(b"\0starts/x", starts, [("state", b"starts")]))
    log._read(FakeRecord(b"single", b"", [("state", b"started")]))  # as older versions wrote
    log._read(FakeRecord(b"batched-2", b"{}", [("state", b"answered")], 6_000, 3, 41))
    log._read(FakeRecord(None, b"", [("state", b"started")]))  # not ours: ignored
    answers = _answers_value(("batched-3", b'{"a":1}'), ("batched-4", b""))
    log._read(FakeRecord(b"\0answers/x", answers, [("state", b"answers")], 7_000, 2, 9))
    cut = _answers_value(("batched-5", b"{}"))[:-1]  # a reply cut short: nothing from it
    log._read(FakeRecord(b"\0answers/y", cut, [("state", b"answers")], 7_000, 2, 10))
    index = log._index
    assert index.prior("batched-1", now=10) == Started(5.0)
    assert index.prior("single", now=10) == Started(5.0)
    assert index.prior("batched-2", now=10) == Answered(6.0, 3, 41)
    assert index.prior("batched-3", now=10) == index.prior("batched-4", now=10) == Answered(7, 2, 9)
    assert index.prior("batched-5", now=10) is None


def _answers_value(*answers: tuple[str, bytes]) -> bytes:
    return b"".join(struct.pack(">QI", digest(i), len(r)) + r for i, r in answers)


async def test_answers_of_one_turn_share_one_record_and_release_their_ids_once_written() -> None:
    publisher = FakePublisher()
    log = _log(publisher)
    publisher.ack.set()
    await asyncio.gather(*(log.begin(f"req-{n}") for n in range(3)))
    publisher.sent.clear()
    publisher.ack.clear()
    written = [log.finish(f"req-{n}", f'{{"n":{n}}}'.encode()) for n in range(3)]
    await asyncio.sleep(0.01)
    assert len(publisher.sent) == 1
    _, key, value, headers = publisher.sent[0]
    assert headers == [("state", b"answers")] and key is not None and key.startswith(b"\0answers/")
    assert value == _answers_value(*((f"req-{n}", f'{{"n":{n}}}'.encode()) for n in range(3)))
    # Not acknowledged: a duplicate still waits, and nothing counts as written.
    duplicate = asyncio.create_task(log.check("req-1"))
    await asyncio.sleep(0.01)
    assert not duplicate.done() and not any(w.done() for w in written)
    publisher.ack.set()
    await asyncio.gather(*written)
    assert await duplicate == Answered(10.0, 0, 0)  # the batch's place in the topic
    assert log._running == {}
    # A caller giving up (its partition revoked) leaves the batch to the others.
    again = log.finish("req-9", b"{}")
    other = log.finish("req-8", b"{}")
    again.cancel()
    await other


async def test_answers_past_the_batch_size_go_in_a_record_of_their_own() -> None:
    publisher = FakePublisher()
    publisher.ack.set()
    log = _log(publisher)
    big = b"x" * (200 * 1024)
    await asyncio.gather(log.finish("a", big), log.finish("b", big), log.finish("c", b"{}"))
    assert [len(value or b"") for _, _, value, _ in publisher.sent] == [
        12 + len(big),
        12 + len(big) + 12 + 2,
    ]


async def test_a_refused_answer_fails_its_batch_and_frees_its_ids() -> None:
    publisher = FakePublisher(fail=RuntimeError("refused"))
    publisher.ack.set()
    log = _log(publisher)
    log._running["a"] = None  # as begin left it
    with pytest.raises(RuntimeError):
        await log.finish("a", b"{}")
    assert await asyncio.wait_for(log.check("a"), 1) is None  # nothing recorded, nothing waits


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


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            FakeRecord(
                b"\0answers/x",
                _answers_value(("a", b"1"), ("b", b"22")),
                [("state", b"answers")],
                offset=4,
            ),
            b"22",
        ),
        (
            FakeRecord(
                b"\0answers/x", _answers_value(("a", b"1")), [("state", b"answers")], offset=4
            ),
            None,
        ),
        (FakeRecord(b"b", b"33", [("state", b"answered")], offset=4), b"33"),
        (FakeRecord(b"b", b"33", [("state", b"answered")], offset=5), None),
    ],
    ids=["in a batch", "not in the batch", "a single answer", "gone"],
)
async def test_a_first_reply_is_read_back_from_its_record(
    record: FakeRecord, expected: bytes | None
) -> None:
    log = _log(FakePublisher())
    log._replies = FakeLookup(record)  # type: ignore[assignment]
    assert await log.first_reply("b", Answered(1.0, 0, 4)) == expected


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

    def slow_finish(request_id: str, reply: bytes) -> asyncio.Future[None]:
        async def later() -> None:
            await written.wait()
            await finish(request_id, reply)

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
