"""The HTTP app and webhook receiver (``bridge.app.http``, ``bridge.inbound.webhooks.receiver``).

Kafka is replaced by a delivery that records events and answers as told; the real broker is
in ``tests/integration/test_webhooks.py``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from twilio.request_validator import RequestValidator

from bridge.app.http import create_app, openapi_document
from bridge.config import (
    WEBHOOK_FAMILIES,
    KafkaSettings,
    TwilioSettings,
    TwimlSettings,
    WebhookSettings,
)
from bridge.inbound.twiml.answers import TwimlAnswers
from bridge.inbound.webhooks.receiver import WebhookReceiver, public_url
from bridge.instances.accounts import account_of
from bridge.kafka.producer import Publisher
from bridge.kafka.records import Record
from bridge.observability.metrics import REGISTRY
from bridge.twilio.accounts import Account, Accounts
from tests.helpers import (
    ACCOUNT,
    AUTH_TOKEN,
    CREDENTIALS,
    INSTANCE_ACCOUNT,
    RecordingDelivery,
    stored_instance,
    traceparent_of,
)

PARAMS = {"AccountSid": ACCOUNT, "MessageSid": "SM1", "Body": "hi"}


def client(
    delivery: RecordingDelivery,
    ready: bool = True,
    answers: TwimlAnswers | None = None,
    **settings: object,
) -> httpx.AsyncClient:
    webhook = WebhookSettings.model_validate(settings)
    receiver = WebhookReceiver(
        webhook, Accounts(CREDENTIALS), delivery, max_record_bytes=10_000, answers=answers
    )
    app = create_app(receiver, webhook, lambda: {"started": ready, "consumer_joined": True})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver")


FORM = "application/x-www-form-urlencoded"


async def post(
    http: httpx.AsyncClient, params: dict[str, str], url: str | None = None
) -> httpx.Response:
    url = url or "http://testserver/webhooks/twilio/messages"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    return await http.post(
        url,
        content=urlencode(params),
        headers={"content-type": FORM, "x-twilio-signature": signature},
    )


async def test_a_signed_webhook_is_delivered_to_its_familys_topic() -> None:
    delivery = RecordingDelivery()
    http = client(delivery, topics={"messages": "inbound.sms"})
    answer = await post(http, PARAMS)
    assert answer.status_code == 200
    [(topic, event)] = delivery.events
    assert topic == "inbound.sms" and event.subject == "SM1"


async def test_kafka_not_acknowledging_in_time_is_a_503() -> None:
    http = client(RecordingDelivery(acknowledge=False))
    answer = await post(http, PARAMS)
    assert answer.status_code == 503


async def test_static_twiml_per_family() -> None:
    http = client(
        RecordingDelivery(), twiml={"messages": "<Response><Message>Thanks</Message></Response>"}
    )
    answer = await post(http, PARAMS)
    assert answer.text == "<Response><Message>Thanks</Message></Response>"


async def test_an_awaited_family_gets_the_twiml_read_back_and_the_others_as_before() -> None:
    delivery = RecordingDelivery()
    twiml = TwimlSettings(families=["messages"], topic="sms.answers")
    publisher = cast(Publisher, SimpleNamespace(max_record_bytes=1_000_000))
    answers = TwimlAnswers(twiml, KafkaSettings(), publisher, published=None)
    http = client(delivery, answers=answers, twiml={"voice": "<Response><Reject/></Response>"})
    answering = asyncio.create_task(post(http, PARAMS))
    await delivery.delivered.wait()
    [(_, event)] = delivery.events
    assert dict(event.headers())["ce_twimlreplyto"] == b"sms.answers"
    said = b"<Response><Message>On its way</Message></Response>"
    answers.read(Record("sms.answers", 0, 0, event.id.encode(), said))
    answer = await answering
    assert answer.status_code == 200 and answer.text == said.decode()
    assert answer.headers["content-type"] == "text/xml; charset=utf-8"
    voice = {"AccountSid": ACCOUNT, "CallSid": "CA1"}
    url = "http://testserver/webhooks/twilio/voice"
    assert (await post(http, voice, url)).text == "<Response><Reject/></Response>"
    delivery.acknowledge = False
    assert (await post(http, {**PARAMS, "MessageSid": "SM2"})).status_code == 503


async def test_the_public_url_is_what_gets_checked_behind_an_ingress() -> None:
    delivery = RecordingDelivery()
    http = client(delivery, public_url="https://hooks.example.com/bridge")
    public = "https://hooks.example.com/bridge/webhooks/twilio/messages?x=1"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(public, PARAMS)
    answer = await http.post(
        "/webhooks/twilio/messages?x=1",
        content=urlencode(PARAMS),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature,
        },
    )
    assert answer.status_code == 200 and len(delivery.events) == 1


@pytest.mark.parametrize("trust", [True, False])
def test_forwarded_headers_count_only_from_a_trusted_proxy(trust: bool) -> None:
    settings = WebhookSettings(trust_proxy=trust)
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "hooks.example.com, inner"}
    url = public_url(
        settings, scheme="http", host="10.0.0.7:8080", path="/p", query="", headers=headers
    )
    assert url == ("https://hooks.example.com/p" if trust else "http://10.0.0.7:8080/p")


async def test_validation_off_publishes_unsigned_webhooks() -> None:
    delivery = RecordingDelivery()
    http = client(delivery, validate_signatures=False)
    answer = await http.post(
        "/webhooks/twilio/messages",
        content=urlencode(PARAMS),
        headers={"content-type": FORM},
    )
    assert answer.status_code == 200 and len(delivery.events) == 1


async def test_readiness_names_the_failing_check_and_liveness_stays_up() -> None:
    http = client(RecordingDelivery(), ready=False)
    assert (await http.get("/healthz")).status_code == 200
    answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "checks": {"started": False, "consumer_joined": True}}
    ready = await client(RecordingDelivery(), ready=True).get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_until_started_only_the_probes_metrics_and_document_answer() -> None:
    webhook = WebhookSettings()
    delivery = RecordingDelivery()
    receiver = WebhookReceiver(webhook, Accounts(CREDENTIALS), delivery, max_record_bytes=10_000)
    started = False
    app = create_app(receiver, webhook, lambda: {"started": started}, started=lambda: started)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver")
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert (await http.get(path)).status_code == 200, path
    assert (await http.get("/readyz")).status_code == 503
    refused = await post(http, PARAMS)
    assert refused.status_code == 503 and "starting" in refused.text
    assert (await http.get("/instances")).status_code == 503
    started = True
    assert (await post(http, PARAMS)).status_code == 200
    assert len(delivery.events) == 1


async def test_openapi_document_lists_every_family_and_status() -> None:
    http = client(RecordingDelivery())
    document = (await http.get("/openapi.json")).json()
    assert document == openapi_document()
    webhook = document["paths"]["/webhooks/twilio/{family}"]["post"]
    assert webhook["parameters"][0]["schema"]["enum"] == list(WEBHOOK_FAMILIES)
    assert {"200", "400", "403", "413", "415", "503"} <= set(webhook["responses"])


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_refusals_and_deliveries_are_counted_by_family_and_outcome() -> None:
    http = client(RecordingDelivery())
    before = {
        "published": _count("twilio_bridge_webhooks_total", family="messages", outcome="published"),
        "forbidden": _count("twilio_bridge_webhooks_total", family="messages", outcome="forbidden"),
        "signature": _count("twilio_bridge_webhook_signature_failures_total", family="messages"),
    }
    await post(http, PARAMS)
    forged = await http.post(
        "/webhooks/twilio/messages", content=urlencode(PARAMS), headers={"content-type": FORM}
    )
    assert forged.status_code == 403
    assert (
        _count("twilio_bridge_webhooks_total", family="messages", outcome="published")
        == before["published"] + 1
    )
    assert (
        _count("twilio_bridge_webhooks_total", family="messages", outcome="forbidden")
        == before["forbidden"] + 1
    )
    assert (
        _count("twilio_bridge_webhook_signature_failures_total", family="messages")
        == before["signature"] + 1
    )
    exposition = (await http.get("/metrics")).text
    assert 'twilio_bridge_webhooks_total{family="messages",outcome="forbidden"}' in exposition
    assert AUTH_TOKEN not in exposition


# --- instances: accounts added at runtime --------------------------------------------------------


INSTANCE_TOKEN = "acme-token-for-unit-tests"
INSTANCE_PARAMS = {**PARAMS, "AccountSid": INSTANCE_ACCOUNT}


def instance_account(name: str = "acme", **configuration: Any) -> Account:
    instance = stored_instance(name, INSTANCE_ACCOUNT, INSTANCE_TOKEN, **configuration)
    return account_of(instance, TwilioSettings())


def accounts_client(delivery: RecordingDelivery, accounts: Accounts) -> httpx.AsyncClient:
    webhook = WebhookSettings()
    receiver = WebhookReceiver(webhook, accounts, delivery, max_record_bytes=10_000)
    app = create_app(receiver, webhook, lambda: {"started": True})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver")


def with_instance(**configuration: Any) -> Accounts:
    accounts = Accounts(CREDENTIALS)
    accounts.put(instance_account(**configuration))
    return accounts


async def post_signed(
    http: httpx.AsyncClient, params: dict[str, str], token: str, family: str = "messages"
) -> httpx.Response:
    url = f"http://testserver/webhooks/twilio/{family}"
    signature = RequestValidator(token).compute_signature(url, params)
    return await http.post(
        url,
        content=urlencode(params),
        headers={"content-type": FORM, "x-twilio-signature": signature},
    )


async def test_an_instances_webhook_is_checked_with_its_token_and_goes_to_its_topic() -> None:
    delivery = RecordingDelivery()
    accounts = with_instance(events={"topics": {"messages": "acme.inbound"}})
    http = accounts_client(delivery, accounts)
    answer = await post_signed(http, INSTANCE_PARAMS, INSTANCE_TOKEN)
    assert answer.status_code == 200, answer.text
    static = await post_signed(http, PARAMS, AUTH_TOKEN)
    assert static.status_code == 200
    assert [topic for topic, _ in delivery.events] == ["acme.inbound", "twilio.events.messages"]


async def test_an_instances_families_without_a_topic_use_the_bridges() -> None:
    delivery = RecordingDelivery()
    http = accounts_client(delivery, with_instance(events={"topics": {"message-status": "x"}}))
    assert (await post_signed(http, INSTANCE_PARAMS, INSTANCE_TOKEN)).status_code == 200
    assert [topic for topic, _ in delivery.events] == ["twilio.events.messages"]


async def test_another_accounts_token_does_not_sign_an_instances_webhook() -> None:
    delivery = RecordingDelivery()
    http = accounts_client(delivery, with_instance())
    answer = await post_signed(http, INSTANCE_PARAMS, AUTH_TOKEN)
    assert answer.status_code == 403 and "invalid signature" in answer.text
    assert delivery.events == []


@pytest.mark.parametrize(
    "events",
    [{"mechanism": "polling"}, {"enabled": False}, {"enabled": False, "mechanism": "polling"}],
)
async def test_an_instance_that_does_not_take_webhooks_refuses_them(events: dict[str, Any]) -> None:
    delivery = RecordingDelivery()
    http = accounts_client(delivery, with_instance(events=events))
    before = _count("twilio_bridge_webhooks_total", family="messages", outcome="events_off")
    answer = await post_signed(http, INSTANCE_PARAMS, INSTANCE_TOKEN)
    assert answer.status_code == 403 and "does not take events by webhook" in answer.text
    assert delivery.events == []
    after = _count("twilio_bridge_webhooks_total", family="messages", outcome="events_off")
    assert after == before + 1


async def test_a_deleted_instances_webhooks_are_refused() -> None:
    delivery = RecordingDelivery()
    accounts = with_instance()
    http = accounts_client(delivery, accounts)
    accounts.remove("acme", "2026-01-02T00:00:00.000Z")
    answer = await post_signed(http, INSTANCE_PARAMS, INSTANCE_TOKEN)
    assert answer.status_code == 403
    assert delivery.events == []


async def test_an_instance_changed_to_polling_stops_taking_webhooks_at_once() -> None:
    delivery = RecordingDelivery()
    accounts = with_instance()
    http = accounts_client(delivery, accounts)
    assert (await post_signed(http, INSTANCE_PARAMS, INSTANCE_TOKEN)).status_code == 200
    accounts.put(instance_account(events={"mechanism": "polling"}))
    assert (await post_signed(http, INSTANCE_PARAMS, INSTANCE_TOKEN)).status_code == 403
    assert len(delivery.events) == 1


async def test_a_trailing_slash_is_not_found_not_redirected() -> None:
    async with client(RecordingDelivery(), validate_signatures=False) as http:
        assert (await http.get("/webhooks/twilio/0%2F")).status_code == 404
        assert (await http.get("/webhooks/twilio/messages/")).status_code == 404
        assert (await http.get("/healthz/")).status_code == 404


# --- tracing ---------------------------------------------------------------------------------

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
PHONE = "+15557654321"


async def post_traced(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
    url = "http://testserver/webhooks/twilio/messages"
    params = {**PARAMS, "From": PHONE, "Body": "your code is 908172"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    signed = {"content-type": FORM, "x-twilio-signature": signature, **headers}
    return await http.post(url, content=urlencode(params), headers=signed)


async def test_a_webhook_is_a_server_span_whose_context_its_event_carries(
    spans: InMemorySpanExporter,
) -> None:
    delivery = RecordingDelivery()
    answer = await post_traced(client(delivery), traceparent=TRACEPARENT, tracestate="t=1")
    assert answer.status_code == 200
    [span] = spans.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "POST /webhooks/twilio/{family}"
    assert span.parent is not None and span.context is not None
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (
        TRACE_ID,
        TRACEPARENT[36:52],
    )
    # The route and the family, never the URL or anything of the form.
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/webhooks/twilio/{family}",
        "twilio.webhook.family": "messages",
        "http.response.status_code": 200,
    }
    [(_, event)] = delivery.events
    headers = dict(event.headers())
    assert headers["ce_traceparent"] == traceparent_of(span).encode()
    assert headers["ce_tracestate"] == b"t=1"


async def test_a_webhook_without_context_starts_a_trace_its_event_carries(
    spans: InMemorySpanExporter,
) -> None:
    delivery = RecordingDelivery()
    await post_traced(client(delivery))
    [span] = spans.get_finished_spans()
    assert span.parent is None
    [(_, event)] = delivery.events
    assert dict(event.headers())["ce_traceparent"] == traceparent_of(span).encode()
    assert "ce_tracestate" not in dict(event.headers())


async def test_a_webhook_kafka_did_not_take_fails_its_span(spans: InMemorySpanExporter) -> None:
    answer = await post_traced(client(RecordingDelivery(acknowledge=False)))
    assert answer.status_code == 503
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "503"


async def test_with_tracing_off_an_event_carries_the_webhooks_own_trace_context() -> None:
    delivery = RecordingDelivery()
    await post_traced(client(delivery), traceparent=TRACEPARENT)
    [(_, event)] = delivery.events
    assert dict(event.headers())["ce_traceparent"] == TRACEPARENT.encode()


async def test_with_tracing_off_a_webhook_without_context_gives_an_event_without() -> None:
    delivery = RecordingDelivery()
    await post_traced(client(delivery))
    [(_, event)] = delivery.events
    assert not any(name.startswith("ce_trace") for name, _ in event.headers())
