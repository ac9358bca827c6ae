"""The Twilio client's spans (``bridge.twilio.client``): one HTTP client span per attempt, its
context sent to Twilio in ``traceparent``, the answer's status on it; none with tracing off."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bridge.contract.errors import CallNotSent, CallTimeout
from bridge.observability.tracing import tracer
from bridge.twilio.client import TwilioClient
from tests.helpers import (
    CALL,
    CREATED_MESSAGE,
    TWILIO_SETTINGS,
    RecordingTwilio,
    answering,
    traceparent_of,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def send(twilio: RecordingTwilio, attempt: int = 1) -> None:
    client = TwilioClient(TWILIO_SETTINGS, transport=httpx.MockTransport(twilio))
    try:
        await client.send(CALL, attempt)
    finally:
        await client.aclose()


def sent_traceparents(twilio: RecordingTwilio) -> list[str]:
    [request] = twilio.requests
    return request.headers.get_list("traceparent")


async def test_an_attempt_is_a_client_span_whose_context_goes_to_twilio(
    spans: InMemorySpanExporter,
) -> None:
    twilio = answering(201, CREATED_MESSAGE)
    await send(twilio)
    [span] = spans.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "POST /2010-04-01/Accounts/{AccountSid}/Messages.json"
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "url.template": "/2010-04-01/Accounts/{AccountSid}/Messages.json",
        "url.scheme": "https",
        "server.address": "api.twilio.com",
        "server.port": 443,
        "twilio.api": "api.v2010",
        "twilio.operation": "CreateMessage",
        "twilio.attempt": 1,
        "http.response.status_code": 201,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert sent_traceparents(twilio) == [traceparent_of(span)]


async def test_a_resent_attempt_says_how_many_went_before(spans: InMemorySpanExporter) -> None:
    await send(answering(201, CREATED_MESSAGE), attempt=3)
    [span] = spans.get_finished_spans()
    attributes = span.attributes or {}
    assert (attributes["twilio.attempt"], attributes["http.request.resend_count"]) == (3, 2)


async def test_the_client_span_is_a_child_of_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    twilio = answering(201, CREATED_MESSAGE)
    headers = [("traceparent", TRACEPARENT.encode())]
    with tracer().consumer("process twilio.requests", headers, {}):
        await send(twilio)
    client, process = spans.get_finished_spans()
    assert client.parent is not None and process.context is not None
    assert client.parent.span_id == process.context.span_id
    assert f"{process.context.trace_id:032x}" == TRACEPARENT[3:35]
    assert sent_traceparents(twilio) == [traceparent_of(client)]


async def test_an_error_answer_fails_the_span_with_status_and_twilio_code(
    spans: InMemorySpanExporter,
) -> None:
    await send(answering(429, {"code": 20429, "message": "Too Many Requests", "status": 429}))
    [span] = spans.get_finished_spans()
    attributes = span.attributes or {}
    assert span.status.status_code is StatusCode.ERROR
    assert (attributes["http.response.status_code"], attributes["error.type"]) == (429, "429")
    assert attributes["twilio.error_code"] == 20429


@pytest.mark.parametrize(
    ("failure", "error"),
    [(httpx.ConnectError, CallNotSent), (httpx.ReadTimeout, CallTimeout)],
)
async def test_an_attempt_without_an_answer_fails_the_span_with_the_errors_type(
    spans: InMemorySpanExporter, failure: type[httpx.RequestError], error: type[Exception]
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure("simulated", request=request)

    with pytest.raises(error):
        await send(RecordingTwilio(fail))
    [span] = spans.get_finished_spans()
    attributes = span.attributes or {}
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == error.__qualname__
    assert "http.response.status_code" not in attributes


async def test_a_forwarded_traceparent_gives_way_to_the_client_spans(
    spans: InMemorySpanExporter,
) -> None:
    # An envelope may forward its record's headers ('request_headers': '*'), the requester's
    # traceparent among them: Twilio must still get one traceparent, the client span's.
    forwarded = (("traceparent", TRACEPARENT), ("tracestate", "vendor=x"), ("i-request-id", "1"))
    twilio = answering(201, CREATED_MESSAGE)
    client = TwilioClient(TWILIO_SETTINGS, transport=httpx.MockTransport(twilio))
    await client.send(replace(CALL, headers=forwarded))
    [span] = spans.get_finished_spans()
    assert sent_traceparents(twilio) == [traceparent_of(span)]
    [request] = twilio.requests
    assert request.headers["i-request-id"] == "1"


async def test_with_tracing_off_nothing_is_added_for_twilio() -> None:
    assert not tracer().enabled
    twilio = answering(201, CREATED_MESSAGE)
    with tracer().consumer("process t", [("traceparent", TRACEPARENT.encode())], {}):
        await send(twilio)
    assert sent_traceparents(twilio) == []
