"""Publish a webhook's events and say whether Kafka took all of them in time.

A publish that outlives the deadline is not abandoned: aiokafka would deliver it anyway once
the broker is back, so it keeps running, and a retry of the same delivery (same event ids)
waits for it instead of publishing a second copy. Ids that were published go into the shared
``RedeliveryLog``, so a retry after that is acknowledged without publishing again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from bridge.aio import TaskSet
from bridge.contract.events import CloudEvent
from bridge.inbound.redelivery.log import RedeliveryLog
from bridge.kafka.producer import Publisher
from bridge.observability.metrics import EVENTS_PUBLISHED

__all__ = ["EventDelivery"]

log = logging.getLogger(__name__)
# Told (topic, event, partition, offset) of each event Kafka acknowledged.
OnPublished = Callable[[str, CloudEvent, int, int], None]


class EventDelivery:
    """Publishes events once each and waits for Kafka's acknowledgement up to a deadline."""

    def __init__(
        self,
        publisher: Publisher,
        seen: RedeliveryLog | None,
        timeout_s: float,
        on_published: OnPublished | None = None,
    ) -> None:
        self._publisher = publisher
        self._seen = seen
        self._timeout_s = timeout_s
        self._on_published = on_published
        self._pending = TaskSet("event delivery")  # by event id

    @property
    def pending(self) -> int:
        """Publishes not acknowledged yet."""
        return len(self._pending)

    def seen(self, event: CloudEvent) -> bool:
        """True when this event was already published (by any replica, within the window)."""
        return self._seen is not None and self._seen.contains(event.id)

    async def deliver(self, events: Sequence[tuple[str, CloudEvent]]) -> bool:
        """Publish each (topic, event) not seen before; True once Kafka acknowledged them all."""
        tasks = [
            self._pending.get(event.id) or self._pending.add(self._publish(topic, event), event.id)
            for topic, event in events
            if not self.seen(event)
        ]
        if not tasks:
            return True
        done, _ = await asyncio.wait(tasks, timeout=self._timeout_s)
        return len(done) == len(tasks) and all(
            not task.cancelled() and task.exception() is None for task in done
        )

    async def drain(self, grace_s: float) -> bool:
        """Wait for publishes still running (at shutdown); False if some did not finish."""
        finished = await self._pending.wait(grace_s)
        self._pending.cancel()
        return finished

    async def _publish(self, topic: str, event: CloudEvent) -> None:
        partition, offset = await self._publisher.publish(
            topic, event.key, event.value(), event.headers()
        )
        EVENTS_PUBLISHED.labels(topic).inc()
        if self._on_published is not None:
            self._on_published(topic, event, partition, offset)
        if self._seen is not None:
            self._seen.add(event.id)
