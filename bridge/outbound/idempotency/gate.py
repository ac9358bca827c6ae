"""The idempotency gate around a send: an id seen before is not sent to Twilio again.

For a call that changes state, the store is asked what became of the request id: an answered
id gets its first reply again, a started one (the outcome unknown) an ``unknown_outcome``
error unless resending is allowed. Otherwise the start is recorded before the send and the
reply as the answer after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.contract.envelopes import AdvancedRequest, BasicRequest, Reply
from bridge.contract.errors import UnknownOutcome
from bridge.observability.tracing import NOTABLE_WAIT_MS, tracer
from bridge.outbound.idempotency.index import (
    Answered,
    IdempotencyStore,
    Prior,
    Started,
    changes_state,
)
from bridge.outbound.replies import error_reply, reply_bytes
from bridge.twilio.calls import TwilioCall

__all__ = ["Guarded", "IdempotencyGate"]


@dataclass(frozen=True, slots=True)
class Guarded:
    """A reply; when the store recorded it, also its bytes and the write of them under way."""

    reply: Reply
    value: bytes | None = None
    recorded: asyncio.Future[None] | None = None


class IdempotencyGate:
    """Checks, begins and finishes a request id in a store around the send of its call."""

    def __init__(
        self, store: IdempotencyStore | None, *, resend_unknown: bool, record_limit: int
    ) -> None:
        self._store = store
        self._resend_unknown = resend_unknown
        self._record_limit = record_limit

    async def around(
        self,
        request: BasicRequest | AdvancedRequest,
        call: TwilioCall,
        send: Callable[[], Awaitable[Reply]],
        partition: int,
    ) -> Guarded:
        """The reply of ``send()``, or the one owed without sending when the id was seen;
        ``partition`` is the request partition the request was consumed from."""
        store = self._store
        if store is None or not changes_state(call.method):
            return Guarded(await send())
        earlier = await self._earlier(store, request, call, partition)
        if earlier is not None:
            return Guarded(earlier)
        await store.begin(request.id, partition)
        try:
            reply = await send()
            value = reply_bytes(reply, self._record_limit)
        except BaseException:
            store.release(request.id)
            raise
        # finish releases the id once the answer is acknowledged (or failed to be).
        return Guarded(reply, value, store.finish(request.id, value, partition))

    async def _earlier(
        self,
        store: IdempotencyStore,
        request: BasicRequest | AdvancedRequest,
        call: TwilioCall,
        partition: int,
    ) -> Reply | None:
        """The reply for an id seen before that must not be sent again; None to send it."""
        span = tracer().current()
        started = time.monotonic()
        prior: Prior | None = await store.check(request.id, partition)
        if span.recording:
            waited_ms = round((time.monotonic() - started) * 1000, 3)
            if prior is not None or waited_ms >= NOTABLE_WAIT_MS:
                found = "answered" if isinstance(prior, Answered) else "started" if prior else "new"
                span.event(f"idempotency check: {found}", {"twilio.wait_ms": waited_ms})
        if isinstance(prior, Answered):
            first = await store.first_reply(request.id, prior)
            return _duplicate(first, prior) if first is not None else None
        if isinstance(prior, Started) and not self._resend_unknown:
            return error_reply(request.id, _unknown(prior), call=call, metadata=request.metadata)
        return None


def _duplicate(first: bytes, prior: Answered) -> Reply:
    """The first reply again, saying that Twilio was not called a second time."""
    reply = Reply.model_validate_json(first)
    when = datetime.fromtimestamp(prior.at, UTC).isoformat(timespec="seconds")
    note = f"duplicate request id: this is the reply of {when}; Twilio was not called again"
    return reply.model_copy(update={"warnings": [*reply.warnings, note]})


def _unknown(prior: Started) -> UnknownOutcome:
    when = datetime.fromtimestamp(prior.at, UTC).isoformat(timespec="seconds")
    return UnknownOutcome(
        f"a bridge process stopped while sending this request ({when}): it may or may not have "
        "reached Twilio, so it is not sent again; check Twilio before resending with a new id"
    )
