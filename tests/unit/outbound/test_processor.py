"""From record to outcome, with the real client over a mock transport."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from bridge.contract.envelopes import BasicRequest, Reply, parse_request
from bridge.contract.errors import UnknownCredential
from bridge.instances.accounts import account_of
from bridge.kafka.records import Record
from bridge.outbound.idempotency.gate import Guarded
from bridge.outbound.processor import (
    Outcome,
    Processor,
    ProcessorOptions,
    build_call,
    outcome_of,
    parse,
)
from bridge.outbound.replies import error_reply
from bridge.twilio.accounts import Accounts, basic_auth_header
from bridge.twilio.calls import CallBuilder
from bridge.twilio.catalog import Catalog
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter, Limits
from bridge.twilio.retry import RetryPolicy
from tests.helpers import (
    ACCOUNT,
    AUTH_TOKEN,
    CREATED,
    CREDENTIALS,
    ENVELOPE,
    FAST_RETRIES,
    FETCH_MESSAGE,
    INSTANCE_ACCOUNT,
    INSTANCE_AUTH_TOKEN,
    ONE_ATTEMPT,
    SERVER_ERROR,
    TOO_MANY,
    TWILIO_SETTINGS,
    RecordingTwilio,
    answering,
    answering_in_turn,
    outbound_processor,
    request_record,
    stored_instance,
)

AUTH = basic_auth_header(CREDENTIALS["default"])
SECRETS = (AUTH_TOKEN, AUTH, AUTH.removeprefix("Basic "))
PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
JSON = "application/json"

CLASSIC = {
    "code": 21211,
    "message": "The 'To' number +1 is not a valid phone number.",
    "more_info": "https://www.twilio.com/docs/errors/21211",
    "status": 400,
}


def raising(exc: type[Exception]) -> RecordingTwilio:
    def answer(request: httpx.Request) -> httpx.Response:
        if issubclass(exc, httpx.RequestError):
            raise exc("simulated", request=request)
        raise exc("simulated")

    return RecordingTwilio(answer)


async def process(
    twilio: RecordingTwilio,
    value: bytes | dict[str, Any] | None,
    policy: RetryPolicy = ONE_ATTEMPT,
    options: ProcessorOptions | None = None,
    **kw: Any,
) -> Outcome:
    return await outbound_processor(twilio, policy, options=options).process(
        request_record(value, **kw)
    )


def assert_no_secrets(outcome: Outcome) -> None:
    for part in (outcome.reply, outcome.error):
        if part is not None:
            text = part.model_dump_json()
            for secret in SECRETS:
                assert secret not in text


def assert_source(outcome: Outcome) -> None:
    assert outcome.error is not None
    source, sent = outcome.error.source, request_record(None)
    assert (source.topic, source.partition, source.offset) == (
        sent.topic,
        sent.partition,
        sent.offset,
    )
    assert sent.key is not None and source.key == base64.b64encode(sent.key).decode()
    assert source.timestamp_ms == sent.timestamp_ms
    assert outcome.error.time.endswith("Z")
    datetime.fromisoformat(outcome.error.time)


# --- success -----------------------------------------------------------------------------------


async def test_ok_reply() -> None:
    answer = {"sid": "SM1", "status": "queued", "to": "+919876543210"}
    twilio = answering(201, answer, **{"Twilio-Request-Id": "RQ1"})
    outcome = await process(twilio, {**ENVELOPE, "response_headers": ["Twilio-Request-Id"]})
    assert outcome.error is None
    reply = outcome.reply
    assert reply is not None
    assert reply.id == "order-78456-sms"
    assert reply.status == "ok" and reply.error is None
    assert reply.http_status == 201
    assert (reply.api, reply.operation, reply.method, reply.path) == (
        "api.v2010",
        "CreateMessage",
        "POST",
        PATH,
    )
    assert reply.body == answer
    assert reply.content_type == JSON
    assert reply.headers == {"twilio-request-id": "RQ1"}
    assert reply.attempts == 1
    assert 0 <= reply.duration_ms < 10_000
    assert reply.metadata == ENVELOPE["metadata"]
    assert len(reply.warnings) == 1 and "params.Extra" in reply.warnings[0]
    assert_no_secrets(outcome)


async def test_what_twilio_receives() -> None:
    twilio = answering(201, {"sid": "SM1"})
    await process(twilio, ENVELOPE)
    [sent] = twilio.requests
    assert sent.method == "POST"
    assert str(sent.url) == "https://api.twilio.com" + PATH
    assert sent.headers["authorization"] == AUTH
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["user-agent"].startswith("twilio-kafka-bridge/")
    assert parse_qsl(sent.content.decode()) == [
        ("From", "+14155552671"),
        ("To", "+919876543210"),
        ("Body", "Your order has shipped"),
        ("MediaUrl", "https://demo.twilio.com/owl.png"),
    ]


async def test_advanced_ok_reply() -> None:
    twilio = answering(200, {"messages": [], "next_page_uri": PATH + "?Page=1"})
    envelope = {"id": "raw-1", "mode": "advanced", "method": "GET", "path": PATH}
    outcome = await process(twilio, envelope)
    assert outcome.error is None and outcome.reply is not None
    reply = outcome.reply
    assert (reply.status, reply.method, reply.path, reply.operation) == ("ok", "GET", PATH, None)
    assert reply.next_page_uri == PATH + "?Page=1"
    assert reply.metadata is None
    [sent] = twilio.requests
    assert sent.content == b""


async def test_record_headers_cannot_override_auth_or_host() -> None:
    twilio = answering(201, {"sid": "SM1"})
    headers = (
        ("Authorization", b"Basic ZXZpbDpldmls"),
        ("Host", b"evil.example"),
        ("Content-Length", b"1"),
        ("Content-Type", b"text/plain"),
        ("Connection", b"close"),
        ("Transfer-Encoding", b"chunked"),
        ("X-Trace-Id", b"t-1"),
        ("X-Binary", b"\xff\xfe"),
    )
    await process(twilio, {**ENVELOPE, "request_headers": "*"}, headers=headers)
    [sent] = twilio.requests
    assert sent.headers.get_list("authorization") == [AUTH]
    assert sent.headers.get_list("host") == ["api.twilio.com"]
    assert sent.headers.get_list("content-type") == ["application/x-www-form-urlencoded"]
    assert sent.headers.get_list("content-length") == [str(len(sent.content))]
    assert sent.headers.get_list("transfer-encoding") == []
    assert sent.headers.get_list("connection") != ["close"]
    assert sent.headers["x-trace-id"] == "t-1"
    assert "x-binary" not in sent.headers


# --- Twilio errors -----------------------------------------------------------------------------


async def test_twilio_error_gives_error_reply_and_error_record() -> None:
    outcome = await process(answering(400, CLASSIC), ENVELOPE)
    reply = outcome.reply
    assert reply is not None and reply.status == "error"
    assert reply.http_status == 400
    assert reply.body == CLASSIC
    assert reply.metadata == ENVELOPE["metadata"]
    assert reply.error is not None
    assert reply.error.kind == "twilio"
    assert reply.error.twilio_code == 21211
    assert reply.error.message == CLASSIC["message"]
    assert reply.error.more_info == CLASSIC["more_info"]
    assert outcome.error is not None
    assert outcome.error.id == "order-78456-sms"
    assert outcome.error.error == reply.error
    assert outcome.error.request == ENVELOPE
    assert outcome.error.raw is None
    assert_source(outcome)
    assert_no_secrets(outcome)


async def test_error_record_request_can_be_replayed() -> None:
    envelope = {**ENVELOPE, "credential": "default", "response_format": "json", "strict": False}
    outcome = await process(answering(500, CLASSIC), envelope)
    assert outcome.error is not None and outcome.error.request is not None
    replayed = parse_request(json.dumps(outcome.error.request).encode())
    assert replayed == parse_request(json.dumps(envelope).encode())


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(401, "auth", False), (403, "auth", False), (404, "not_found", False)]
    + [(429, "rate_limited", True), (503, "twilio", True)],
)
async def test_error_kinds_by_status(status: int, kind: str, retryable: bool) -> None:
    body = {"code": 20003, "message": "Authenticate", "status": status}
    outcome = await process(answering(status, body), ENVELOPE)
    assert outcome.reply is not None and outcome.reply.error is not None
    assert (outcome.reply.error.kind, outcome.reply.error.retryable) == (kind, retryable)
    assert outcome.error is not None and outcome.error.error.kind == kind
    assert_no_secrets(outcome)


# --- transport failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (httpx.ConnectError, "transport", "could not connect"),
        (httpx.ConnectTimeout, "transport", "could not connect"),
        (httpx.ReadTimeout, "timeout", "no answer"),
        (httpx.WriteTimeout, "timeout", "no answer"),
        (httpx.RemoteProtocolError, "transport", "RemoteProtocolError"),
        (httpx.ReadError, "transport", "ReadError"),
    ],
)
async def test_transport_failures(exc: type[Exception], kind: str, message: str) -> None:
    twilio = raising(exc)
    outcome = await process(twilio, ENVELOPE)
    assert len(twilio.requests) == 1
    reply = outcome.reply
    assert reply is not None and reply.status == "error"
    assert reply.error is not None
    assert reply.error.kind == kind
    assert reply.error.retryable is True
    assert message in reply.error.message
    assert reply.error.http_status is None and reply.http_status is None
    assert (reply.operation, reply.method, reply.path) == ("CreateMessage", "POST", PATH)
    assert reply.attempts == 1
    assert reply.metadata == ENVELOPE["metadata"]
    assert outcome.error is not None and outcome.error.error.kind == kind
    assert outcome.error.request == ENVELOPE
    assert_source(outcome)
    assert_no_secrets(outcome)


async def test_unexpected_exception_becomes_internal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        outcome = await process(raising(RuntimeError), ENVELOPE)
    assert outcome.reply is not None and outcome.reply.error is not None
    assert outcome.reply.id == ENVELOPE["id"]
    assert outcome.reply.error.kind == "internal"
    assert outcome.reply.error.retryable is False
    assert outcome.error is not None and outcome.error.error.kind == "internal"
    assert outcome.error.request == ENVELOPE
    assert_source(outcome)
    assert_no_secrets(outcome)
    assert caplog.records, "an internal error is logged"
    for secret in SECRETS:
        assert secret not in caplog.text


async def test_internal_error_reply_still_echoes_metadata() -> None:
    outcome = await process(raising(RuntimeError), ENVELOPE)
    assert outcome.reply is not None
    assert outcome.reply.metadata == ENVELOPE["metadata"]


# --- requests that never reach Twilio ----------------------------------------------------------


async def test_invalid_request_is_answered_without_calling_twilio() -> None:
    twilio = answering(201, {"sid": "SM1"})
    envelope = {**ENVELOPE, "body": {"Body": "hi"}}
    outcome = await process(twilio, envelope)
    assert twilio.requests == []
    reply = outcome.reply
    assert reply is not None and reply.error is not None
    assert reply.error.kind == "validation"
    assert reply.error.missing == ["To"]
    assert reply.attempts == 0
    assert reply.http_status is None
    assert reply.metadata == ENVELOPE["metadata"]
    assert outcome.error is not None
    assert outcome.error.request == envelope
    assert outcome.error.error.missing == ["To"]
    assert_source(outcome)


async def test_unknown_operation_reply_suggests() -> None:
    twilio = answering(201, {})
    outcome = await process(twilio, {**ENVELOPE, "operation": "CreateMesage"})
    assert twilio.requests == []
    assert outcome.reply is not None and outcome.reply.error is not None
    assert outcome.reply.error.invalid == ["operation"]
    assert "CreateMessage" in outcome.reply.error.message


async def test_envelope_with_id_but_invalid_fields() -> None:
    twilio = answering(201, {})
    document = {"id": "bad-1", "mode": "basic", "params": [], "bogus": 1}
    outcome = await process(twilio, document)
    assert twilio.requests == []
    assert outcome.reply is not None
    assert outcome.reply.id == "bad-1" and outcome.reply.status == "error"
    assert outcome.reply.error is not None and outcome.reply.error.kind == "validation"
    assert outcome.reply.error.missing == ["operation"]
    assert outcome.error is not None
    assert outcome.error.id == "bad-1"
    assert outcome.error.request == document
    assert outcome.error.raw is None
    assert_source(outcome)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\x00junk\x80", "not JSON"),
        (b"hello", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'"id"', "not an object"),
        (b"", "empty payload"),
    ],
)
async def test_junk_bytes_give_an_error_record_with_raw_bytes(value: bytes, reason: str) -> None:
    twilio = answering(201, {})
    outcome = await process(twilio, value)
    assert twilio.requests == []
    assert outcome.reply is None
    assert outcome.error is not None
    assert outcome.error.id is None
    assert outcome.error.request is None
    assert outcome.error.raw == base64.b64encode(value).decode()
    assert base64.b64decode(outcome.error.raw) == value
    assert outcome.error.error.kind == "validation"
    assert reason in outcome.error.error.message
    assert_source(outcome)


async def test_tombstone_gives_an_error_record() -> None:
    outcome = await process(answering(201, {}), None)
    assert outcome.reply is None
    assert outcome.error is not None
    assert outcome.error.raw is None and outcome.error.request is None
    assert outcome.error.error.kind == "validation"
    assert "payload" in outcome.error.error.message
    assert_source(outcome)


async def test_record_without_key_or_timestamp() -> None:
    processor = outbound_processor(answering(201, {}))
    outcome = await processor.process(
        Record(topic="t", partition=0, offset=7, key=None, value=b"x")
    )
    assert outcome.error is not None
    assert outcome.error.source.key is None and outcome.error.source.timestamp_ms is None
    assert outcome.error.source.offset == 7


async def test_one_processor_handles_many_records() -> None:
    twilio = answering(201, {"sid": "SM1"})
    processor = outbound_processor(twilio)
    outcomes = [
        await processor.process(request_record(value))
        for value in (ENVELOPE, b"junk", {**ENVELOPE, "id": "second"})
    ]
    assert [o.reply.id if o.reply else None for o in outcomes] == [
        "order-78456-sms",
        None,
        "second",
    ]
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert len(twilio.requests) == 2


def test_parse_gives_the_request_or_the_outcome_of_a_rejected_envelope() -> None:
    request = parse(request_record(ENVELOPE))
    assert isinstance(request, BasicRequest) and request.id == ENVELOPE["id"]
    rejected = parse(request_record({"id": "bad-1", "mode": "basic"}))
    assert isinstance(rejected, Outcome)
    assert rejected.reply is not None and rejected.reply.id == "bad-1"
    assert rejected.error is not None and rejected.error.error.missing == ["operation"]
    junk = parse(request_record(b"junk"))
    assert isinstance(junk, Outcome) and junk.reply is None and junk.error is not None


def test_outcome_of_adds_an_error_record_to_a_failure_only() -> None:
    request = parse(request_record(ENVELOPE))
    assert isinstance(request, BasicRequest)
    ok = Reply(id=request.id, status="ok", body={"sid": "SM1"})
    outcome = outcome_of(request_record(ENVELOPE), request, Guarded(ok, b"{}"))
    assert outcome == Outcome(ok, None, b"{}", None)
    failed = error_reply(request.id, UnknownCredential("unknown credential 'x'"))
    outcome = outcome_of(request_record(ENVELOPE), request, Guarded(failed))
    assert outcome.reply is failed and outcome.error is not None
    assert outcome.error.error == failed.error and outcome.error.request == ENVELOPE
    assert_source(outcome)


# --- retries -----------------------------------------------------------------------------------


async def test_429_is_retried_even_for_post_and_the_reply_counts_attempts() -> None:
    twilio = answering_in_turn(TOO_MANY, TOO_MANY, CREATED)
    outcome = await process(twilio, ENVELOPE, FAST_RETRIES)
    assert len(twilio.requests) == 3
    reply = outcome.reply
    assert reply is not None and reply.status == "ok" and reply.attempts == 3
    assert [w.split(";")[0] for w in reply.warnings[-2:]] == [
        "attempt 1: HTTP 429, Twilio code 20429",
        "attempt 2: HTTP 429, Twilio code 20429",
    ]
    assert outcome.error is None


async def test_retries_stop_at_max_attempts_with_the_last_failure() -> None:
    twilio = answering_in_turn(TOO_MANY)
    outcome = await process(twilio, ENVELOPE, FAST_RETRIES)
    assert len(twilio.requests) == 3
    reply = outcome.reply
    assert reply is not None and reply.error is not None
    assert (reply.attempts, reply.error.kind, reply.error.twilio_code) == (3, "rate_limited", 20429)
    assert outcome.error is not None


@pytest.mark.parametrize("failure", [SERVER_ERROR, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_post_is_not_repeated_after_it_may_have_reached_twilio(failure: Any) -> None:
    twilio = answering_in_turn(failure, CREATED)
    outcome = await process(twilio, ENVELOPE, FAST_RETRIES)
    assert len(twilio.requests) == 1
    assert outcome.reply is not None and outcome.reply.attempts == 1
    assert outcome.reply.status == "error"


@pytest.mark.parametrize("failure", [SERVER_ERROR, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_get_is_retried_after_transient_failures(failure: Any) -> None:
    twilio = answering_in_turn(failure, (200, {"sid": "SM1"}, {}))
    outcome = await process(twilio, FETCH_MESSAGE, FAST_RETRIES)
    assert len(twilio.requests) == 2
    assert outcome.reply is not None and outcome.reply.status == "ok"
    assert outcome.reply.attempts == 2


async def test_post_is_retried_when_the_connection_never_opened() -> None:
    twilio = answering_in_turn(httpx.ConnectError, CREATED)
    outcome = await process(twilio, ENVELOPE, FAST_RETRIES)
    assert len(twilio.requests) == 2
    assert outcome.reply is not None and outcome.reply.status == "ok"


async def test_retry_all_errors_from_the_envelope_repeats_a_post() -> None:
    twilio = answering_in_turn(SERVER_ERROR, CREATED)
    envelope = {**ENVELOPE, "retry": {"retry_all_errors": True}}
    outcome = await process(twilio, envelope, FAST_RETRIES)
    assert len(twilio.requests) == 2
    assert outcome.reply is not None and outcome.reply.status == "ok"


async def test_client_errors_are_not_retried() -> None:
    twilio = answering_in_turn((400, {"code": 21211, "message": "Invalid To"}, {}), CREATED)
    outcome = await process(twilio, ENVELOPE, FAST_RETRIES)
    assert len(twilio.requests) == 1
    assert outcome.reply is not None and outcome.reply.error is not None
    assert outcome.reply.error.twilio_code == 21211


async def test_envelope_max_attempts_overrides_the_default() -> None:
    twilio = answering_in_turn(TOO_MANY)
    envelope = {**ENVELOPE, "retry": {"max_attempts": 1}}
    outcome = await process(twilio, envelope, FAST_RETRIES)
    assert len(twilio.requests) == 1
    assert outcome.reply is not None and outcome.reply.attempts == 1


# --- reply shaping -----------------------------------------------------------------------------

PAGE = {
    "messages": [{"sid": "SM1", "body": "hi", "error_code": None}],
    "next_page_uri": None,
    "page": 0,
    "page_size": 50,
}


async def test_filter_nulls_from_the_envelope() -> None:
    twilio = answering_in_turn((200, PAGE, {}))
    outcome = await process(twilio, {**FETCH_MESSAGE, "filter_nulls": True})
    assert outcome.reply is not None
    assert outcome.reply.body == {
        "messages": [{"sid": "SM1", "body": "hi"}],
        "page": 0,
        "page_size": 50,
    }


@pytest.mark.parametrize(
    ("fmt", "content_type", "marker"),
    [("xml", "application/xml", "<TwilioResponse>"), ("csv", "text/csv", "sid,body,error_code")],
)
async def test_response_formats_are_rendered_from_json(
    fmt: str, content_type: str, marker: str
) -> None:
    twilio = answering_in_turn((200, PAGE, {}))
    outcome = await process(twilio, {**FETCH_MESSAGE, "response_format": fmt})
    reply = outcome.reply
    assert reply is not None and reply.status == "ok"
    assert reply.content_type == content_type
    assert isinstance(reply.body, str) and marker in reply.body


async def test_xml_of_a_single_resource_is_wrapped_like_twilios() -> None:
    twilio = answering(201, {"sid": "SM1", "status": "queued"})
    outcome = await process(twilio, {**ENVELOPE, "response_format": "xml"})
    assert outcome.reply is not None
    assert outcome.reply.body == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        "<TwilioResponse><Message><Sid>SM1</Sid><Status>queued</Status></Message></TwilioResponse>"
    )


async def test_the_bridges_filter_nulls_applies_when_the_envelope_does_not_say() -> None:
    options = ProcessorOptions(filter_nulls=True)
    twilio = answering_in_turn((200, PAGE, {}))
    stripped = await process(twilio, FETCH_MESSAGE, options=options)
    kept = await process(twilio, {**FETCH_MESSAGE, "filter_nulls": False}, options=options)
    assert stripped.reply is not None and kept.reply is not None
    assert stripped.reply.body["messages"] == [{"sid": "SM1", "body": "hi"}]
    assert kept.reply.body["messages"][0]["error_code"] is None


# --- following pages ---------------------------------------------------------------------------

LIST = {"id": "req-list", "mode": "basic", "operation": "ListMessage", "follow_pages": True}


def paged(pages: int, fail_at: int | None = None) -> RecordingTwilio:
    """A 2010 list of ``pages`` pages of two messages; page ``fail_at`` answers 500."""

    def answer(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params.get("Page", "0"))
        if number == fail_at:
            return httpx.Response(500, json={"code": 20500, "message": "Internal"})
        last = number == pages - 1
        body = {
            "messages": [{"sid": f"SM{number}{i}"} for i in range(2)],
            "page": number,
            "page_size": 2,
            "next_page_uri": None if last else f"{MESSAGES_PATH}?PageSize=2&Page={number + 1}",
        }
        return httpx.Response(200, json=body)

    return RecordingTwilio(answer)


MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


async def test_follow_pages_gathers_every_page_into_one_reply() -> None:
    twilio = paged(3)
    outcome = await process(twilio, LIST)
    reply = outcome.reply
    assert reply is not None and reply.status == "ok", reply
    assert [m["sid"] for m in reply.body["messages"]] == [
        "SM00",
        "SM01",
        "SM10",
        "SM11",
        "SM20",
        "SM21",
    ]
    assert (reply.pages, reply.next_page_uri, reply.body["next_page_uri"]) == (3, None, None)
    assert len(twilio.requests) == 3


async def test_follow_pages_stops_at_max_pages_and_says_where_to_continue() -> None:
    outcome = await process(paged(5), {**LIST, "max_pages": 2})
    reply = outcome.reply
    assert reply is not None and reply.pages == 2
    assert len(reply.body["messages"]) == 4
    assert reply.next_page_uri is not None and reply.next_page_uri.endswith("Page=2")


async def test_a_failing_page_keeps_what_was_gathered() -> None:
    outcome = await process(paged(4, fail_at=2), LIST)
    reply = outcome.reply
    assert reply is not None and reply.status == "ok" and reply.pages == 2
    assert reply.next_page_uri is not None and reply.next_page_uri.endswith("Page=2")
    assert any("stopped after 2 pages" in w and "HTTP 500" in w for w in reply.warnings)


async def test_the_reply_budget_stops_the_walk_before_the_reply_outgrows_kafka() -> None:
    twilio = paged(5)
    outcome = await process(twilio, LIST, options=ProcessorOptions(reply_budget=10))
    reply = outcome.reply
    assert reply is not None and reply.status == "ok" and reply.pages == 1
    assert reply.next_page_uri is not None and reply.next_page_uri.endswith("Page=1")
    assert reply.warnings == ["stopped after 1 pages: the reply would outgrow Kafka"]
    assert len(twilio.requests) == 1


# --- rate limits -------------------------------------------------------------------------------


async def test_replies_report_the_time_spent_waiting_for_the_senders_pace() -> None:
    reads: list[float] = []

    def clock() -> float:
        reads.append(time.monotonic())
        return reads[-1]

    limiter = Limiter(Limits.of(per_sender_per_second=20, per_sender_burst=1), clock=clock)
    processor = outbound_processor(answering(201, {"sid": "SM1"}), limiter=limiter)
    first = await processor.process(request_record(ENVELOPE))
    read_before_second = len(reads)
    second = await processor.process(request_record(ENVELOPE))
    assert first.reply is not None and second.reply is not None
    assert first.reply.wait_ms == 0
    # One message every 50 ms from one number: the second waits what is left of the 50 ms
    # after the first took its turn (each call's first clock read is its sender's turn), however
    # long the first took to process.
    turns_apart_ms = (reads[read_before_second] - reads[0]) * 1000
    assert second.reply.wait_ms >= 50 - turns_apart_ms - 0.01
    assert second.reply.duration_ms >= second.reply.wait_ms


async def test_twilio_concurrent_requests_lowers_the_credentials_cap() -> None:
    twilio = answering(201, {"sid": "SM1"}, **{"Twilio-Concurrent-Requests": "95"})
    limiter = Limiter(Limits.of(max_concurrent=100, account_concurrency=100))
    outcome = await outbound_processor(twilio, limiter=limiter).process(request_record(ENVELOPE))
    assert outcome.reply is not None and outcome.reply.status == "ok"
    # Others hold 94 of the account's 100: this replica steps down to a single call.
    assert limiter.cap("default") == 1


# --- instances: each account's own defaults ----------------------------------------------------


def instance_accounts(**configuration: Any) -> Accounts:
    instance = stored_instance("acme", INSTANCE_ACCOUNT, INSTANCE_AUTH_TOKEN, **configuration)
    accounts = Accounts(CREDENTIALS)
    accounts.put(account_of(instance, TWILIO_SETTINGS))
    return accounts


async def process_as(
    twilio: RecordingTwilio,
    accounts: Accounts,
    *envelopes: dict[str, Any],
    policy: RetryPolicy = ONE_ATTEMPT,
    limiter: Limiter | None = None,
) -> list[Outcome]:
    processor = outbound_processor(twilio, policy, accounts, limiter=limiter)
    return [await processor.process(request_record(envelope)) for envelope in envelopes]


def as_acme(envelope: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**envelope, "credential": "acme", **fields}


async def test_an_instance_is_called_with_its_own_account_and_auth() -> None:
    twilio = answering(201, {"sid": "SM1"})
    [outcome] = await process_as(twilio, instance_accounts(), as_acme(ENVELOPE))
    assert outcome.reply is not None and outcome.reply.status == "ok"
    [sent] = twilio.requests
    assert sent.url.path == f"/2010-04-01/Accounts/{INSTANCE_ACCOUNT}/Messages.json"
    assert (
        sent.headers["authorization"]
        == "Basic "
        + base64.b64encode(f"{INSTANCE_ACCOUNT}:{INSTANCE_AUTH_TOKEN}".encode()).decode()
    )
    assert INSTANCE_AUTH_TOKEN not in outcome.reply.model_dump_json()


async def test_a_deleted_instance_is_answered_as_deleted_without_calling_twilio() -> None:
    twilio = answering(201, {"sid": "SM1"})
    accounts = instance_accounts()
    accounts.remove("acme", "2026-01-02T03:04:05.000Z")
    [outcome] = await process_as(twilio, accounts, as_acme(ENVELOPE))
    reply = outcome.reply
    assert reply is not None and reply.error is not None
    assert reply.error.kind == "validation" and "deleted" in reply.error.message
    assert twilio.requests == []


async def test_an_unknown_credential_reads_the_instances_again_before_failing() -> None:
    # Created on another replica a moment ago: this one's view catches up, then it is used.
    twilio = answering(201, {"sid": "SM1"})
    accounts, ready = Accounts(CREDENTIALS), instance_accounts()
    refreshes = 0

    async def refresh() -> None:
        nonlocal refreshes
        refreshes += 1
        accounts.put(ready.get("acme"))  # type: ignore[arg-type]

    processor = outbound_processor(twilio, accounts=accounts, refresh_accounts=refresh)
    found = await processor.process(request_record(as_acme(ENVELOPE)))
    missing = await processor.process(request_record({**ENVELOPE, "credential": "nobody"}))
    assert found.reply is not None and found.reply.status == "ok"
    assert missing.reply is not None and missing.reply.error is not None
    assert "unknown credential 'nobody'" in missing.reply.error.message
    assert refreshes == 2 and len(twilio.requests) == 1


async def test_build_call_reads_the_instances_again_only_for_an_unknown_credential() -> None:
    accounts, ready = Accounts(CREDENTIALS), instance_accounts()
    refreshes: list[str] = []

    async def refresh() -> None:
        refreshes.append("read")
        accounts.put(ready.get("acme"))  # type: ignore[arg-type]

    builder = CallBuilder(Catalog.load(), accounts, TWILIO_SETTINGS)
    known = parse(request_record(ENVELOPE))
    acme = parse(request_record(as_acme(ENVELOPE)))
    nobody = parse(request_record({**ENVELOPE, "credential": "nobody"}))
    assert isinstance(known, BasicRequest) and isinstance(acme, BasicRequest)
    assert isinstance(nobody, BasicRequest)
    assert (await build_call(builder, known, [], refresh)).account.name == "default"
    assert refreshes == []
    assert (await build_call(builder, acme, [], refresh)).account.name == "acme"
    assert refreshes == ["read"]
    with pytest.raises(UnknownCredential, match="nobody"):
        await build_call(builder, nobody, [], refresh)
    assert refreshes == ["read", "read"]
    with pytest.raises(UnknownCredential, match="nobody"):
        await build_call(builder, nobody, [], None)


async def test_an_unknown_credential_stays_unknown_when_the_instances_cannot_be_read() -> None:
    twilio = answering(201, {"sid": "SM1"})

    async def refresh() -> None:
        raise TimeoutError  # the broker did not answer within the write timeout

    processor = outbound_processor(twilio, refresh_accounts=refresh)
    outcome = await processor.process(request_record({**ENVELOPE, "credential": "nobody"}))
    assert outcome.reply is not None and outcome.reply.error is not None
    assert outcome.reply.error.kind == "validation"
    assert "unknown credential 'nobody'" in outcome.reply.error.message
    assert twilio.requests == []


async def test_an_instances_filter_nulls_applies_unless_the_envelope_says_otherwise() -> None:
    accounts = instance_accounts(filter_nulls=True)
    twilio = answering_in_turn((200, PAGE, {}))
    filtered, kept, static = await process_as(
        twilio,
        accounts,
        as_acme(FETCH_MESSAGE),
        as_acme(FETCH_MESSAGE, filter_nulls=False),
        FETCH_MESSAGE,  # the static credential: the bridge's default (off)
    )
    assert filtered.reply is not None and kept.reply is not None and static.reply is not None
    assert "error_code" not in filtered.reply.body["messages"][0]
    assert kept.reply.body["messages"][0]["error_code"] is None
    assert static.reply.body["messages"][0]["error_code"] is None


async def test_an_instances_retry_policy_replaces_the_bridges() -> None:
    accounts = instance_accounts(retry={"max_attempts": 3, "base_delay_s": 0, "max_delay_s": 0})
    twilio = answering_in_turn(TOO_MANY)
    [acme] = await process_as(twilio, accounts, as_acme(ENVELOPE))
    assert acme.reply is not None and acme.reply.attempts == 3
    twilio.requests.clear()
    [static] = await process_as(twilio, accounts, ENVELOPE)  # the bridge's policy: one attempt
    assert static.reply is not None and static.reply.attempts == 1
    assert len(twilio.requests) == 1


async def test_the_envelopes_retry_still_overrides_an_instances_policy() -> None:
    accounts = instance_accounts(retry={"max_attempts": 3, "base_delay_s": 0, "max_delay_s": 0})
    twilio = answering_in_turn(TOO_MANY)
    [outcome] = await process_as(twilio, accounts, as_acme(ENVELOPE, retry={"max_attempts": 1}))
    assert outcome.reply is not None and outcome.reply.attempts == 1


async def test_an_instances_limits_are_the_limiters_for_it() -> None:
    accounts = instance_accounts(rate_limit={"max_concurrent": 7, "account_concurrency": 0})
    limiter = Limiter(Limits.of(max_concurrent=3))
    twilio = answering(201, {"sid": "SM1"})
    await process_as(twilio, accounts, as_acme(ENVELOPE), ENVELOPE, limiter=limiter)
    assert (limiter.cap("acme"), limiter.cap("default")) == (7, 3)


async def test_the_client_counts_calls_in_flight_until_each_is_answered_or_fails() -> None:
    release, both_sent = asyncio.Event(), asyncio.Event()

    async def twilio(request: httpx.Request) -> httpx.Response:
        if client.in_flight == 2:
            both_sent.set()
        await release.wait()
        if b"fail" in request.content:
            raise httpx.ReadError("simulated", request=request)
        return httpx.Response(201, json={"sid": "SM1"})

    client = TwilioClient(TWILIO_SETTINGS, transport=httpx.MockTransport(twilio))
    processor = Processor(
        CallBuilder(Catalog.load(), Accounts(CREDENTIALS), TWILIO_SETTINGS), client
    )
    ok = {**ENVELOPE, "id": "ok"}
    failing = {**ENVELOPE, "id": "fails", "body": {**ENVELOPE["body"], "Body": "fail"}}
    try:
        running = [asyncio.create_task(processor.process(request_record(e))) for e in (ok, failing)]
        await asyncio.wait_for(both_sent.wait(), 5)
        release.set()
        replies = [(await task).reply for task in running]
    finally:
        await client.aclose()
    assert [r.status if r is not None else None for r in replies] == ["ok", "error"]
    assert client.in_flight == 0
