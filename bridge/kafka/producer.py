"""Publish records and wait for the broker's acknowledgement, retrying until it comes.

A reply that is not acknowledged must not let its request's offset be committed, so a
publish is retried with backoff for as long as it takes (a broker outage stalls progress, it
never drops a reply); shutdown cancels the wait and leaves the offset uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.client import CoordinationType
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.protocol.metadata import MetadataRequest

from bridge.config import KafkaSettings
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.errors import BrokerError, kafka_errors
from bridge.kafka.refusals import group_refusal, idempotence_refusal, topic_refusals
from bridge.kafka.retry import until_taken

__all__ = ["UNREACHABLE_FLUSH_S", "Publisher", "RecordTooLarge"]

log = logging.getLogger(__name__)
Headers = list[tuple[str, bytes]]
# How long stop() waits for a flush while the broker was last found unreachable.
UNREACHABLE_FLUSH_S = 1.0


class RecordTooLarge(Exception):
    """The record exceeds the producer's maximum request size."""


class Publisher:
    """A started aiokafka producer with acknowledged, retried sends."""

    def __init__(
        self, settings: KafkaSettings, *, max_backoff_s: float = 5.0, linger_ms: int = 2
    ) -> None:
        self._settings = settings
        self._max_backoff_s = max_backoff_s
        self._listed: dict[str, asyncio.Future[None]] = {}
        # What the last look at the producer's connections found (see ``connected``).
        self._connected = True
        self._producer = AIOKafkaProducer(
            **connection_kwargs(settings),
            acks="all" if settings.acks == "all" else 1,
            enable_idempotence=settings.idempotent_producer,
            max_request_size=settings.max_request_size,
            max_batch_size=settings.batch_size,
            linger_ms=linger_ms,
        )

    async def _list(self, topic: str) -> None:
        """Put ``topic`` in the client's metadata list before its first record.

        aiokafka fetches every topic's metadata until the first send to a topic it does not
        know yet; from then on it fetches only the topics in its list, and a topic it knew
        from the first fetch drops out of the cluster view: a batch waiting for that topic
        then waits forever (seen with Tansu when a new topic was created at start-up).
        """
        with kafka_errors(f"listing topic {topic}"):
            await self._producer.client.add_topic(topic)

    @property
    def max_record_bytes(self) -> int:
        """The largest value that can be published, leaving room for key and headers."""
        return self._settings.max_request_size - 16_384

    async def start(self) -> None:
        """Connect to the broker; raises ``BrokerError`` when it cannot.

        With the idempotent producer the broker is asked for a producer id once connected; a
        refusal says which setting to change, and why, rather than turning it off.
        """
        try:
            with kafka_errors("starting the producer"):
                await self._producer.start()
        except BrokerError as exc:
            # Connected (the cluster is known) and refused: InitProducerId, the only request
            # of start() after the connection, and only with idempotence on.
            if exc.retriable or not self._settings.idempotent_producer:
                raise
            if not self._producer.client.cluster.brokers():
                raise
            detail = idempotence_refusal(exc.reason)
            raise BrokerError(exc.what, exc.reason, detail, retriable=False) from exc

    async def check_access(self, topics: Sequence[str], group: str) -> None:
        """Ask the broker for ``topics`` (creating them where it creates topics on first use)
        and for ``group``'s coordinator, as the clients will; raises ``BrokerError`` naming
        every topic or the group it refuses, with what to change. Retriable errors pass."""
        client = self._producer.client
        node = client.get_random_node()
        with kafka_errors("looking up the topics"):
            answer = await client.send(node, MetadataRequest(list(topics), True))
        refused = topic_refusals((name, code) for code, name, *_ in answer.topics)
        if refused is not None:
            raise BrokerError("looking up the topics", *refused, retriable=False)
        try:
            with kafka_errors(f"looking up the coordinator of group {group}"):
                await client.coordinator_lookup(CoordinationType.GROUP, group)
        except BrokerError as exc:
            if (detail := group_refusal(group, exc.reason)) is None:
                return  # a coordinator not elected yet: the consumer waits for it
            raise BrokerError(exc.what, exc.reason, detail, retriable=False) from exc

    async def connected(self, timeout_s: float) -> bool:
        """True when the producer holds, or opens within ``timeout_s``, a connection to a broker
        of its cluster; never raises.

        A broker that died closes its connections, so this tells within one call; one that
        hangs keeps them open, which only ``reachable``'s request notices.
        """
        client = self._producer.client
        for broker in client.cluster.brokers():
            try:
                with kafka_errors(f"connecting to broker {broker.nodeId}"):
                    ready = await asyncio.wait_for(client.ready(broker.nodeId), timeout_s)
            except (BrokerError, OSError, TimeoutError):
                continue
            if ready:
                self._connected = True
                return True
        self._connected = False
        return False

    async def reachable(self, timeout_s: float) -> bool:
        """True when a broker answers a metadata request within ``timeout_s``; never raises."""
        try:
            with kafka_errors("fetching metadata"):
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except (BrokerError, OSError, TimeoutError):
            return False
        return True

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush and disconnect, giving up after ``timeout_s`` (1 s when the broker was last
        found unreachable: nothing would be acknowledged anyway).

        Giving up loses nothing: whatever waits on an acknowledgement that never came was never
        counted as done (its offset is not committed, its webhook was not answered 2xx).
        """
        timeout_s = timeout_s if self._connected else min(timeout_s, UNREACHABLE_FLUSH_S)
        try:
            with kafka_errors("stopping the producer"):
                await asyncio.wait_for(self._producer.stop(), timeout_s)
        except TimeoutError:
            log.warning(
                "producer did not flush within %.0f s; unacknowledged records dropped", timeout_s
            )

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Send one record (to ``partition``, else the key's; ``None`` is a tombstone); its
        (partition, offset) once acknowledged.

        Retried until the broker acknowledges it; raises ``RecordTooLarge`` when the record is
        too large to send, and ``BrokerError`` only when the client cannot list the topic.
        """
        listed = self._listed.get(topic)
        if listed is None:
            listed = self._listed[topic] = asyncio.ensure_future(self._list(topic))
        if not listed.done():
            # Every record sent meanwhile waits for the same listing: their order is kept.
            await asyncio.shield(listed)
        what = f"publish to {topic}"
        return await until_taken(
            lambda: self._send(what, topic, key, value, headers, partition),
            what,
            first_s=0.1,
            max_s=self._max_backoff_s,
        )

    async def _send(
        self,
        what: str,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None,
    ) -> tuple[int, int]:
        with kafka_errors(what):
            try:
                sent = await self._producer.send_and_wait(
                    topic, value, key=key, headers=headers, partition=partition
                )
            except MessageSizeTooLargeError:
                raise RecordTooLarge(
                    f"{len(value or b'')} bytes exceed the producer limit"
                ) from None
        return sent.partition, sent.offset
