"""The broker watch: can the producer reach a broker, and how far behind is the consumer group.

Readiness reads ``reachable``, and so does ``twilio_bridge_broker_reachable``. Twice a second
the watch looks at the producer's own connections: a broker that died closed them, and one
that is back accepts a new one, so readiness follows a crash or a restart within about a
second. A broker that hangs keeps its connections open; a metadata request every 5 s (and
every look while unreachable) catches that. The lag (``twilio_bridge_consumer_lag``) is
measured every 5 s on its own, so a slow answer never holds readiness back.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bridge.kafka.consumer import RequestConsumer
from bridge.kafka.errors import BrokerError
from bridge.kafka.producer import Publisher
from bridge.observability.metrics import BROKER_REACHABLE, CONSUMER_LAG

__all__ = ["BrokerWatch"]

log = logging.getLogger(__name__)
LOOK_S = 0.5  # between looks at the connections
CONNECT_TIMEOUT_S = 1.0
REQUEST_EVERY_S = 5.0  # between metadata requests while reachable
REQUEST_TIMEOUT_S = 5.0
LAG_EVERY_S = 5.0


class BrokerWatch:
    """Broker reachability and consumer lag, measured in loops until cancelled."""

    def __init__(self, publisher: Publisher, consumer: RequestConsumer) -> None:
        self._publisher = publisher
        self._consumer = consumer
        self._shown: set[tuple[str, str]] = set()
        self._asked = time.monotonic()
        self._lost_at = 0.0
        self.reachable = False
        BROKER_REACHABLE.set(0)

    def found(self, reachable: bool) -> None:
        """Record what a look found; the transitions are logged."""
        now = time.monotonic()
        if self.reachable and not reachable:
            self._lost_at = now
            log.warning("broker unreachable: not ready until it is back")
        elif reachable and not self.reachable and self._lost_at:
            log.info("broker reachable again after %.1f s", now - self._lost_at)
        self.reachable = reachable
        BROKER_REACHABLE.set(1 if reachable else 0)

    async def run(self) -> None:
        """Follow the broker and measure the lag, until cancelled."""
        await asyncio.gather(self._follow(), self._measure_lag())

    async def _follow(self) -> None:
        while True:
            reachable = await self._publisher.connected(CONNECT_TIMEOUT_S)
            due = time.monotonic() - self._asked >= REQUEST_EVERY_S
            if reachable and (due or not self.reachable):
                reachable = await self._publisher.reachable(REQUEST_TIMEOUT_S)
                self._asked = time.monotonic()
            self.found(reachable)
            await asyncio.sleep(LOOK_S)

    async def _measure_lag(self) -> None:
        while True:
            await asyncio.sleep(LAG_EVERY_S)
            if self.reachable:
                await self._show_lag()

    async def _show_lag(self) -> None:
        try:
            lag = await self._consumer.lag()
        except BrokerError as exc:
            log.warning("consumer lag not measured (%s)", exc.reason)
            return
        labels = {(tp.topic, str(tp.partition)): n for tp, n in lag.items()}
        for gone in self._shown - labels.keys():
            CONSUMER_LAG.remove(*gone)
        for label, n in labels.items():
            CONSUMER_LAG.labels(*label).set(n)
        self._shown = set(labels)
