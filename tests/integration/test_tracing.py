"""Tracing end to end: the real bridge process exporting its spans over OTLP/HTTP to a receiver
this test runs (``tests/support/otlp.py``), Twilio played by ``fast_twilio`` (which keeps the
``traceparent`` headers it is sent), Tansu for Kafka.

One bridge with tracing on serves the request and webhook tests; a second exports to a port
nobody listens on, and must carry messages as if tracing were off.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from twilio.request_validator import RequestValidator

from bridge.tooling.local.tansu import create_topics, free_port
from tests.helpers import ACCOUNT, AUTH_TOKEN
from tests.support.fast_twilio import spawn
from tests.support.harness import BridgeProcess, Topics, collect, produce
from tests.support.otlp import OtlpReceiver, ReceivedSpan

TRACE_ID = uuid.uuid4().hex
REQUEST_SPAN = uuid.uuid4().hex[:16]
TRACEPARENT = f"00-{TRACE_ID}-{REQUEST_SPAN}-01"
MESSAGE_SID = "SM" + "5" * 32
FORM = "application/x-www-form-urlencoded"
# Exports every 100 ms, so a test waits for spans a fraction of a second.
TRACING = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "100"}


def envelope(request_id: str) -> tuple[bytes, bytes]:
    body = {"From": "+15550001111", "To": "+15557654321", "Body": "your code is 908172"}
    value = {"id": request_id, "mode": "basic", "operation": "CreateMessage", "body": body}
    return f"key-{request_id}".encode(), json.dumps(value).encode()


def ids(traceparent: bytes | str) -> tuple[str, str]:
    """(trace id, parent id) of a W3C ``traceparent``."""
    text = traceparent.decode() if isinstance(traceparent, bytes) else traceparent
    version, trace_id, parent_id, _flags = text.split("-")
    assert version == "00"
    return trace_id, parent_id


def of_trace(spans: list[ReceivedSpan], trace_id: str, kind: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id and s.kind == kind]


@pytest.fixture(scope="module")
def twilio() -> Iterator[str]:
    """``fast_twilio`` on a free port, for the module: its base URL."""
    proc, port = spawn("--latency-ms", "5")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def otlp() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as receiver:
        yield receiver


class Traced:
    """A running bridge with tracing on, its topics, and its webhooks' topic prefix."""

    def __init__(self, process: BridgeProcess, prefix: str) -> None:
        self.process, self.prefix = process, prefix


async def start(
    bootstrap: str, twilio: str, log: Path, env: dict[str, str], family: str = "messages"
) -> tuple[BridgeProcess, str]:
    topics = Topics.fresh()
    await topics.create(bootstrap)
    prefix = f"ev-{topics.group}."
    await create_topics(bootstrap, [prefix + family])
    process = BridgeProcess(
        bootstrap, twilio, topics, log, {"BRIDGE_WEBHOOK__TOPIC_PREFIX": prefix, **env}
    ).start()
    await process.wait_ready()
    return process, prefix


async def stopped(process: BridgeProcess) -> None:
    # In a thread: the receiver runs on this loop, and the spans flushed at exit must reach it.
    assert await asyncio.to_thread(process.stop) == 0, process.log()[-3000:]
    assert AUTH_TOKEN not in process.log(), "a secret was logged"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def traced(
    tansu: Any, twilio: str, otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Traced]:
    log = tmp_path_factory.mktemp("traced") / "bridge.log"
    env = {**TRACING, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint}
    process, prefix = await start(tansu.bootstrap_servers, twilio, log, env)
    yield Traced(process, prefix)
    await stopped(process)


async def test_a_requests_trace_goes_through_twilio_and_back_to_the_reply(
    tansu: Any, twilio: str, otlp: OtlpReceiver, traced: Traced
) -> None:
    topics = traced.process.topics
    await produce(
        tansu.bootstrap_servers,
        topics.requests,
        [envelope("traced-1")],
        lambda _: [("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=t")],
    )
    [reply] = await collect(tansu.bootstrap_servers, topics.replies, 1, 30)
    assert reply.value["status"] == "ok", reply.value
    assert reply.headers["tracestate"] == b"vendor=t"
    reply_trace, process_id = ids(reply.headers["traceparent"])
    assert reply_trace == TRACE_ID and process_id != REQUEST_SPAN

    # Twilio was sent the trace, naming a span of the bridge's below the reply's.
    async with httpx.AsyncClient() as http:
        sent = (await http.get(f"{twilio}/__stats")).json()["traceparents"]
    [to_twilio] = [ids(t) for t in sent if ids(t)[0] == TRACE_ID]
    client_id = to_twilio[1]
    assert client_id not in (REQUEST_SPAN, process_id)

    def complete(spans: list[ReceivedSpan]) -> bool:
        kinds = {s.kind for s in spans if s.trace_id == TRACE_ID}
        return {"CONSUMER", "CLIENT"} <= kinds

    spans = await otlp.until(complete, 20)
    [process] = of_trace(spans, TRACE_ID, "CONSUMER")
    [client] = of_trace(spans, TRACE_ID, "CLIENT")
    assert (process.span_id, process.parent_span_id) == (process_id, REQUEST_SPAN)
    assert (client.span_id, client.parent_span_id) == (client_id, process_id)
    assert process.name == f"process {topics.requests}"
    assert client.name == "POST /2010-04-01/Accounts/{AccountSid}/Messages.json"
    assert process.attributes["messaging.message.id"] == "traced-1"
    assert process.attributes["twilio.reply.status"] == "ok"
    assert client.attributes["http.response.status_code"] == 201
    assert client.attributes["server.address"] == "127.0.0.1"
    assert process.resource["service.name"] == "twilio-kafka-bridge"
    for span in (process, client):
        shown = json.dumps([span.name, span.attributes])
        for value in ("5557654321", "908172", "key-traced-1", "?"):
            assert value not in shown


async def test_a_signed_webhook_is_a_server_span_whose_context_the_event_carries(
    tansu: Any, otlp: OtlpReceiver, traced: Traced
) -> None:
    params = {"AccountSid": ACCOUNT, "MessageSid": MESSAGE_SID, "From": "+15557654321"}
    url = f"{traced.process.http_url}/webhooks/twilio/messages"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            url,
            content=urlencode(params),
            headers={"content-type": FORM, "x-twilio-signature": signature},
        )
    assert answer.status_code == 200, answer.text
    [event] = await collect(tansu.bootstrap_servers, traced.prefix + "messages", 1, 20)
    trace_id, server_id = ids(event.headers["ce_traceparent"])

    def served(spans: list[ReceivedSpan]) -> bool:
        return bool(of_trace(spans, trace_id, "SERVER"))

    [server] = of_trace(await otlp.until(served, 20), trace_id, "SERVER")
    # Twilio sent no trace context: the webhook starts the trace its event carries.
    assert (server.span_id, server.parent_span_id) == (server_id, None)
    assert server.name == "POST /webhooks/twilio/{family}"
    assert server.attributes["http.route"] == "/webhooks/twilio/{family}"
    assert server.attributes["twilio.webhook.family"] == "messages"
    assert server.attributes["http.response.status_code"] == 200


async def test_an_unreachable_collector_never_holds_up_a_reply_or_the_stop(
    tansu: Any, twilio: str, tmp_path: Path
) -> None:
    # Nobody listens on this port: every export fails, in the exporter's thread.
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {**TRACING, "OTEL_EXPORTER_OTLP_ENDPOINT": nowhere, "OTEL_EXPORTER_OTLP_TIMEOUT": "5"}
    process, _ = await start(tansu.bootstrap_servers, twilio, tmp_path / "bridge.log", env)
    try:
        items = [envelope(f"lost-{n}") for n in range(20)]
        # A trace of its own: the other tests look for theirs in what the mock was sent.
        trace_id = uuid.uuid4().hex
        traceparent = [("traceparent", f"00-{trace_id}-{REQUEST_SPAN}-01".encode())]
        await produce(
            tansu.bootstrap_servers, process.topics.requests, items, lambda _: traceparent
        )
        replies = await collect(tansu.bootstrap_servers, process.topics.replies, 20, 30)
        assert sorted(r.value["id"] for r in replies) == sorted(f"lost-{n}" for n in range(20))
        assert {r.value["status"] for r in replies} == {"ok"}
        # Still tracing: each reply carries the context of its span in the request's trace.
        assert {ids(r.headers["traceparent"])[0] for r in replies} == {trace_id}
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{process.http_url}/readyz")).status_code == 200
    finally:
        # Within the harness's 30 s: the flush of spans at exit is bounded, whatever the
        # exporter's retries would take.
        await stopped(process)
    assert "tracing on: spans exported by otlp" in process.log()


async def test_a_poll_is_a_span_whose_context_the_polled_events_carry(
    tansu: Any, prism: Any, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    # Prism answers ListMessage with the spec's example message: one polled event.
    env = {
        **TRACING,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "BRIDGE_CREDENTIALS__DEFAULT__POLL": "true",
        "BRIDGE_POLLER__START_AT": "2000-01-01T00:00:00Z",
        "BRIDGE_POLLER__REFRESH_INTERVAL_S": "1",
        "BRIDGE_POLLER__STATE_TOPIC": f"poll-{uuid.uuid4().hex[:8]}",
    }
    bootstrap, log = tansu.bootstrap_servers, tmp_path / "bridge.log"
    process, prefix = await start(bootstrap, prism.base_url, log, env, "message-status")
    try:
        [event] = await collect(tansu.bootstrap_servers, prefix + "message-status", 1, 30)
    finally:
        await stopped(process)
    trace_id, poll_id = ids(event.headers["ce_traceparent"])

    def polled(spans: list[ReceivedSpan]) -> bool:
        # The poll's span ends after its state is written, so it may come in a later export.
        return bool(of_trace(spans, trace_id, "CLIENT") and of_trace(spans, trace_id, "INTERNAL"))

    spans = await otlp.until(polled, 20)
    [poll] = of_trace(spans, trace_id, "INTERNAL")
    assert (poll.name, poll.span_id, poll.parent_span_id) == ("poll", poll_id, None)
    # The list calls to Twilio are its children, named by the spec's template.
    lists = of_trace(spans, trace_id, "CLIENT")
    assert {c.parent_span_id for c in lists} == {poll_id}
    assert {c.name for c in lists} == {"GET /2010-04-01/Accounts/{AccountSid}/Messages.json"}
