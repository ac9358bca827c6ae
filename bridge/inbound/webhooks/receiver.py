"""One webhook from Twilio, from request to answer: parse, check the signature, publish, reply.

Independent of the web framework: the HTTP layer hands over a ``WebhookRequest`` and sends back
the ``WebhookAnswer``. Every refusal names its reason (for the caller, the log and metrics) and
publishes nothing; a 2xx goes out only after Kafka acknowledged every event of the delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from bridge.config import WebhookSettings
from bridge.contract.events import (
    EVENT_STREAMS,
    CloudEvent,
    EventError,
    event_streams_events,
    form_data,
    webhook_event,
    with_trace,
)
from bridge.contract.twiml import TWIML_FAMILIES
from bridge.inbound.delivery import EventDelivery
from bridge.inbound.twiml.answers import TwimlAnswers
from bridge.inbound.webhooks.signature import SignatureInvalid, verify_signature
from bridge.observability.metrics import WEBHOOK_SIGNATURE_FAILURES, WEBHOOKS
from bridge.observability.tracing import AttributeValue, tracer
from bridge.tracking.correlation import FAMILIES as TRACKED_FAMILIES
from bridge.tracking.correlation import token_in
from bridge.tracking.log import DeliveryLog
from bridge.twilio.accounts import Account, Accounts, event_topic
from bridge.twilio.encoding import FORM, parse_form

__all__ = ["WebhookAnswer", "WebhookReceiver", "WebhookRequest", "public_url"]

log = logging.getLogger(__name__)

_JSON_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_XML = "text/xml; charset=utf-8"
_ROUTE = "/webhooks/twilio/{family}"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What Twilio sent: the URL it called (query included), headers in lower case, body."""

    family: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """The HTTP answer, and a short outcome for logs and metrics."""

    status: int
    outcome: str
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"


_UNAVAILABLE = WebhookAnswer(503, "unavailable", "Kafka did not acknowledge in time; retry")


def public_url(
    settings: WebhookSettings,
    *,
    scheme: str,
    host: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
) -> str:
    """The URL Twilio called, as it signed it: the public base when set, else what reached us.

    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` count only when the proxy is trusted.
    """
    if settings.public_url:
        base = settings.public_url
    else:
        if settings.trust_proxy:
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
            host = headers.get("x-forwarded-host", host).split(",")[0].strip() or host
        base = f"{scheme}://{host}"
    return f"{base}{path}?{query}" if query else f"{base}{path}"


class WebhookReceiver:
    """Turns webhooks into CloudEvents on Kafka, answering Twilio only after Kafka took them."""

    def __init__(
        self,
        settings: WebhookSettings,
        accounts: Accounts,
        delivery: EventDelivery,
        max_record_bytes: int,
        tracking: DeliveryLog | None = None,
        answers: TwimlAnswers | None = None,
    ) -> None:
        """``answers`` answers the families it awaits with TwiML from Kafka."""
        self._settings = settings
        # Status callbacks of tracked sends are handed over to it, beside their events.
        self._tracking = tracking
        self._delivery = delivery
        self._answers = answers
        self._max_record_bytes = max_record_bytes
        self._accounts = accounts
        self._shared_keys = {k: v.get_secret_value() for k, v in settings.shared_keys.items()}

    async def receive(self, request: WebhookRequest) -> WebhookAnswer:
        """The answer for one webhook; never raises for anything Twilio (or a forger) sends.

        One HTTP server span covers it; the events published carry its context."""
        attributes = _span_attributes(request)
        with tracer().server(f"{request.method} {_ROUTE}", request.headers, attributes) as span:
            answer = await self._answer(request, span.headers())
            span.set("http.response.status_code", answer.status)
            if answer.status >= 500:
                span.fail(str(answer.status))
        WEBHOOKS.labels(request.family, answer.outcome).inc()
        return answer

    async def _answer(
        self, request: WebhookRequest, trace: tuple[tuple[str, bytes], ...]
    ) -> WebhookAnswer:
        """The answer; the events published carry ``trace`` (the webhook span's context)."""
        try:
            urlsplit(request.url)
        except ValueError:  # a Host header such as '[::1' ("Invalid IPv6 URL")
            return WebhookAnswer(400, "malformed", "the request URL is not valid (Host header?)")
        try:
            form, data = self._parse(request)
        except _Refused as refused:
            return refused.answer
        named = self._named(data)
        if self._settings.validate_signatures:
            # Event Streams deliveries name no account: any configured account may have sent it.
            signers = named if named is not None else list(self._accounts)
            problem = self._check_signature(request, form, signers)
            if problem is not None:
                log.warning("webhook %s refused: %s", request.family, problem)
                WEBHOOK_SIGNATURE_FAILURES.labels(request.family).inc()
                return WebhookAnswer(403, "forbidden", f"invalid signature: {problem}")
        accounts = named or []
        if accounts and not any(a.webhooks for a in accounts):
            # An instance set to poll, or with events off: its events must not come twice.
            return WebhookAnswer(
                403, "events_off", "this account's instance does not take events by webhook"
            )
        try:
            events = self._events(request, form, data)
            sizes = [len(e.value()) for e in events]
        except EventError as exc:
            return WebhookAnswer(400, "malformed", f"not a {request.family} webhook: {exc}")
        except orjson.JSONEncodeError:  # JSON that parsed, nested deeper than orjson writes
            return WebhookAnswer(400, "malformed", "the data is nested too deeply")
        if any(size > self._max_record_bytes for size in sizes):
            return WebhookAnswer(413, "too_large", "an event exceeds the broker's message limit")
        topic = event_topic(self._settings, request.family, accounts)
        events = [with_trace(event, trace) for event in events]
        return await self._deliver(request, data, topic, events)

    async def _deliver(
        self, request: WebhookRequest, data: Any, topic: str, events: list[CloudEvent]
    ) -> WebhookAnswer:
        """Publish and answer: with the TwiML from Kafka when its family awaits it, once Kafka
        acknowledged every event (and a tracked send's callback) otherwise; 503 when Kafka did
        not in time."""
        family = request.family
        answers = self._answers
        if answers is not None and family in answers.families:
            # One event: the families answered with TwiML are single webhooks.
            twiml = await answers.respond(family, topic, events[0], self._delivery)
            if twiml is not None:
                return WebhookAnswer(200, "published", twiml, _XML)
        elif await self._publish(request, data, [(topic, event) for event in events]):
            return self._acknowledge(family)
        log.warning("webhook %s: Kafka did not acknowledge in time", family)
        return _UNAVAILABLE

    async def _publish(
        self, request: WebhookRequest, data: Any, events: list[tuple[str, CloudEvent]]
    ) -> bool:
        """Publish the events and, for a tracked send's callback, hand it over to tracking;
        True once Kafka acknowledged all of it in time."""
        token = token_in(request.url) if request.family in TRACKED_FAMILIES.values() else None
        if token is None or self._tracking is None or not isinstance(data, dict):
            return await self._delivery.deliver(events)
        handed = self._tracking.hand_over(token, data, self._settings.ack_timeout_s)
        return all(await asyncio.gather(self._delivery.deliver(events), handed))

    def _parse(self, request: WebhookRequest) -> tuple[list[tuple[str, str]], Any]:
        """(form params Twilio signed, the data): query for GET, form or JSON for POST."""
        if request.method == "GET":
            query = urlsplit(request.url).query
            return [], form_data(parse_qsl(query, keep_blank_values=True))
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == FORM and request.family != EVENT_STREAMS:
            try:
                form = parse_form(request.body.decode())
            except (UnicodeDecodeError, ValueError):
                raise _Refused(400, "malformed", "body is not form-encoded data") from None
            return form, form_data(form)
        if content_type in _JSON_TYPES:
            try:
                return [], orjson.loads(request.body)
            except orjson.JSONDecodeError:
                raise _Refused(400, "malformed", "body is not valid JSON") from None
        accepted = "JSON" if request.family == EVENT_STREAMS else f"{FORM} or JSON"
        raise _Refused(415, "unsupported_media_type", f"content type must be {accepted}")

    def _check_signature(
        self, request: WebhookRequest, form: list[tuple[str, str]], accounts: list[Account]
    ) -> str | None:
        """Why the signature is wrong, or None when one of ``accounts``' tokens signed it."""
        tokens = {a.auth_token for a in accounts if a.auth_token is not None}
        candidates: list[str | None] = [*tokens] or [None]
        problem = "no Auth Token configured for this account"
        for token in candidates:
            try:
                verify_signature(
                    request.url, form, request.body, request.headers, token, self._shared_keys
                )
                return None
            except SignatureInvalid as exc:
                problem = exc.reason
        return problem

    def _named(self, data: Any) -> list[Account] | None:
        """The accounts with the delivery's ``AccountSid``; None when it names none."""
        account = data.get("AccountSid") if isinstance(data, dict) else None
        return self._accounts.by_account_sid(account) if isinstance(account, str) else None

    def _events(
        self, request: WebhookRequest, form: list[tuple[str, str]], data: Any
    ) -> list[CloudEvent]:
        if request.family == EVENT_STREAMS:
            return event_streams_events(request.body)
        if not isinstance(data, dict):
            raise EventError("the body is not a JSON object")
        signed = (
            request.url.encode() + b"\n" + (orjson.dumps(sorted(form)) if form else request.body)
        )
        event = webhook_event(
            request.family,
            data,
            idempotency_token=request.headers.get("i-twilio-idempotency-token"),
            signed=signed,
            received=datetime.now(UTC),
        )
        return [event]

    def _acknowledge(self, family: str) -> WebhookAnswer:
        if family in TWIML_FAMILIES:
            twiml = self._settings.twiml.get(family, EMPTY_TWIML)
            return WebhookAnswer(200, "published", twiml, _XML)
        return WebhookAnswer(200, "published")


def _span_attributes(request: WebhookRequest) -> dict[str, AttributeValue | None]:
    # HTTP server semantic conventions; the route, never the URL (its query may hold anything).
    return {
        "http.request.method": request.method,
        "http.route": _ROUTE,
        "twilio.webhook.family": request.family,
    }


class _Refused(Exception):
    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(message)
        self.answer = WebhookAnswer(status, outcome, message)
