"""Outbound dedupe: the index (``bridge.outbound.idempotency.index``) and the processor's use of it.

The outcome store is an in-memory stand-in with the same contract as the Kafka-backed
``IdempotencyLog``; tests/integration/test_faults.py drives the real one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from bridge.outbound.idempotency.index import (
    Answered,
    IdempotencyIndex,
    Prior,
    Started,
    changes_state,
    digest,
)
from bridge.outbound.processor import Processor, ProcessorOptions
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder
from bridge.twilio.catalog import Catalog
from bridge.twilio.client import TwilioClient
from tests.unit.outbound.test_processor import (
    CREDENTIALS,
    ENVELOPE,
    SETTINGS,
    SINGLE,
    Twilio,
    answering,
    record,
)

GET = {"id": "fetch-1", "mode": "basic", "operation": "FetchBalance"}


# --- the index -----------------------------------------------------------------------------


def test_an_answer_wins_over_a_start_and_both_expire_with_the_window() -> None:
    index = IdempotencyIndex(window_s=100)
    assert index.prior("a", now=0) is None
    index.record_started(digest("a"), at=10)
    assert index.prior("a", now=20) == Started(10)
    index.record_answered(digest("a"), at=11, partition=2, offset=7)
    # The start read back from the topic later does not undo the answer.
    index.record_started(digest("a"), at=10)
    assert index.prior("a", now=20) == Answered(11, 2, 7)
    assert index.prior("a", now=111.5) is None
    assert len(index) == 0


def test_only_reads_are_sent_again() -> None:
    assert [changes_state(m) for m in ("GET", "head", "POST", "PUT", "PATCH", "DELETE")] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]


def test_ids_are_kept_as_64_bit_digests() -> None:
    assert digest("a") != digest("b") and digest("a") < 2**64


# --- the processor with an outcome store ---------------------------------------------------


class Store:
    """In-memory outcomes with IdempotencyLog's contract."""

    def __init__(self) -> None:
        self.index = IdempotencyIndex(3600)
        self.replies: dict[int, bytes] = {}
        self.running: dict[str, asyncio.Event] = {}
        self.now = 1000.0

    async def check(self, request_id: str, partition: int) -> Prior | None:
        while (running := self.running.get(request_id)) is not None:
            await running.wait()
        return self.index.prior(request_id, self.now)

    async def begin(self, request_id: str, partition: int) -> None:
        self.running[request_id] = asyncio.Event()
        self.index.record_started(digest(request_id), self.now)

    def finish(self, request_id: str, reply: bytes, partition: int) -> asyncio.Future[None]:
        offset = len(self.replies)
        self.replies[offset] = reply
        self.index.record_answered(digest(request_id), self.now, 0, offset)
        self.release(request_id)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.set_result(None)
        return written

    def release(self, request_id: str) -> None:
        running = self.running.pop(request_id, None)
        if running is not None:
            running.set()

    async def first_reply(self, request_id: str, answered: Answered) -> bytes | None:
        return self.replies.get(answered.offset)


def _processor(twilio: Twilio, store: Store, resend: bool = False) -> Processor:
    client = TwilioClient(SETTINGS, transport=httpx.MockTransport(twilio))
    builder = CallBuilder(Catalog.load(), Accounts(CREDENTIALS), SETTINGS)
    options = ProcessorOptions(resend_unknown=resend)
    return Processor(builder, client, SINGLE, options=options, idempotency=store)


CREATED = {"sid": "SM" + "1" * 32, "status": "queued"}


async def test_a_repeated_post_is_answered_with_the_first_reply_without_calling_twilio() -> None:
    twilio, store = answering(201, CREATED), Store()
    processor = _processor(twilio, store)
    first = await processor.process(record(ENVELOPE))
    again = await processor.process(record(ENVELOPE))
    assert len(twilio.requests) == 1
    assert first.reply is not None and again.reply is not None
    assert again.reply.body == first.reply.body and again.reply.status == "ok"
    assert again.reply.warnings[-1].startswith("duplicate request id")
    assert again.error is None


async def test_the_same_id_twice_at_once_is_sent_once() -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(201, json=CREATED)

    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return await slow(request)

    client = TwilioClient(SETTINGS, transport=httpx.MockTransport(handler))
    builder = CallBuilder(Catalog.load(), Accounts(CREDENTIALS), SETTINGS)
    processor = Processor(builder, client, SINGLE, idempotency=Store())
    both = asyncio.gather(*(processor.process(record(ENVELOPE)) for _ in range(2)))
    await asyncio.sleep(0.05)
    release.set()
    first, second = await both
    assert len(calls) == 1
    assert first.reply is not None and second.reply is not None
    assert first.reply.body == second.reply.body == CREATED


async def test_a_start_without_an_answer_is_an_unknown_outcome_unless_resending() -> None:
    twilio, store = answering(201, CREATED), Store()
    store.index.record_started(digest(ENVELOPE["id"]), at=990)  # a process died while sending
    outcome = await _processor(twilio, store).process(record(ENVELOPE))
    assert twilio.requests == []
    assert outcome.reply is not None and outcome.reply.error is not None
    assert outcome.reply.error.kind == "unknown_outcome"
    assert outcome.error is not None and outcome.error.request == ENVELOPE  # for a replay
    resent = await _processor(twilio, store, resend=True).process(record(ENVELOPE))
    assert len(twilio.requests) == 1 and resent.reply is not None
    assert resent.reply.status == "ok"


async def test_reads_are_not_recorded_and_go_to_twilio_each_time() -> None:
    twilio, store = answering(200, {"balance": "1.00"}), Store()
    processor = _processor(twilio, store)
    for _ in range(2):
        outcome = await processor.process(record(GET))
        assert outcome.reply is not None and outcome.reply.status == "ok"
    assert len(twilio.requests) == 2 and len(store.index) == 0


async def test_a_failed_post_is_answered_again_with_its_failure() -> None:
    error: dict[str, Any] = {"code": 21211, "message": "bad To", "status": 400}
    twilio, store = answering(400, error), Store()
    processor = _processor(twilio, store)
    first = await processor.process(record(ENVELOPE))
    again = await processor.process(record(ENVELOPE))
    assert len(twilio.requests) == 1
    assert again.reply is not None and again.reply.error is not None
    assert again.reply.error.model_dump() == first.reply.error.model_dump()  # type: ignore[union-attr]
    assert again.error is not None  # the failure goes to the error topic again
    assert json.loads(store.replies[0])["id"] == ENVELOPE["id"]
