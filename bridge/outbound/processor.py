"""From one consumed record to its reply and error record: parse, build, call, classify.

``Processor.process`` never raises for a bad record or a failed call: every path ends in an
``Outcome`` (a reply when the request had an id, an error record for every failure), so one
bad message can never stop its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

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
from bridge.contract.errors import (
    BridgeError,
    InternalError,
    UnknownCredential,
    UnknownOutcome,
    kind_for_status,
)
from bridge.kafka.records import Record
from bridge.observability.metrics import (
    RATE_LIMIT_WAIT_SECONDS,
    RATE_LIMIT_WAITS,
    RETRIES,
    status_class,
)
from bridge.outbound.formats import filter_nulls, render, resource_name
from bridge.outbound.idempotency.index import Answered, IdempotencyStore, Started, changes_state
from bridge.outbound.replies import error_record, error_reply, reply_bytes, reply_for_response
from bridge.twilio.calls import CallBuilder, TwilioCall
from bridge.twilio.client import TwilioClient
from bridge.twilio.pages import next_page, split_page
from bridge.twilio.ratelimit import Limiter
from bridge.twilio.responses import HttpResult, parse_body, twilio_code
from bridge.twilio.retry import Attempt, RetryPolicy

__all__ = ["Outcome", "Processor"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Sent:
    """How sending one call ended, over all its attempts."""

    result: HttpResult | None
    attempt: Attempt
    attempts: int = 0
    retried: list[str] = field(default_factory=list)
    wait_ms: float = 0.0


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


class Processor:
    """Turns records into outcomes using a call builder and a Twilio client."""

    def __init__(
        self,
        builder: CallBuilder,
        client: TwilioClient,
        policy: RetryPolicy | None = None,
        limiter: Limiter | None = None,
        *,
        filter_nulls: bool = False,
        reply_budget: int = 512 * 1024,
        record_limit: int = 1_032_192,
        idempotency: IdempotencyStore | None = None,
        resend_unknown: bool = False,
        refresh_accounts: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._builder = builder
        self._client = client
        self._policy = policy or RetryPolicy()
        self._limiter = limiter or Limiter()
        self._filter_nulls = filter_nulls
        self._reply_budget = reply_budget
        self._record_limit = record_limit
        self._idempotency = idempotency
        self._resend_unknown = resend_unknown
        # Reads the instances topic to its end, before an unknown credential is final.
        self._refresh_accounts = refresh_accounts

    async def process(self, record: Record) -> Outcome:
        """The outcome of one record; never raises except on cancellation."""
        try:
            request = parse_request(record.value)
        except EnvelopeRejected as exc:
            reply = error_reply(exc.request_id, exc) if exc.request_id is not None else None
            info = error_info(exc.to_detail())
            error = error_record(record, info, request_id=exc.request_id, document=exc.document)
            return Outcome(reply, error)
        value: bytes | None = None
        recorded: asyncio.Future[None] | None = None
        try:
            reply, value, recorded = await self._call(request, record)
        except Exception:
            # A bug must not stop the partition: answer 'internal' and keep the evidence.
            log.exception("internal error processing request %s", request.id)
            reply = error_reply(
                request.id,
                InternalError("internal error in the bridge"),
                metadata=request.metadata,
            )
        if reply.status == "ok":
            return Outcome(reply, None, value, recorded)
        assert reply.error is not None
        # The request exactly as it came (it parsed once already), so a replay sends the same.
        document = orjson.loads(record.value or b"{}")
        error = error_record(record, reply.error, request_id=request.id, document=document)
        return Outcome(reply, error, value, recorded)

    async def _call(
        self, request: BasicRequest | AdvancedRequest, record: Record
    ) -> tuple[Reply, bytes | None, asyncio.Future[None] | None]:
        """The reply; with the idempotency log, also its bytes and the write of the answer."""
        started = time.perf_counter()
        try:
            call = await self._build(request, record)
        except BridgeError as exc:
            return error_reply(request.id, exc, metadata=request.metadata), None, None
        idempotency = self._idempotency
        if idempotency is None or not changes_state(call.method):
            return await self._send_and_reply(request, record, call, started), None, None
        prior = await idempotency.check(request.id)
        if isinstance(prior, Answered):
            first = await idempotency.first_reply(request.id, prior)
            if first is not None:
                return _duplicate(first, prior), None, None
        elif isinstance(prior, Started) and not self._resend_unknown:
            unknown = error_reply(request.id, _unknown(prior), call=call, metadata=request.metadata)
            return unknown, None, None
        await idempotency.begin(request.id)
        try:
            reply = await self._send_and_reply(request, record, call, started)
            value = reply_bytes(reply, self._record_limit)
        except BaseException:
            idempotency.release(request.id)
            raise
        # finish releases the id once the answer is acknowledged (or failed to be).
        return reply, value, idempotency.finish(request.id, value)

    async def _build(self, request: BasicRequest | AdvancedRequest, record: Record) -> TwilioCall:
        headers = record.text_headers()
        try:
            return self._builder.build(request, headers)
        except UnknownCredential as exc:
            if self._refresh_accounts is None:
                raise
            unknown = exc
        # An instance created on another replica a moment ago may not have been read here yet.
        try:
            await self._refresh_accounts()
        except Exception as exc:
            # The broker is slow or away: as far as this replica can tell, the name is unknown
            # (not a bug in the bridge, so no 'internal' reply and no traceback).
            log.warning("instances not read again (%s): %s", type(exc).__name__, unknown.message)
            raise unknown from None
        return self._builder.build(request, headers)

    async def _send_and_reply(
        self,
        request: BasicRequest | AdvancedRequest,
        record: Record,
        call: TwilioCall,
        started: float,
    ) -> Reply:
        policy = (call.account.retry or self._policy).with_options(request.retry)
        sent = await self._send(call, policy)
        call = replace(call, warnings=(*call.warnings, *sent.retried))
        elapsed_ms = (time.perf_counter() - started) * 1000
        if sent.result is None:
            assert sent.attempt.error is not None
            return error_reply(
                request.id,
                sent.attempt.error,
                call=call,
                metadata=request.metadata,
                attempts=sent.attempts,
                duration_ms=elapsed_ms,
                wait_ms=sent.wait_ms,
            )
        reply = reply_for_response(
            request.id,
            call,
            sent.result,
            response_headers=request.response_headers,
            metadata=request.metadata,
            attempts=sent.attempts,
            duration_ms=elapsed_ms,
            wait_ms=sent.wait_ms,
        )
        if request.follow_pages and reply.status == "ok":
            reply = await self._follow(request, record, policy, reply)
            reply.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return self._shape(request, reply, call.account.filter_nulls)

    async def _send(self, call: TwilioCall, policy: RetryPolicy) -> _Sent:
        """Send with retries: the last answer, how it ended, attempts made, why each retry."""
        sent = _Sent(None, Attempt())
        while True:
            sent.attempts += 1
            sent.result, sent.attempt = await self._attempt(call, sent)
            if sent.result is not None and sent.result.status < 400:
                return sent
            delay = policy.next_delay(call.method, sent.attempts, sent.attempt)
            if delay is None:
                return sent
            sent.retried.append(
                f"attempt {sent.attempts}: {_why(sent.attempt)}; retried after {delay:.2f} s"
            )
            RETRIES.labels(_reason(sent.attempt)).inc()
            await asyncio.sleep(delay)

    async def _follow(
        self,
        request: BasicRequest | AdvancedRequest,
        record: Record,
        policy: RetryPolicy,
        first: Reply,
    ) -> Reply:
        """Walk ``next_page_uri`` and gather every page's items into one reply, within bounds.

        The walk stops at ``max_pages``, before the items outgrow the reply budget, or at a
        page that fails; the reply's ``next_page_uri`` then says where to continue.
        """
        page = split_page(first.body) if isinstance(first.body, dict) else None
        if page is None:
            return first.model_copy(update={"warnings": [*first.warnings, _NOT_A_LIST]})
        key, items, _ = page
        items = list(items)
        warnings = list(first.warnings)
        pages, attempts, next_uri = 1, first.attempts, first.next_page_uri
        wait_ms = first.wait_ms
        size = len(orjson.dumps(first.body))
        limit = request.max_pages or _DEFAULT_MAX_PAGES
        while next_uri and pages < limit:
            if size > self._reply_budget:
                warnings.append(f"stopped after {pages} pages: the reply would outgrow Kafka")
                break
            paged = request.model_copy(update={"next_page_uri": next_uri})
            try:
                call = self._builder.build(paged, record.text_headers())
            except BridgeError as exc:
                warnings.append(f"stopped after {pages} pages: {exc.message}")
                break
            sent = await self._send(call, policy)
            attempts += sent.attempts
            wait_ms += sent.wait_ms
            warnings += sent.retried
            result = sent.result
            body = parse_body(result) if result is not None else None
            more = split_page(body) if isinstance(body, dict) else None
            if result is None or result.status >= 400 or more is None:
                why = _why(sent.attempt)
                warnings.append(f"stopped after {pages} pages: page {pages + 1} {why}")
                break
            items += more[1]
            size += len(result.content)
            pages += 1
            next_uri = next_page(body)
        body = {**first.body, key: items, **_last_paging(first.body, next_uri)}
        return first.model_copy(
            update={
                "body": body,
                "pages": pages,
                "attempts": attempts,
                "wait_ms": round(wait_ms, 3),
                "next_page_uri": next_uri,
                "warnings": warnings,
            }
        )

    def _shape(
        self, request: BasicRequest | AdvancedRequest, reply: Reply, account_nulls: bool | None
    ) -> Reply:
        """Apply ``filter_nulls`` (envelope, else account, else bridge) and ``response_format``."""
        strip = next(
            v for v in (request.filter_nulls, account_nulls, self._filter_nulls) if v is not None
        )
        fmt = request.response_format
        if not isinstance(reply.body, dict | list) or (fmt == "json" and not strip):
            return reply
        body = filter_nulls(reply.body) if strip else reply.body
        try:
            body, content_type = render(body, fmt, resource_name(reply.path or ""))
        except ValueError as exc:
            warning = f"response_format '{fmt}' not applied: {exc}"
            return reply.model_copy(update={"body": body, "warnings": [*reply.warnings, warning]})
        return reply.model_copy(update={"body": body, "content_type": content_type})

    async def _attempt(self, call: TwilioCall, sent: _Sent) -> tuple[HttpResult | None, Attempt]:
        account = call.account
        async with self._limiter.slot(account.name, call.sender, account.rate_limit) as slot:
            if slot.waited_s:
                sent.wait_ms += slot.waited_s * 1000
                RATE_LIMIT_WAITS.inc()
                RATE_LIMIT_WAIT_SECONDS.inc(slot.waited_s)
            try:
                result = await self._client.send(call)
            except BridgeError as exc:
                return None, Attempt(error=exc)
            if result.status < 400:
                attempt = Attempt(status=result.status)
            else:
                attempt = Attempt(
                    status=result.status,
                    twilio_code=twilio_code(result),
                    retry_after=result.header("retry-after"),
                )
            slot.report(attempt, result.header("twilio-concurrent-requests"))
            return result, attempt


_DEFAULT_MAX_PAGES = 10
_NOT_A_LIST = "follow_pages ignored: the answer is not a list page"


def _last_paging(body: dict[str, Any], next_uri: str | None) -> dict[str, Any]:
    """Paging fields of the gathered reply: where the walk stopped, in the page's own style."""
    if isinstance(body.get("meta"), dict):
        return {"meta": {**body["meta"], "next_page_url": next_uri}}
    return {"next_page_uri": next_uri}


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


def _reason(attempt: Attempt) -> str:
    """A retry's reason as a metric label: an error kind, or the status's kind and class."""
    if attempt.error is not None:
        return attempt.error.kind
    status = attempt.status or 0
    kind = kind_for_status(status)
    return kind if kind != "twilio" else f"http_{status_class(status)}"


def _why(attempt: Attempt) -> str:
    if attempt.error is not None:
        return f"{attempt.error.kind} ({type(attempt.error).__name__})"
    code = f", Twilio code {attempt.twilio_code}" if attempt.twilio_code else ""
    return f"HTTP {attempt.status}{code}"
