"""How the flows are built from the settings: each component gets only its slice of them.

``Outbound`` (request topics to Twilio to replies), ``Inbound`` (webhooks and the poller to
events) and the instances API are assembled here and nowhere else; ``Bridge`` starts and stops
what they hold.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.routing import Route

from bridge.config import Settings
from bridge.inbound.delivery import EventDelivery
from bridge.inbound.polling.poller import Poller
from bridge.inbound.redelivery.log import RedeliveryLog
from bridge.inbound.twiml.answers import TwimlAnswers
from bridge.inbound.webhooks.receiver import WebhookReceiver
from bridge.instances.api import instances_routes
from bridge.instances.changes import Rules
from bridge.instances.log import InstanceLog
from bridge.kafka.consumer import RequestConsumer
from bridge.kafka.producer import Publisher
from bridge.observability.metrics import IN_FLIGHT, TWILIO_IN_FLIGHT
from bridge.outbound.handler import RequestHandler
from bridge.outbound.idempotency.log import IdempotencyLog
from bridge.outbound.processor import Processor, ProcessorOptions
from bridge.outbound.tracking import TrackingStep
from bridge.tracking.log import DeliveryLog
from bridge.tracking.tracker import DeliveryTracker
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder
from bridge.twilio.catalog import Catalog
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter, Limits
from bridge.twilio.retry import RetryPolicy

__all__ = ["Inbound", "Outbound", "instances_api", "polls", "tracker"]


class Outbound:
    """The request consumer and everything a record goes through on its way to a reply."""

    def __init__(
        self,
        settings: Settings,
        accounts: Accounts,
        client: TwilioClient,
        publisher: Publisher,
        *,
        refresh_accounts: Callable[[], Awaitable[None]] | None,
        deliveries: DeliveryLog,
    ) -> None:
        kafka, dedupe = settings.kafka, settings.dedupe
        strict = settings.processing.strict_params
        self.builder = CallBuilder(
            Catalog.load(settings.catalog.spec_dir), accounts, settings.twilio, strict=strict
        )
        self.idempotency = IdempotencyLog(kafka, dedupe, publisher) if dedupe.window_s else None
        self.limiter = Limiter(Limits.of(**settings.rate_limit.model_dump()))
        tracking = TrackingStep(
            self.builder, deliveries, settings.tracking, settings.webhook.public_url
        )
        processor = Processor(
            self.builder,
            client,
            RetryPolicy(**settings.retry.model_dump()),
            self.limiter,
            options=ProcessorOptions(
                filter_nulls=settings.processing.filter_nulls,
                # Room for the envelope around the items, within the producer's limit.
                reply_budget=kafka.max_request_size // 2,
                record_limit=publisher.max_record_bytes,
                resend_unknown=dedupe.on_unknown_outcome == "resend",
            ),
            idempotency=self.idempotency,
            refresh_accounts=refresh_accounts,
            tracking=tracking,
        )
        self.handler = RequestHandler(
            processor, publisher, reply_topic=kafka.reply_topic, error_topic=kafka.error_topic
        )
        assigned = self.idempotency.assigned if self.idempotency is not None else None
        self.consumer = RequestConsumer(
            kafka, settings.processing, self.handler, on_assigned=assigned
        )
        IN_FLIGHT.set_function(lambda: self.consumer.in_flight)
        TWILIO_IN_FLIGHT.set_function(lambda: client.in_flight)


class Inbound:
    """Webhooks and the poller, and the delivery of their events to Kafka."""

    def __init__(
        self,
        settings: Settings,
        accounts: Accounts,
        publisher: Publisher,
        *,
        polled_by: tuple[CallBuilder, TwilioClient] | None,
        deliveries: DeliveryLog | None,
    ) -> None:
        webhook = settings.webhook
        self.redeliveries = _redeliveries(settings, publisher)
        self.answers = _answers(settings, publisher, self.redeliveries)
        self.delivery = EventDelivery(
            publisher,
            self.redeliveries,
            webhook.ack_timeout_s,
            on_published=self.answers.published if self.answers is not None else None,
        )
        self.receiver = WebhookReceiver(
            webhook,
            accounts,
            self.delivery,
            publisher.max_record_bytes,
            tracking=deliveries,
            answers=self.answers,
        )
        self.poller: Poller | None = None
        if polled_by is not None:
            builder, client = polled_by
            self.poller = Poller(
                settings.poller,
                settings.kafka,
                webhook,
                accounts,
                builder,
                client,
                publisher,
                self.delivery,
            )


def _redeliveries(settings: Settings, publisher: Publisher) -> RedeliveryLog | None:
    """The shared window of published event ids, unless ``BRIDGE_WEBHOOK__DEDUPE_WINDOW_S=0``."""
    webhook = settings.webhook
    if not webhook.dedupe_window_s:
        return None
    return RedeliveryLog(settings.kafka, webhook.dedupe_topic, webhook.dedupe_window_s, publisher)


def _answers(
    settings: Settings, publisher: Publisher, redeliveries: RedeliveryLog | None
) -> TwimlAnswers | None:
    """TwiML answers from Kafka, for the families of ``BRIDGE_TWIML__FAMILIES``."""
    if not settings.twiml.families:
        return None
    published = redeliveries.contains if redeliveries is not None else None
    return TwimlAnswers(settings.twiml, settings.kafka, publisher, published=published)


def tracker(
    settings: Settings,
    accounts: Accounts,
    outbound: Outbound,
    client: TwilioClient,
    publisher: Publisher,
) -> DeliveryTracker | None:
    """The owner of the tracking state partitions, when sends can be tracked at all (Twilio
    can call the bridge back: ``BRIDGE_WEBHOOK__PUBLIC_URL``)."""
    if settings.webhook.public_url is None:
        return None
    fetch_with = (accounts, outbound.builder, client, outbound.limiter)
    return DeliveryTracker(settings.tracking, settings.kafka, publisher, fetch_with)


def polls(settings: Settings) -> bool:
    """Whether this bridge polls: a credential asks for it, or instances may at any time."""
    return any(c.poll for c in settings.credentials.values()) or settings.admin.enabled


def instances_api(
    settings: Settings, accounts: Accounts, publisher: Publisher
) -> tuple[InstanceLog | None, list[Route]]:
    """The instances log and the ``/instances`` routes, when ``BRIDGE_ADMIN__ENABLED``."""
    admin, poller = settings.admin, settings.poller
    if not admin.enabled:
        return None, []
    assert admin.token is not None  # AdminSettings demands it when enabled
    log = InstanceLog(settings.kafka, admin, settings.twilio, accounts, publisher)
    rules = Rules(
        is_static=accounts.is_static,
        default_refresh_interval_s=poller.refresh_interval_s,
        max_refresh_interval_s=settings.webhook.dedupe_window_s - poller.lookback_s,
    )
    token = admin.token.get_secret_value()
    return log, instances_routes(log, token, rules, trust_proxy=settings.webhook.trust_proxy)
