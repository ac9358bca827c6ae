"""The running bridge: wiring, the main loop, and graceful shutdown on SIGTERM/SIGINT.

Start-up builds every component from the one settings object; the main loop consumes requests
and serves webhooks until a signal; shutdown turns readiness off, stops accepting webhooks and
fetching, lets in-flight work finish within the grace period, commits and leaves the group. A
second signal exits at once without committing unfinished work.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from bridge.calls import CallBuilder
from bridge.catalog import Catalog
from bridge.envelopes import Reply
from bridge.http.app import create_app
from bridge.http.server import HttpServer
from bridge.kafka.consumer import RequestConsumer
from bridge.kafka.producer import Publisher, RecordTooLarge
from bridge.kafka.records import Record
from bridge.kafka.seen import SeenLog
from bridge.poller import Poller
from bridge.processor import Outcome, Processor
from bridge.ratelimit import Limiter
from bridge.retry import RetryPolicy
from bridge.settings import Settings
from bridge.twilio.client import TwilioClient
from bridge.webhooks.delivery import EventDelivery
from bridge.webhooks.receiver import WebhookReceiver

__all__ = ["Bridge", "run"]

log = logging.getLogger(__name__)


class Bridge:
    """Every component of one bridge process, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.client = TwilioClient(settings.twilio, settings.credentials)
        builder = CallBuilder(
            Catalog.load(),
            settings.credentials,
            settings.twilio,
            strict=settings.processing.strict_params,
        )
        self.processor = Processor(
            builder,
            self.client,
            RetryPolicy(**settings.retry.model_dump()),
            Limiter(**settings.rate_limit.model_dump()),
            filter_nulls=settings.processing.filter_nulls,
            # Room for the envelope around the items, within the producer's limit.
            reply_budget=settings.kafka.max_request_size // 2,
        )
        self.publisher = Publisher(settings.kafka)
        self.consumer = RequestConsumer(settings.kafka, settings.processing, self.handle)
        webhook = settings.webhook
        self.seen = (
            SeenLog(settings.kafka, webhook.dedupe_topic, webhook.dedupe_window_s, self.publisher)
            if webhook.dedupe_window_s
            else None
        )
        self.delivery = EventDelivery(self.publisher, self.seen, webhook.ack_timeout_s)
        receiver = WebhookReceiver(
            webhook, settings.credentials, self.delivery, self.publisher.max_record_bytes
        )
        polled = [name for name, c in settings.credentials.items() if c.poll]
        self.poller = (
            Poller(
                settings.poller,
                settings.kafka,
                webhook,
                polled,
                builder,
                self.client,
                self.publisher,
                self.delivery,
            )
            if polled
            else None
        )
        self.ready = False
        self.http = HttpServer(
            create_app(receiver, webhook, lambda: self.ready),
            settings.http,
            grace_s=webhook.ack_timeout_s + 1,
        )

    async def handle(self, record: Record) -> None:
        """Process one record and publish its outcome; returns once Kafka acknowledged it."""
        outcome = await self.processor.process(record)
        await self.publish(record, outcome)

    async def publish(self, record: Record, outcome: Outcome) -> None:
        """Publish the reply and the error record of one outcome, concurrently."""
        kafka = self.settings.kafka
        sends = []
        if outcome.reply is not None:
            sends.append(self._publish_reply(record, outcome.reply))
        if outcome.error is not None:
            error = outcome.error
            headers = [("id", (error.id or "").encode()), ("kind", error.error.kind.encode())]
            sends.append(
                self.publisher.publish(
                    kafka.error_topic, record.key, error.model_dump_json().encode(), headers
                )
            )
        await asyncio.gather(*sends)

    async def _publish_reply(self, record: Record, reply: Reply) -> None:
        headers = [("id", reply.id.encode()), ("status", reply.status.encode())]
        topic = self.settings.kafka.reply_topic
        value = reply.model_dump_json().encode()
        if len(value) > self.publisher.max_record_bytes:
            value = self._shrunk(reply, len(value))
        try:
            await self.publisher.publish(topic, record.key, value, headers)
        except RecordTooLarge:
            await self.publisher.publish(
                topic, record.key, self._shrunk(reply, len(value)), headers
            )

    @staticmethod
    def _shrunk(reply: Reply, size: int) -> bytes:
        """The reply without its body, saying why: a reply too large for Kafka still arrives."""
        warning = f"body omitted: the reply ({size} bytes) exceeds the broker's message limit"
        slim = reply.model_copy(update={"body": None, "warnings": [*reply.warnings, warning]})
        return slim.model_dump_json().encode()

    async def start(self) -> None:
        """Connect to Kafka, load the dedupe window, serve HTTP and join the consumer group."""
        if not self.settings.webhook.validate_signatures:
            log.warning("webhook signature validation is OFF: anyone can publish events")
        await self.publisher.start()
        if self.seen is not None:
            await self.seen.start()
        await self.http.start()
        await self.consumer.start()
        if self.poller is not None:
            await self.poller.start()
        self.ready = True

    async def serve(self) -> None:
        """Consume until ``stopping`` is set, then shut down gracefully."""
        polling = (
            asyncio.create_task(self.poller.run(self.stopping)) if self.poller is not None else None
        )
        try:
            await self.consumer.run(self.stopping)
            self.ready = False
            if polling is not None:
                # It finishes its current poll, then sees ``stopping``; a poll stuck on a
                # broker outage is cancelled below, and its watermark was not moved.
                await asyncio.wait({polling}, timeout=self.settings.processing.shutdown_grace_s)
            log.info("stopping: finishing %d in-flight requests", self.consumer.in_flight)
            # Webhooks first: each waits at most the ack timeout, then nothing new arrives.
            await self.http.stop()
            if not await self.consumer.drain():
                log.warning("grace period over; unfinished requests will be redelivered")
            if not await self.delivery.drain(self.settings.processing.shutdown_grace_s):
                log.warning("grace period over; some webhook events were not acknowledged")
        finally:
            self.ready = False
            await self.http.stop()
            await self.consumer.stop()
            if polling is not None:
                polling.cancel()
            if self.poller is not None:
                await self.poller.stop()
            if self.seen is not None:
                await self.seen.stop()
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
        await bridge.start()
        log.info("bridge started; consuming %s", ", ".join(settings.kafka.request_topics))
        await bridge.serve()
    except asyncio.CancelledError:
        return 130
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("bridge stopped")
    return 0
