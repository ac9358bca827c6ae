"""The running bridge: wiring, the main loop, and graceful shutdown on SIGTERM/SIGINT.

Start-up builds every component from the one settings object; the main loop consumes requests
and serves webhooks until a signal; shutdown turns readiness off, stops accepting webhooks and
fetching, lets in-flight work finish within the grace period, commits and leaves the group. A
second signal exits at once without committing unfinished work.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable

from aiokafka.errors import KafkaError
from starlette.routing import Route

from bridge.app.http import create_app
from bridge.config import Settings
from bridge.contract.envelopes import ErrorInfo, ErrorRecord, Reply, SourceRef, utc_timestamp
from bridge.http.server import HttpServer
from bridge.inbound.delivery import EventDelivery
from bridge.inbound.polling.poller import Poller
from bridge.inbound.redelivery.log import RedeliveryLog
from bridge.inbound.webhooks.receiver import WebhookReceiver
from bridge.instances.api import instances_routes
from bridge.instances.changes import Rules
from bridge.instances.log import InstanceLog
from bridge.kafka.consumer import RequestConsumer
from bridge.kafka.producer import Publisher
from bridge.kafka.records import Record
from bridge.observability.metrics import (
    CONSUMER_LAG,
    ERRORS,
    IN_FLIGHT,
    REPLY_PUBLISH_SECONDS,
    REQUESTS,
    TWILIO_IN_FLIGHT,
    labelled,
)
from bridge.outbound.idempotency.log import IdempotencyLog
from bridge.outbound.processor import Outcome, Processor
from bridge.outbound.replies import error_record_bytes, reply_bytes
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder
from bridge.twilio.catalog import Catalog
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter, Limits
from bridge.twilio.retry import RetryPolicy

__all__ = ["Bridge", "run"]

log = logging.getLogger(__name__)
_WATCH_INTERVAL_S = 5.0


class Bridge:
    """Every component of one bridge process, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.accounts = Accounts(settings.credentials, calls=settings.poller.calls)
        self.client = TwilioClient(settings.twilio)
        builder = CallBuilder(
            Catalog.load(settings.catalog.spec_dir),
            self.accounts,
            settings.twilio,
            strict=settings.processing.strict_params,
        )
        self.publisher = Publisher(settings.kafka)
        admin = settings.admin
        self.instances = (
            InstanceLog(settings.kafka, admin, settings.twilio, self.accounts, self.publisher)
            if admin.enabled
            else None
        )
        self.idempotency = (
            IdempotencyLog(settings.kafka, settings.dedupe, self.publisher)
            if settings.dedupe.window_s
            else None
        )
        self.processor = Processor(
            builder,
            self.client,
            RetryPolicy(**settings.retry.model_dump()),
            Limiter(Limits.of(**settings.rate_limit.model_dump())),
            filter_nulls=settings.processing.filter_nulls,
            # Room for the envelope around the items, within the producer's limit.
            reply_budget=settings.kafka.max_request_size // 2,
            record_limit=self.publisher.max_record_bytes,
            idempotency=self.idempotency,
            resend_unknown=settings.dedupe.on_unknown_outcome == "resend",
            refresh_accounts=self.instances.latest if self.instances is not None else None,
        )
        self.consumer = RequestConsumer(
            settings.kafka,
            settings.processing,
            self.handle,
            on_assigned=self.idempotency.resync if self.idempotency is not None else None,
        )
        IN_FLIGHT.set_function(lambda: self.consumer.in_flight)
        TWILIO_IN_FLIGHT.set_function(lambda: self.client.in_flight)
        webhook = settings.webhook
        self.redeliveries = (
            RedeliveryLog(
                settings.kafka, webhook.dedupe_topic, webhook.dedupe_window_s, self.publisher
            )
            if webhook.dedupe_window_s
            else None
        )
        self.delivery = EventDelivery(self.publisher, self.redeliveries, webhook.ack_timeout_s)
        receiver = WebhookReceiver(
            webhook, self.accounts, self.delivery, self.publisher.max_record_bytes
        )
        # Instances may start polling at any time, so with them the poller is always there.
        polled = any(c.poll for c in settings.credentials.values()) or admin.enabled
        self.poller = (
            Poller(
                settings.poller,
                settings.kafka,
                webhook,
                self.accounts,
                builder,
                self.client,
                self.publisher,
                self.delivery,
            )
            if polled
            else None
        )
        self.started = False
        self.broker_reachable = False
        self.http = HttpServer(
            create_app(receiver, webhook, self.readiness, self._admin_routes()),
            settings.http,
            grace_s=webhook.ack_timeout_s + 1,
        )

    def _admin_routes(self) -> list[Route]:
        if self.instances is None:
            return []
        admin, poller = self.settings.admin, self.settings.poller
        assert admin.token is not None  # AdminSettings demands it when enabled
        rules = Rules(
            is_static=self.accounts.is_static,
            default_refresh_interval_s=poller.refresh_interval_s,
            max_refresh_interval_s=self.settings.webhook.dedupe_window_s - poller.lookback_s,
        )
        return instances_routes(
            self.instances,
            admin.token.get_secret_value(),
            rules,
            trust_proxy=self.settings.webhook.trust_proxy,
        )

    def readiness(self) -> dict[str, bool]:
        """Each condition for receiving traffic; all must hold. False from the first signal."""
        return {
            "started": self.started and not self.stopping.is_set(),
            "consumer_joined": self.consumer.joined,
            "broker_reachable": self.broker_reachable,
            "http_serving": self.http.serving,
        }

    async def handle(self, record: Record) -> None:
        """Process one record and publish its outcome; returns once Kafka acknowledged it."""
        outcome = await self.processor.process(record)
        try:
            await self.publish(record, outcome)
        except Exception:
            # The broker refused the records themselves (an oversized key, say): a stuck
            # partition would be worse, so the error topic gets what can always be sent.
            log.exception("could not publish the outcome of %s", record.offset)
            await self._publish_minimal(record, outcome)
        reply, error = outcome.reply, outcome.error
        status = reply.status if reply is not None else "rejected"
        labelled(REQUESTS, record.topic, status).inc()
        level = logging.DEBUG if error is None else logging.WARNING
        if error is not None:
            ERRORS.labels(error.error.kind).inc()
        if log.isEnabledFor(level):
            kind = error.error.kind if error is not None else None
            log.log(
                level,
                error.error.message if error is not None else "request done",
                extra={
                    "request_id": reply.id if reply is not None else None,
                    "operation": reply.operation if reply is not None else None,
                    "outcome": kind or status,
                    "duration_ms": reply.duration_ms if reply is not None else None,
                    "topic": record.topic,
                },
            )

    async def publish(self, record: Record, outcome: Outcome) -> None:
        """Publish the reply and the error record of one outcome, concurrently; returns once
        they and the idempotency log's answer (``outcome.recorded``) are acknowledged."""
        kafka = self.settings.kafka
        sends: list[Awaitable[object]] = []
        if outcome.recorded is not None:
            sends.append(outcome.recorded)
        if outcome.reply is not None:
            sends.append(self._publish_reply(record, outcome.reply, outcome.reply_value))
        if outcome.error is not None:
            error = outcome.error
            headers = [("id", (error.id or "").encode()), ("kind", error.error.kind.encode())]
            value = error_record_bytes(error, self.publisher.max_record_bytes)
            sends.append(self.publisher.publish(kafka.error_topic, record.key, value, headers))
        await asyncio.gather(*sends)

    async def _publish_minimal(self, record: Record, outcome: Outcome) -> None:
        """An error record with only the request's place, no key: for outcomes Kafka refused."""
        request_id = outcome.reply.id if outcome.reply is not None else None
        minimal = ErrorRecord(
            id=request_id,
            error=ErrorInfo(
                kind="internal",
                message="the outcome of this request could not be published; see source",
                retryable=False,
            ),
            source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
            time=utc_timestamp(),
        )
        headers = [("id", (request_id or "").encode()[:256]), ("kind", b"internal")]
        topic = self.settings.kafka.error_topic
        await self.publisher.publish(topic, None, minimal.model_dump_json().encode(), headers)

    async def _publish_reply(self, record: Record, reply: Reply, value: bytes | None) -> None:
        headers = [("id", reply.id.encode()), ("status", reply.status.encode())]
        topic = self.settings.kafka.reply_topic
        started = time.perf_counter()
        if value is None:
            value = reply_bytes(reply, self.publisher.max_record_bytes)
        await self.publisher.publish(topic, record.key, value, headers)
        REPLY_PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def _stop_http(self) -> None:
        await asyncio.sleep(self.settings.http.drain_delay_s)
        await self.http.stop()

    async def _watch(self) -> None:
        """Every few seconds: can the producer reach a broker, and how far behind is the group."""
        shown: set[tuple[str, str]] = set()
        while True:
            self.broker_reachable = await self.publisher.reachable(_WATCH_INTERVAL_S)
            try:
                lag = await self.consumer.lag() if self.broker_reachable else None
            except KafkaError as exc:
                log.warning("consumer lag not measured (%s)", type(exc).__name__)
                lag = None
            if lag is not None:
                labels = {(tp.topic, str(tp.partition)): n for tp, n in lag.items()}
                for gone in shown - labels.keys():
                    CONSUMER_LAG.remove(*gone)
                for label, n in labels.items():
                    CONSUMER_LAG.labels(*label).set(n)
                shown = set(labels)
            await asyncio.sleep(_WATCH_INTERVAL_S)

    async def start(self) -> None:
        """Connect to Kafka, load the dedupe window, serve HTTP and join the consumer group."""
        if not self.settings.webhook.validate_signatures:
            log.warning("webhook signature validation is OFF: anyone can publish events")
        await self.publisher.start()
        if self.instances is not None:
            await self.instances.start()
        if self.redeliveries is not None:
            await self.redeliveries.start()
        if self.idempotency is not None:
            await self.idempotency.start()
        await self.http.start()
        await self.consumer.start()
        if self.poller is not None:
            await self.poller.start()
        self.broker_reachable = True  # every client above has just reached it
        self.started = True

    async def serve(self) -> None:
        """Consume until ``stopping`` is set, then shut down gracefully."""
        grace_s = self.settings.processing.shutdown_grace_s
        polling = (
            asyncio.create_task(self.poller.run(self.stopping)) if self.poller is not None else None
        )
        watching = asyncio.create_task(self._watch())
        try:
            await self.consumer.run(self.stopping)
            log.info("stopping: finishing %d in-flight requests", self.consumer.in_flight)
            # Fetching has stopped; in-flight requests, the running poll and webhooks (for
            # drain_delay_s, while load balancers catch up with readiness) finish side by side.
            # A poll stuck on a broker outage is cancelled below; its watermark did not move.
            polled = asyncio.wait({polling}, timeout=grace_s) if polling else asyncio.sleep(0)
            drained, *_ = await asyncio.gather(self.consumer.drain(), polled, self._stop_http())
            if not drained:
                log.warning("grace period over; unfinished requests will be redelivered")
            if not await self.delivery.drain(grace_s):
                log.warning("grace period over; some webhook events were not acknowledged")
        finally:
            watching.cancel()
            if polling is not None:
                polling.cancel()
            await self.close()

    async def close(self) -> None:
        """Stop every component, whether or not it started; leaves the group last."""
        self.started = False
        await self.http.stop()
        await self.consumer.stop()
        if self.poller is not None:
            await self.poller.stop()
        if self.redeliveries is not None:
            await self.redeliveries.stop()
        if self.idempotency is not None:
            await self.idempotency.stop()
        if self.instances is not None:
            await self.instances.stop()
        await self.publisher.stop()
        await self.client.aclose()


async def run(settings: Settings) -> int:
    """Run the bridge until SIGTERM/SIGINT; exit code 0 after a graceful stop."""
    bridge = Bridge(settings)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if bridge.stopping.is_set():
            log.warning("second signal: exiting without waiting for in-flight work")
            if main is not None:
                main.cancel()
            return
        log.info("received %s: shutting down", signal.Signals(signum).name)
        bridge.stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            await bridge.start()
        except (KafkaError, OSError, RuntimeError) as exc:
            # Broker unreachable, TLS or SASL refused, port taken: one line, no traceback.
            log.error("start-up failed: %s: %s", type(exc).__name__, exc)
            await bridge.close()
            return 1
        log.info("bridge started; consuming %s", ", ".join(settings.kafka.request_topics))
        # What start-up built (catalog, settings, clients: ~80,000 objects) lives as long as the
        # process: frozen, a full collection no longer walks it (30-60 ms each, ~20 per 20k
        # envelopes; measured 0.35 -> 0.29 ms CPU per envelope with the threshold in cli.py).
        gc.collect()
        gc.freeze()
        await bridge.serve()
    except asyncio.CancelledError:
        return 130
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("bridge stopped")
    return 0
