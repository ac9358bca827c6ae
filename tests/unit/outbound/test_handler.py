"""One record through ``RequestHandler``, the processor and the client over a mock Twilio: the
process span and its children, the trace context the reply and error records carry, the request's
own context passed through with tracing off, and what no span may ever hold."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import httpx
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge.kafka.producer import Publisher, RecordTooLarge
from bridge.kafka.records import Record
from bridge.observability.tracing import tracer
from bridge.outbound.handler import RequestHandler
from bridge.twilio.ratelimit import Limiter, Limits
from bridge.twilio.retry import RetryPolicy
from tests.helpers import (
    ACCOUNT,
    AUTH_TOKEN,
    CREATED,
    CREATED_MESSAGE,
    ENVELOPE,
    FAST_RETRIES,
    ONE_ATTEMPT,
    TOO_MANY,
    MemoryIdempotencyStore,
    RecordingTwilio,
    answering,
    answering_in_turn,
    outbound_processor,
    parent_of,
    request_record,
    span_ids,
    traceparent_of,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
CONTEXT = (("traceparent", TRACEPARENT), ("tracestate", b"vendor=x"), ("baggage", b"tenant=t1"))
REPLIES, ERRORS = "twilio.replies", "twilio.errors"
# A number, for the tests to look for where it must not be.
PHONE = "+15557654321"
BAD_REQUEST = {"code": 21211, "message": "The 'To' number is not valid", "status": 400}


@dataclass
class Published:
    """The publisher's stand-in: keeps every record; the first ``refusals`` sends fail."""

    max_record_bytes: int = 1_000_000
    refusals: int = 0
    records: list[tuple[str, bytes | None, dict[str, bytes]]] = field(default_factory=list)

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]],
        partition: int | None = None,
    ) -> tuple[int, int]:
        if self.refusals:
            self.refusals -= 1
            raise RecordTooLarge("refused")
        self.records.append((topic, key, dict(headers)))
        return 0, len(self.records)

    def headers(self, topic: str) -> dict[str, bytes]:
        [found] = [headers for to, _, headers in self.records if to == topic]
        return found


async def handle(
    twilio: RecordingTwilio,
    *records: Record,
    policy: RetryPolicy = ONE_ATTEMPT,
    published: Published | None = None,
    **options: Any,
) -> Published:
    published = published or Published()
    processor = outbound_processor(twilio, policy, **options)
    handler = RequestHandler(
        processor, cast(Publisher, published), reply_topic=REPLIES, error_topic=ERRORS
    )
    for record in records:
        await handler(record)
    return published


def by_kind(spans: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one process span and the client spans, in the order they ended."""
    finished = spans.get_finished_spans()
    [process] = [s for s in finished if s.kind is SpanKind.CONSUMER]
    clients = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(finished) == 1 + len(clients)
    return process, clients


# --- context in, context out -----------------------------------------------------------------


async def test_a_request_with_context_is_processed_in_a_child_span(
    spans: InMemorySpanExporter,
) -> None:
    twilio = answering(201, CREATED_MESSAGE)
    published = await handle(twilio, request_record(ENVELOPE, CONTEXT))
    process, [client] = by_kind(spans)
    assert process.name == "process twilio.requests"
    assert (span_ids(process)[0], parent_of(process)) == (TRACE_ID, PARENT_ID)
    assert dict(process.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "twilio.requests",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 42,
        "messaging.message.id": "order-78456-sms",
        "twilio.request.mode": "basic",
        "twilio.operation": "CreateMessage",
        "twilio.reply.status": "ok",
    }
    # The client span: a child of the process span, and named in what Twilio received.
    assert (span_ids(client)[0], parent_of(client)) == (TRACE_ID, span_ids(process)[1])
    [request] = twilio.requests
    assert request.headers.get_list("traceparent") == [traceparent_of(client)]
    # The reply carries the process span's context, the requester's state and baggage.
    reply = published.headers(REPLIES)
    assert reply["traceparent"] == traceparent_of(process).encode()
    assert (reply["tracestate"], reply["baggage"]) == (b"vendor=x", b"tenant=t1")
    assert (reply["id"], reply["status"]) == (b"order-78456-sms", b"ok")


async def test_a_request_without_context_starts_a_trace(spans: InMemorySpanExporter) -> None:
    published = await handle(answering(201, CREATED_MESSAGE), request_record(ENVELOPE))
    process, [client] = by_kind(spans)
    assert parent_of(process) is None
    assert parent_of(client) == span_ids(process)[1]
    reply = published.headers(REPLIES)
    assert reply["traceparent"] == traceparent_of(process).encode()
    assert "tracestate" not in reply and "baggage" not in reply


async def test_an_error_reply_and_its_error_record_carry_the_process_spans_context(
    spans: InMemorySpanExporter,
) -> None:
    published = await handle(answering(400, BAD_REQUEST), request_record(ENVELOPE, CONTEXT))
    process, [client] = by_kind(spans)
    for topic in (REPLIES, ERRORS):
        assert published.headers(topic)["traceparent"] == traceparent_of(process).encode()
    assert process.status.status_code is StatusCode.ERROR
    assert (process.attributes or {})["error.type"] == "twilio"
    assert (process.attributes or {})["twilio.reply.status"] == "error"
    assert client.status.status_code is StatusCode.ERROR
    assert (client.attributes or {})["twilio.error_code"] == 21211


async def test_a_rejected_record_is_still_a_span_whose_context_the_error_record_carries(
    spans: InMemorySpanExporter,
) -> None:
    twilio = answering(201, CREATED_MESSAGE)
    published = await handle(twilio, request_record(b"\xff not json", CONTEXT))
    process, clients = by_kind(spans)
    assert clients == [] and twilio.requests == []
    assert parent_of(process) == PARENT_ID
    assert process.status.status_code is StatusCode.ERROR
    assert (process.attributes or {})["error.type"] == "rejected"
    assert published.headers(ERRORS)["traceparent"] == traceparent_of(process).encode()


async def test_the_minimal_error_record_carries_the_context_too(
    spans: InMemorySpanExporter,
) -> None:
    # The outcome cannot be published (the first send is refused): the minimal error record
    # that stands in for it still belongs to the request's trace.
    published = Published(refusals=1)
    await handle(
        answering(400, BAD_REQUEST), request_record(ENVELOPE, CONTEXT), published=published
    )
    process, _ = by_kind(spans)
    minimal = [(key, h) for to, key, h in published.records if h.get("kind") == b"internal"]
    [(key, headers)] = minimal
    assert key is None
    assert headers["traceparent"] == traceparent_of(process).encode()


# --- attempts, pages, waits ------------------------------------------------------------------


async def test_each_attempt_is_its_own_client_span_and_a_retry_is_an_event(
    spans: InMemorySpanExporter,
) -> None:
    twilio = answering_in_turn(TOO_MANY, CREATED)
    await handle(twilio, request_record(ENVELOPE), policy=FAST_RETRIES)
    process, clients = by_kind(spans)
    assert [(c.attributes or {})["twilio.attempt"] for c in clients] == [1, 2]
    assert [(c.attributes or {})["http.response.status_code"] for c in clients] == [429, 201]
    assert {parent_of(c) for c in clients} == {span_ids(process)[1]}
    sent = [r.headers["traceparent"] for r in twilio.requests]
    assert sent == [traceparent_of(c) for c in clients]
    [retry] = process.events
    assert retry.name == "retry"
    assert dict(retry.attributes or {}) == {"twilio.attempt": 1, "error.type": "rate_limited"}


def paged(pages: int) -> RecordingTwilio:
    """A 2010 message list of ``pages`` pages, each pointing to the next by its query."""

    def answer(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params.get("Page", "0"))
        following = f"{MESSAGES}?To=%2B{PHONE[1:]}&PageSize=1&Page={number + 1}"
        body = {
            "messages": [{"sid": f"SM{number}"}],
            "next_page_uri": None if number == pages - 1 else following,
        }
        return httpx.Response(200, json=body)

    return RecordingTwilio(answer)


MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
LIST = {
    "id": "req-list",
    "mode": "basic",
    "operation": "ListMessage",
    "params": {"To": PHONE},
    "follow_pages": True,
}


async def test_each_page_is_its_own_client_span_without_the_query(
    spans: InMemorySpanExporter,
) -> None:
    twilio = paged(3)
    await handle(twilio, request_record(LIST))
    process, clients = by_kind(spans)
    assert len(clients) == len(twilio.requests) == 3
    assert {parent_of(c) for c in clients} == {span_ids(process)[1]}
    # The spec's path template: no SID, no query, on the first page and the ones after it.
    assert {c.name for c in clients} == {"GET /2010-04-01/Accounts/{AccountSid}/Messages.json"}
    assert len({span_ids(c)[1] for c in clients}) == 3


async def test_a_wait_for_the_senders_pace_is_an_event(spans: InMemorySpanExporter) -> None:
    # One message every 50 ms from one number: the second request waits for its turn.
    limiter = Limiter(Limits.of(per_sender_per_second=20, per_sender_burst=1))
    records = (request_record(ENVELOPE), request_record({**ENVELOPE, "id": "second"}))
    await handle(answering(201, CREATED_MESSAGE), *records, limiter=limiter)
    processes = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert processes[0].events == ()
    [wait] = processes[1].events
    assert wait.name == "rate limit wait"
    attributes = wait.attributes or {}
    assert attributes["twilio.attempt"] == 1
    wait_ms = attributes["twilio.wait_ms"]
    assert isinstance(wait_ms, float) and wait_ms > 0


async def test_the_wait_behind_the_same_key_is_an_event(spans: InMemorySpanExporter) -> None:
    taken = replace(request_record(ENVELOPE), taken_at=time.monotonic() - 0.25)
    await handle(answering(201, CREATED_MESSAGE), taken)
    process, _ = by_kind(spans)
    [wait] = process.events
    assert wait.name == "key order wait"
    wait_ms = (wait.attributes or {})["twilio.wait_ms"]
    assert isinstance(wait_ms, float) and wait_ms >= 250


async def test_the_idempotency_check_is_an_event_saying_what_it_found(
    spans: InMemorySpanExporter,
) -> None:
    twilio = answering(201, CREATED_MESSAGE)
    again = request_record(ENVELOPE)
    await handle(twilio, again, again, idempotency=MemoryIdempotencyStore())
    assert len(twilio.requests) == 1
    first, second = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    names = [[e.name for e in span.events] for span in (first, second)]
    # A new id found at once is nothing to see; a duplicate is.
    assert names == [[], ["idempotency check: answered"]]


# --- tracing off -----------------------------------------------------------------------------


async def test_off_the_requests_context_reaches_the_reply_unchanged_and_not_twilio() -> None:
    assert not tracer().enabled
    twilio = answering(400, BAD_REQUEST)
    published = await handle(twilio, request_record(ENVELOPE, CONTEXT))
    for topic in (REPLIES, ERRORS):
        headers = published.headers(topic)
        assert {k: headers[k] for k in ("traceparent", "tracestate", "baggage")} == dict(CONTEXT)
    [request] = twilio.requests
    for name, _ in CONTEXT:
        assert name not in request.headers


async def test_off_a_request_without_context_gets_a_reply_without_one() -> None:
    published = await handle(answering(201, CREATED_MESSAGE), request_record(ENVELOPE))
    assert set(published.headers(REPLIES)) == {"id", "status"}


# --- what no span holds ----------------------------------------------------------------------

BODY = "Your verification code is 908172"
KEY = b"customer-7781-key"
SENSITIVE = {
    "the phone number": PHONE,
    "the phone number, percent-encoded": "%2B15557654321",
    "the phone number's digits": "5557654321",
    "the body text": BODY,
    "the auth token": AUTH_TOKEN,
    "the basic credentials": base64.b64encode(f"{ACCOUNT}:{AUTH_TOKEN}".encode()).decode(),
    "the Kafka key": KEY.decode(),
    "a query string": "?",
}


def everything_shown(spans: Iterable[ReadableSpan]) -> list[str]:
    """Every string a span shows: its name, its attributes, its events' names and attributes,
    and its status text."""
    shown: list[str] = []
    for span in spans:
        shown += [span.name, span.status.description or ""]
        attributes = [span.attributes or {}, *(e.attributes or {} for e in span.events)]
        shown += [e.name for e in span.events]
        for mapping in attributes:
            shown += [name + "=" + str(value) for name, value in mapping.items()]
    return shown


def found_in(shown: list[str]) -> list[str]:
    return [what for what, value in SENSITIVE.items() if any(value in s for s in shown)]


async def test_no_span_holds_a_number_a_body_a_token_a_key_or_a_query(
    spans: InMemorySpanExporter,
) -> None:
    send = {
        **ENVELOPE,
        "id": "order-1",
        "body": {"To": PHONE, "From": "+15550001111", "Body": BODY},
        "request_headers": "*",
    }
    # Retried after a 429 whose error text repeats the number, then a list over three pages
    # filtered by it: every path that adds attributes or events.
    twilio = answering_in_turn(
        (429, {"code": 20429, "message": f"Too many to {PHONE}: {BODY}", "status": 429}, {}),
        CREATED,
    )
    records = [
        Record("twilio.requests", 0, 1, KEY, request_record(send).value, CONTEXT),
        Record("twilio.requests", 0, 2, KEY, request_record({**LIST, "id": "list-1"}).value),
    ]
    await handle(twilio, records[0], policy=FAST_RETRIES)
    await handle(paged(3), records[1])
    finished = spans.get_finished_spans()
    assert len(finished) == 2 + 2 + 3  # two process spans, two attempts, three pages
    shown = everything_shown(finished)
    assert found_in(shown) == []
    # The scan finds what it looks for: a value planted in an attribute or an event shows.
    for value in SENSITIVE.values():
        assert found_in([*shown, f"url.template={value}"]) != []
    planted = [*finished[:-1], _planted(finished[-1])]
    assert found_in(everything_shown(planted)) == ["the Kafka key"]


def _planted(span: ReadableSpan) -> ReadableSpan:
    """``span`` with the Kafka key in one of its events, as a careless hook would put it."""
    event = Event("retry", {"messaging.kafka.message.key": KEY.decode()})
    return ReadableSpan(
        span.name, span.context, span.parent, events=[event], attributes=span.attributes
    )
