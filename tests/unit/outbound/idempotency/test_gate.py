"""The idempotency gate (``bridge.outbound.idempotency.gate``) around a send, with the in-memory
store of tests/helpers.py and a counted stand-in for the send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.contract.envelopes import AdvancedRequest, BasicRequest, Reply, parse_request
from bridge.outbound.idempotency.gate import Guarded, IdempotencyGate
from bridge.outbound.idempotency.index import Answered, Started, digest
from bridge.outbound.replies import reply_bytes
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder, TwilioCall
from bridge.twilio.catalog import Catalog
from tests.helpers import CREDENTIALS, ENVELOPE, TWILIO_SETTINGS, MemoryIdempotencyStore

GET = {"id": "fetch-1", "mode": "basic", "operation": "FetchBalance"}

LIMIT = 1_000_000


def request_and_call(envelope: dict[str, Any]) -> tuple[BasicRequest | AdvancedRequest, TwilioCall]:
    request = parse_request(json.dumps(envelope).encode())
    return request, CallBuilder(Catalog.load(), Accounts(CREDENTIALS), TWILIO_SETTINGS).build(
        request
    )


class Send:
    """The send the gate is around: counts its calls, answers ``reply`` or raises."""

    def __init__(self, reply: Reply | None = None, error: BaseException | None = None) -> None:
        self.reply = reply or Reply(id=ENVELOPE["id"], status="ok", body={"sid": "SM1"})
        self.error = error
        self.calls = 0

    async def __call__(self) -> Reply:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.reply


async def through(
    gate: IdempotencyGate, send: Send, envelope: dict[str, Any] = ENVELOPE
) -> Guarded:
    request, call = request_and_call(envelope)
    return await gate.around(request, call, send, 0)


def gate(
    store: MemoryIdempotencyStore | None, *, resend_unknown: bool = False, limit: int = LIMIT
) -> IdempotencyGate:
    return IdempotencyGate(store, resend_unknown=resend_unknown, record_limit=limit)


async def test_without_a_store_every_request_is_sent_and_nothing_recorded() -> None:
    send = Send()
    for _ in range(2):
        assert await through(gate(None), send) == Guarded(send.reply)
    assert send.calls == 2


async def test_a_read_passes_without_being_recorded() -> None:
    store, send = MemoryIdempotencyStore(), Send()
    for _ in range(2):
        assert await through(gate(store), send, GET) == Guarded(send.reply)
    assert send.calls == 2 and len(store.index) == 0


async def test_a_first_post_is_sent_and_its_reply_recorded() -> None:
    store, send = MemoryIdempotencyStore(), Send()
    guarded = await through(gate(store), send)
    assert send.calls == 1 and guarded.reply == send.reply
    assert guarded.value == reply_bytes(send.reply, LIMIT) == store.replies[0]
    assert guarded.recorded is not None and guarded.recorded.done()
    assert store.index.prior(ENVELOPE["id"], store.now) == Answered(store.now, 0, 0)
    assert store.running == {}


async def test_the_recorded_reply_fits_the_record_limit() -> None:
    store = MemoryIdempotencyStore()
    send = Send(Reply(id=ENVELOPE["id"], status="ok", body={"text": "x" * 5000}))
    guarded = await through(gate(store, limit=2000), send)
    assert guarded.value is not None and len(guarded.value) <= 2000
    assert "body omitted" in json.loads(guarded.value)["warnings"][-1]
    assert guarded.reply.body == {"text": "x" * 5000}  # published as it is, with its body


async def test_an_answered_id_gets_its_first_reply_again_without_a_send() -> None:
    store, send = MemoryIdempotencyStore(), Send()
    await through(gate(store), send)
    again = await through(gate(store), send)
    assert send.calls == 1
    assert again.value is None and again.recorded is None
    assert again.reply.body == send.reply.body
    assert again.reply.warnings == [
        "duplicate request id: this is the reply of 1970-01-01T00:16:40+00:00; "
        "Twilio was not called again"
    ]


async def test_an_answered_id_whose_reply_is_gone_is_sent_again() -> None:
    store, send = MemoryIdempotencyStore(), Send()
    store.index.record_answered(digest(ENVELOPE["id"]), at=990, partition=0, offset=41)
    guarded = await through(gate(store), send)
    assert send.calls == 1 and guarded.reply == send.reply


async def test_a_start_without_an_answer_is_an_unknown_outcome_unless_resending() -> None:
    store, send = MemoryIdempotencyStore(), Send()
    store.index.record_started(digest(ENVELOPE["id"]), at=990)
    unknown = await through(gate(store), send)
    assert send.calls == 0
    assert unknown.reply.error is not None and unknown.reply.error.kind == "unknown_outcome"
    assert "(1970-01-01T00:16:30+00:00)" in unknown.reply.error.message
    assert (unknown.reply.operation, unknown.reply.method) == ("CreateMessage", "POST")
    assert unknown.reply.metadata == ENVELOPE["metadata"]
    assert store.index.prior(ENVELOPE["id"], store.now) == Started(990)
    resent = await through(gate(store, resend_unknown=True), send)
    assert send.calls == 1 and resent.reply == send.reply


async def test_a_send_that_raises_releases_the_id() -> None:
    store, send = MemoryIdempotencyStore(), Send(error=RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await through(gate(store), send)
    assert store.running == {}  # a second delivery does not wait for it forever
    assert store.index.prior(ENVELOPE["id"], store.now) == Started(store.now)
