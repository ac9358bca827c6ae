"""The broker watch: every few seconds, can the producer reach a broker, and how far behind is
the consumer group. Readiness reads ``reachable``; ``twilio_bridge_consumer_lag`` shows the lag.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.kafka.consumer import RequestConsumer
from bridge.kafka.errors import BrokerError
from bridge.kafka.producer import Publisher
from bridge.observability.metrics import CONSUMER_LAG

__all__ = ["BrokerWatch"]

log = logging.getLogger(__name__)
INTERVAL_S = 5.0


class BrokerWatch:
    """Broker reachability and consumer lag, measured in a loop until cancelled."""

    def __init__(self, publisher: Publisher, consumer: RequestConsumer) -> None:
        self._publisher = publisher
        self._consumer = consumer
        self._shown: set[tuple[str, str]] = set()
        # Every Kafka client has just reached a broker when start-up completes.
        self.reachable = True

    async def run(self) -> None:
        """Measure, then sleep, until cancelled."""
        while True:
            self.reachable = await self._publisher.reachable(INTERVAL_S)
            if self.reachable:
                await self._measure_lag()
            await asyncio.sleep(INTERVAL_S)

    async def _measure_lag(self) -> None:
        try:
            lag = await self._consumer.lag()
        except BrokerError as exc:
            log.warning("consumer lag not measured (%s)", exc.reason)
            return
        if lag is None:
            return
        labels = {(tp.topic, str(tp.partition)): n for tp, n in lag.items()}
        for gone in self._shown - labels.keys():
            CONSUMER_LAG.remove(*gone)
        for label, n in labels.items():
            CONSUMER_LAG.labels(*label).set(n)
        self._shown = set(labels)
