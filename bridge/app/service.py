"""The running bridge: one ordered list of components, the main loop, and graceful shutdown.

Start-up starts the components in the order of ``Bridge.components``; shutdown stops every one
of them in reverse, started or not (a half-started client is closed too). The HTTP app comes
first, so the probes answer while start-up waits for a broker (for as long as it takes, or
until a signal); webhooks and the instances API answer 503 until everything has started. The
main loop consumes requests and serves webhooks until a signal; then readiness turns off,
webhooks and fetching stop, in-flight work finishes within the grace period, offsets are
committed and the group is left. A second signal exits at once without committing unfinished
work. ``run`` owns the process's signals, as uvicorn's ``Server`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from contextlib import AsyncExitStack
from typing import Protocol

from bridge.app.http import create_app
from bridge.app.watch import BrokerWatch
from bridge.app.wiring import Inbound, Outbound, instances_api, polls, tracker
from bridge.config import Settings
from bridge.http.server import HttpServer
from bridge.kafka.consumer import COMMIT_TIMEOUT_S
from bridge.kafka.contact import reach_broker
from bridge.kafka.errors import BrokerError
from bridge.kafka.producer import UNREACHABLE_FLUSH_S, Publisher
from bridge.tracking.log import DeliveryLog
from bridge.twilio.accounts import Accounts
from bridge.twilio.client import TwilioClient

__all__ = ["Bridge", "Component", "run"]

log = logging.getLogger(__name__)
CONTACT_TIMEOUT_S = 5.0  # for one broker to answer at start-up
CONTACT_EVERY_S = 1.0  # between tries while none answers
WAITING_LOG_EVERY_S = 30.0
SHUTDOWN_RESERVE_S = COMMIT_TIMEOUT_S + UNREACHABLE_FLUSH_S


class Component(Protocol):
    """Something the bridge starts at start-up and stops at shutdown."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class Bridge:
    """Every component of one bridge process, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.started = False
        self.accounts = Accounts(settings.credentials, calls=settings.poller.calls)
        self.client = TwilioClient(settings.twilio)
        self.publisher = Publisher(settings.kafka)
        self.instances, routes = instances_api(settings, self.accounts, self.publisher)
        self.deliveries = DeliveryLog(settings.tracking, self.publisher)
        self.outbound = Outbound(
            settings,
            self.accounts,
            self.client,
            self.publisher,
            refresh_accounts=self.instances.latest if self.instances is not None else None,
            deliveries=self.deliveries,
        )
        self.tracker = tracker(settings, self.accounts, self.outbound, self.client, self.publisher)
        polled_by = (self.outbound.builder, self.client) if polls(settings) else None
        self.inbound = Inbound(
            settings,
            self.accounts,
            self.publisher,
            polled_by=polled_by,
            deliveries=self.deliveries if self.tracker is not None else None,
        )
        webhook = settings.webhook
        app = create_app(
            self.inbound.receiver, webhook, self.readiness, routes, started=lambda: self.started
        )
        # A webhook lasts until Kafka's acknowledgement, or its TwiML answer from Kafka.
        longest_s = max(webhook.ack_timeout_s, settings.twiml.timeout_s)
        self.http = HttpServer(app, settings.http, grace_s=longest_s + 1)
        self.watch = BrokerWatch(self.publisher, self.outbound.consumer)

    @property
    def components(self) -> list[Component]:
        """What start-up starts, in order; shutdown stops them in reverse."""
        optional = (
            self.instances,
            self.inbound.redeliveries,
            self.inbound.answers,
            self.outbound.idempotency,
            self.tracker,
        )
        polled = [self.inbound.poller] if self.inbound.poller is not None else []
        return [
            self.http,
            self.publisher,
            *(c for c in optional if c is not None),
            self.outbound.consumer,
            *polled,
        ]

    def readiness(self) -> dict[str, bool]:
        """Each condition for receiving traffic; all must hold. False from the first signal."""
        idempotency = self.outbound.idempotency
        return {
            "started": self.started and not self.stopping.is_set(),
            "consumer_joined": self.outbound.consumer.joined,
            # The outcomes of the partitions it owns read: it can tell a duplicate.
            "dedupe_loaded": idempotency is None or idempotency.ready,
            "broker_reachable": self.watch.reachable,
            "http_serving": self.http.serving,
        }

    async def start(self) -> None:
        """Start every component in order: HTTP, then (once a broker answers) the producer, the
        logs, the consumer group. Returns with ``started`` still false when a signal came while
        waiting for the broker."""
        if not self.settings.webhook.validate_signatures:
            log.warning("webhook signature validation is OFF: anyone can publish events")
        for component in self.components:
            if component is self.publisher and not await self._wait_for_broker():
                return
            await component.start()
            if component is self.publisher:
                kafka = self.settings.kafka
                topics = [*kafka.request_topics, kafka.reply_topic, kafka.error_topic]
                await self.publisher.check_access(topics, kafka.group_id)
        self.started = True

    async def _wait_for_broker(self) -> bool:
        """Until a broker answers (True) or a signal comes (False). Readiness says so meanwhile
        (``broker_reachable`` false), and the log every 30 s; a broker that answers but refuses
        the bridge (TLS, SASL) raises instead."""
        began = time.monotonic()
        told: float | None = None
        while not self.stopping.is_set():
            try:
                await reach_broker(self.settings.kafka, CONTACT_TIMEOUT_S)
            except BrokerError as exc:
                if not exc.retriable:
                    raise
                if told is None or time.monotonic() - told >= WAITING_LOG_EVERY_S:
                    told = time.monotonic()
                    log.warning(
                        "waiting for the broker (%s: %s); not ready until it answers",
                        exc.reason,
                        exc.detail,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), CONTACT_EVERY_S)
                continue
            if told is not None:
                log.info("broker reachable after %.1f s; starting", time.monotonic() - began)
            self.watch.found(True)
            return True
        return False

    async def serve(self) -> None:
        """Consume until ``stopping`` is set, then shut down gracefully."""
        tasks = [asyncio.create_task(self.watch.run())]
        poller = self.inbound.poller
        polling = asyncio.create_task(poller.run(self.stopping)) if poller is not None else None
        tasks += [polling] if polling is not None else []
        if self.tracker is not None:
            tasks.append(asyncio.create_task(self.tracker.run(self.stopping)))
        try:
            await self.outbound.consumer.run(self.stopping)
            await self._drain(polling)
        finally:
            for task in tasks:
                task.cancel()
            await self.close()

    async def _drain(self, polling: asyncio.Task[None] | None) -> None:
        """In-flight requests, the running poll and webhooks finish side by side.

        Webhooks are served for ``drain_delay_s`` more, while load balancers catch up with
        readiness. A poll stuck on a broker outage is cancelled afterwards; its watermark did
        not move.
        """
        # What follows the wait takes up to SHUTDOWN_RESERVE_S when the broker is gone (the
        # last commit, the producer's flush): the wait leaves it room (half the grace period
        # at most), so that the process exits within the grace period.
        grace_s = self.settings.processing.shutdown_grace_s
        grace_s -= min(SHUTDOWN_RESERVE_S, grace_s / 2)
        deadline = time.monotonic() + grace_s
        consumer = self.outbound.consumer
        log.info("stopping: finishing %d in-flight requests", consumer.in_flight)
        polled = asyncio.wait({polling}, timeout=grace_s) if polling else asyncio.sleep(0)
        drained, *_ = await asyncio.gather(consumer.drain(grace_s), polled, self._stop_http())
        if not drained:
            log.warning("grace period over; unfinished requests will be redelivered")
        # One grace period for everything: webhook events get what the requests left.
        left_s = max(0.0, deadline - time.monotonic())
        if not await self.inbound.delivery.drain(left_s):
            log.warning("grace period over; some webhook events were not acknowledged")
        if not await self.deliveries.drain(max(0.0, deadline - time.monotonic())):
            log.warning("grace period over; some tracked callbacks were not acknowledged")

    async def _stop_http(self) -> None:
        await asyncio.sleep(self.settings.http.drain_delay_s)
        await self.http.stop()

    async def close(self) -> None:
        """Stop every component in reverse order, whether or not it started; the consumer
        group is left on the way, and one failing stop does not keep the others running."""
        self.started = False
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.client.aclose)  # closed last
            for component in self.components:
                stack.push_async_callback(component.stop)


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
        if not await _start(bridge):
            return 1
        if not bridge.started:  # a signal while waiting for the broker
            await bridge.close()
            log.info("bridge stopped before it started")
            return 0
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


async def _start(bridge: Bridge) -> bool:
    """Start the bridge; on a failure that settings or the network explain, say so in one line
    (broker unreachable, TLS or SASL refused, port taken), stop what started, and say False."""
    try:
        await bridge.start()
    except BrokerError as exc:
        log.error("start-up failed: %s: %s", exc.reason, exc.detail or exc.what)
    except (OSError, RuntimeError) as exc:
        log.error("start-up failed: %s: %s", type(exc).__name__, exc)
    else:
        return True
    await bridge.close()
    return False
