"""Writing to the state topic: a tracked send before its create call, then what is learnt.

Used by both flows: outbound records the send (acknowledged before the call goes to Twilio)
and Twilio's answer; inbound hands over each status callback that names a token. Every record
goes to the token's partition, whose owner (``DeliveryTracker``) applies them in order.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from typing import Any

from bridge.aio import TaskSet
from bridge.config import TrackingSettings
from bridge.kafka.producer import Publisher
from bridge.tracking.book import EVENT, SEND, event_key
from bridge.tracking.correlation import partition_of
from bridge.tracking.send import Event, TrackedSend

__all__ = ["DeliveryLog"]


class DeliveryLog:
    """The writing side of the state topic."""

    def __init__(self, settings: TrackingSettings, publisher: Publisher) -> None:
        self._settings = settings
        self._publisher = publisher
        self._handing_over = TaskSet("tracking callbacks")

    async def begin(self, send: TrackedSend) -> None:
        """Record ``send``; returns once Kafka acknowledged it (raises ``BrokerError`` only
        when the topic cannot be listed)."""
        await self._publisher.publish(
            self._settings.state_topic,
            send.token.encode(),
            send.to_json(),
            [("kind", SEND)],
            partition=partition_of(send.token, self._settings.partitions),
        )

    async def learnt(self, token: str, event: Event) -> None:
        """Record ``event`` about the send of ``token``; returns once Kafka acknowledged it."""
        await self._publisher.publish(
            self._settings.state_topic,
            event_key(token, secrets.token_hex(6)),
            event.to_json(),
            [("kind", EVENT)],
            partition=partition_of(token, self._settings.partitions),
        )

    async def hand_over(self, token: str, params: Mapping[str, Any], timeout_s: float) -> bool:
        """Record a status callback for the send of ``token``; True once Kafka acknowledged it
        within ``timeout_s`` (the write goes on after that: Twilio's retry is judged a
        duplicate by the owner)."""
        account_sid = params.get("AccountSid")
        event = Event(
            "callback",
            account_sid=account_sid if isinstance(account_sid, str) else None,
            params=params,
        )
        task = self._handing_over.add(self.learnt(token, event))
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        return bool(done) and not task.cancelled() and task.exception() is None

    async def drain(self, grace_s: float) -> bool:
        """Wait for callbacks still being written (at shutdown); False if some did not finish."""
        finished = await self._handing_over.wait(grace_s)
        self._handing_over.cancel()
        return finished
