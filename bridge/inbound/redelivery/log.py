"""Ids published in the last window, shared by every replica through one Kafka topic.

A replica that published an event writes its id to the topic; every replica reads the whole
topic at start-up and then follows it, so a Twilio retry that reaches another replica, or this
one after a restart, is recognised. Nothing is kept on local disk. The topic is created when
missing, with time retention equal to the window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bridge.aio import TaskSet
from bridge.config import KafkaSettings
from bridge.inbound.redelivery.window import RedeliveryWindow
from bridge.kafka.follower import TopicFollower
from bridge.kafka.producer import Publisher

__all__ = ["RedeliveryLog"]

log = logging.getLogger(__name__)


class RedeliveryLog:
    """The ids of the last ``window_s`` seconds, local and shared through ``topic``."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        window_s: float,
        publisher: Publisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self._window = RedeliveryWindow(window_s)
        self._publisher = publisher
        self._clock = clock
        self._follower = TopicFollower(settings, topic, self._read)
        self._sharing = TaskSet("redelivery log")

    def __len__(self) -> int:
        return len(self._window)

    def contains(self, key: str) -> bool:
        """True when ``key`` was published by any replica within the window."""
        return self._window.contains(key, self._clock())

    def add(self, key: str) -> None:
        """Remember ``key`` here at once, and tell the other replicas in the background."""
        self._window.add(key, self._clock())
        self._sharing.add(self._publisher.publish(self.topic, key.encode(), b"", []))

    async def start(self) -> None:
        """Create the topic if needed, read what it holds, then follow it in the background."""
        retention = str(int(self._window.window_s * 1000))
        await self._follower.start(1, {"cleanup.policy": "delete", "retention.ms": retention})
        log.info("dedupe: %d ids seen in the last %.0f s", len(self), self._window.window_s)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Finish telling the others what was seen (within ``grace_s``), stop following."""
        await self._sharing.wait(grace_s)
        self._sharing.cancel()
        await self._follower.stop()

    def _read(self, record: Any) -> None:
        if record.key is not None:
            self._window.add(record.key.decode(errors="replace"), record.timestamp / 1000)
