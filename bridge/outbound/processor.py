"""From one consumed record to its reply and error record, in named steps.

``Processor.process`` runs, for each record:

1. ``parse``: the envelope becomes a request, or the outcome of a rejected one;
2. ``build_call``: the Twilio call, the instances read again before a credential is unknown;
   then ``TrackingStep.prepare``: the account's defaults for sends, and the bridge's status
   callback for a tracked send (recorded in the state topic just before step 4 sends it);
3. ``IdempotencyGate.around``: an id seen before is answered without sending again;
4. ``Sender.send``: the attempts, within the rate limiter and the retry policy;
5. ``follow_pages``: with ``follow_pages``, the items of every page in one reply;
6. ``shaped``: nulls filtered out, the body in the ``response_format`` asked for;
7. ``outcome_of``: the reply, with an error record when it failed.

It never raises for a bad record or a failed call: every path ends in an ``Outcome`` (a reply
when the request had an id, an error record for every failure), so one bad message can never
stop its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import orjson

from bridge.contract.envelopes import (
    AdvancedRequest,
    BasicRequest,
    EnvelopeRejected,
    ErrorRecord,
    Reply,
    error_info,
    parse_request,
)
from bridge.contract.errors import BridgeError, InternalError, UnknownCredential
from bridge.kafka.records import Record
from bridge.observability.tracing import tracer
from bridge.outbound.idempotency.gate import Guarded, IdempotencyGate
from bridge.outbound.idempotency.index import IdempotencyStore
from bridge.outbound.paging import DEFAULT_MAX_PAGES, follow_pages
from bridge.outbound.replies import error_record, error_reply, reply_for_response, shaped
from bridge.outbound.sender import Sender, Sent
from bridge.outbound.tracking import TrackingStep
from bridge.tracking.send import TrackedSend
from bridge.twilio.calls import CallBuilder, TwilioCall
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter
from bridge.twilio.retry import RetryPolicy

__all__ = ["Outcome", "Processor", "ProcessorOptions", "build_call", "outcome_of", "parse"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to publish for one record: a reply (if it had an id) and/or an error record."""

    reply: Reply | None
    error: ErrorRecord | None
    # The reply as published, when it was already serialised (for the idempotency log): once is
    # enough, a large body costs as much to write as the rest of the envelope.
    reply_value: bytes | None = None
    # The idempotency log's write of the answer, under way: the record counts as done only once
    # it is acknowledged too. Sent beside the reply rather than before it, both ride in one
    # produce request: one acknowledgement to wait for instead of two in a row.
    recorded: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class ProcessorOptions:
    """The bridge-wide choices of a processor."""

    # Leave nulls out of reply bodies, unless the account or the envelope says otherwise.
    filter_nulls: bool = False
    # Bytes of pages ``follow_pages`` reads before it stops: the reply must fit in a record.
    reply_budget: int = 512 * 1024
    # The largest record the broker takes: the reply written to the idempotency log fits it.
    record_limit: int = 1_032_192
    # Send a request again whose earlier send may or may not have reached Twilio.
    resend_unknown: bool = False


class Processor:
    """Turns records into outcomes using a call builder and a Twilio client."""

    def __init__(
        self,
        builder: CallBuilder,
        client: TwilioClient,
        policy: RetryPolicy | None = None,
        limiter: Limiter | None = None,
        *,
        options: ProcessorOptions | None = None,
        idempotency: IdempotencyStore | None = None,
        refresh_accounts: Callable[[], Awaitable[None]] | None = None,
        tracking: TrackingStep | None = None,
    ) -> None:
        self._builder = builder
        self._sender = Sender(client, limiter)
        self._policy = policy or RetryPolicy()
        options = options or ProcessorOptions()
        self._options = options
        self._gate = IdempotencyGate(
            idempotency, resend_unknown=options.resend_unknown, record_limit=options.record_limit
        )
        # Reads the instances topic to its end, before an unknown credential is final.
        self._refresh_accounts = refresh_accounts
        # Account defaults for sends, and delivery tracking; None: requests go as they come.
        self._tracking = tracking

    async def process(self, record: Record) -> Outcome:
        """The outcome of one record; never raises except on cancellation."""
        request = parse(record)
        span = tracer().current()
        if isinstance(request, Outcome):
            span.fail("rejected")
            return request
        if span.recording:
            span.set("messaging.message.id", request.id)
            span.set("twilio.request.mode", request.mode)
        try:
            guarded = await self._answer(
                request, record.text_headers(), record.key, record.partition
            )
        except Exception:
            # A bug must not stop the partition: answer 'internal' and keep the evidence.
            log.exception("internal error processing request %s", request.id)
            internal = InternalError("internal error in the bridge")
            guarded = Guarded(error_reply(request.id, internal, metadata=request.metadata))
        if span.recording:
            reply = guarded.reply
            span.set("twilio.operation", reply.operation)
            span.set("twilio.reply.status", reply.status)
            if reply.error is not None:
                span.fail(reply.error.kind)
        return outcome_of(record, request, guarded)

    async def _answer(
        self,
        request: BasicRequest | AdvancedRequest,
        headers: list[tuple[str, str]],
        key: bytes | None,
        partition: int,
    ) -> Guarded:
        """The reply to ``request`` (consumed with ``key`` from ``partition``), sent through the
        idempotency gate once its call is built."""
        started = time.perf_counter()
        tracked: TrackedSend | None = None
        try:
            call = await build_call(self._builder, request, headers, self._refresh_accounts)
            if self._tracking is not None:
                call, tracked = self._tracking.prepare(request, call, headers, key)
        except BridgeError as exc:
            return Guarded(error_reply(request.id, exc, metadata=request.metadata))
        return await self._gate.around(
            request,
            call,
            lambda: self._send(request, headers, call, started, tracked),
            partition,
        )

    async def _send(
        self,
        request: BasicRequest | AdvancedRequest,
        headers: list[tuple[str, str]],
        call: TwilioCall,
        started: float,
        tracked: TrackedSend | None = None,
    ) -> Reply:
        """Send the call and reply: with every page when asked for, in the shape asked for.

        A tracked send is recorded before the call goes out, and Twilio's answer after."""
        policy = (call.account.retry or self._policy).with_options(request.retry)
        if tracked is not None:
            assert self._tracking is not None
            await self._tracking.begin(tracked)
        sent = await self._sender.send(call, policy)
        call = replace(call, warnings=(*call.warnings, *sent.retried))
        reply = _reply_for(request, call, sent, (time.perf_counter() - started) * 1000)
        if tracked is not None:
            assert self._tracking is not None
            await self._tracking.answered(tracked, reply)
        if request.follow_pages and reply.status == "ok":
            reply = await self._follow(request, headers, policy, reply)
            reply.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        # filter_nulls: the envelope's, else the account's, else the bridge's.
        choices = (request.filter_nulls, call.account.filter_nulls, self._options.filter_nulls)
        strip = next(choice for choice in choices if choice is not None)
        return shaped(reply, request.response_format, strip)

    async def _follow(
        self,
        request: BasicRequest | AdvancedRequest,
        headers: list[tuple[str, str]],
        policy: RetryPolicy,
        first: Reply,
    ) -> Reply:
        """``first`` with the items of the pages after it, each sent as the first was."""

        def call_for(uri: str) -> TwilioCall:
            return self._builder.build(request.model_copy(update={"next_page_uri": uri}), headers)

        async def send(call: TwilioCall) -> Sent:
            return await self._sender.send(call, policy)

        max_pages = request.max_pages or DEFAULT_MAX_PAGES
        return await follow_pages(
            first, call_for, send, max_pages=max_pages, max_bytes=self._options.reply_budget
        )


def parse(record: Record) -> BasicRequest | AdvancedRequest | Outcome:
    """The request in ``record``, or the outcome of an envelope rejected before it was one."""
    try:
        return parse_request(record.value)
    except EnvelopeRejected as exc:
        reply = error_reply(exc.request_id, exc) if exc.request_id is not None else None
        info = error_info(exc.to_detail())
        error = error_record(record, info, request_id=exc.request_id, document=exc.document)
        return Outcome(reply, error)


async def build_call(
    builder: CallBuilder,
    request: BasicRequest | AdvancedRequest,
    headers: list[tuple[str, str]],
    refresh_accounts: Callable[[], Awaitable[None]] | None,
) -> TwilioCall:
    """The call for ``request``; an unknown credential is looked up again after a refresh."""
    try:
        return builder.build(request, headers)
    except UnknownCredential as exc:
        if refresh_accounts is None:
            raise
        unknown = exc
    # An instance created on another replica a moment ago may not have been read here yet.
    try:
        await refresh_accounts()
    except Exception as exc:
        # The broker is slow or away: as far as this replica can tell, the name is unknown
        # (not a bug in the bridge, so no 'internal' reply and no traceback).
        log.warning("instances not read again (%s): %s", type(exc).__name__, unknown.message)
        raise unknown from None
    return builder.build(request, headers)


def outcome_of(
    record: Record, request: BasicRequest | AdvancedRequest, guarded: Guarded
) -> Outcome:
    """What to publish for a request's reply: with an error record when it failed."""
    reply = guarded.reply
    if reply.status == "ok":
        return Outcome(reply, None, guarded.value, guarded.recorded)
    assert reply.error is not None
    # The request exactly as it came (it parsed once already), so a replay sends the same.
    document = orjson.loads(record.value or b"{}")
    error = error_record(record, reply.error, request_id=request.id, document=document)
    return Outcome(reply, error, guarded.value, guarded.recorded)


def _reply_for(
    request: BasicRequest | AdvancedRequest, call: TwilioCall, sent: Sent, duration_ms: float
) -> Reply:
    """The reply for a sent call: Twilio's last answer, or how its last attempt failed."""
    if sent.result is None:
        assert sent.attempt.error is not None
        return error_reply(
            request.id,
            sent.attempt.error,
            call=call,
            metadata=request.metadata,
            attempts=sent.attempts,
            duration_ms=duration_ms,
            wait_ms=sent.wait_ms,
        )
    return reply_for_response(
        request.id,
        call,
        sent.result,
        response_headers=request.response_headers,
        metadata=request.metadata,
        attempts=sent.attempts,
        duration_ms=duration_ms,
        wait_ms=sent.wait_ms,
    )
