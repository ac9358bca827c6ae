"""The instances every replica shares: a compacted topic, read at start and followed after.

Like Kafka Connect's config topic: one partition, so every replica applies the same changes in
the same order; the latest record per name is the instance, a tombstone deletes it. A change is
acknowledged by Kafka, then read back here before the API answers, so the answer reflects what
every replica will see; the audit event follows. Secrets are sealed in the records.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from bridge.config import AdminSettings, KafkaSettings, TwilioSettings, encryption_key
from bridge.contract.envelopes import utc_timestamp
from bridge.instances.accounts import account_of
from bridge.instances.changes import Change
from bridge.instances.model import Instance
from bridge.instances.records import (
    Actor,
    RecordError,
    audit_event,
    decode_instance,
    encode_instance,
)
from bridge.instances.sealing import Sealer
from bridge.kafka.admin import create_topic
from bridge.kafka.follower import TopicFollower
from bridge.kafka.producer import Publisher
from bridge.observability.metrics import INSTANCE_CHANGES, INSTANCES
from bridge.twilio.accounts import Accounts

__all__ = ["InstanceLog"]

log = logging.getLogger(__name__)


class InstanceLog:
    """This replica's view of the instances topic, kept in ``accounts``, and writes to it."""

    def __init__(
        self,
        kafka: KafkaSettings,
        admin: AdminSettings,
        twilio: TwilioSettings,
        accounts: Accounts,
        publisher: Publisher,
    ) -> None:
        assert admin.encryption_key is not None  # AdminSettings demands it when enabled
        self._kafka = kafka
        self._admin = admin
        self._twilio = twilio
        self._accounts = accounts
        self._publisher = publisher
        self._sealer = Sealer(encryption_key(admin.encryption_key))
        self._instances: dict[str, Instance] = {}
        self._unreadable: dict[str, str] = {}  # name -> why its record does not open here
        self._follower = TopicFollower(kafka, admin.topic, self._read)
        self._writing = asyncio.Lock()
        self._source = f"twilio-kafka-bridge/{kafka.client_id}"

    def get(self, name: str) -> Instance | None:
        """The instance named ``name`` as this replica last read it."""
        return self._instances.get(name)

    def all(self) -> list[Instance]:
        """Every instance, by name."""
        return [self._instances[name] for name in sorted(self._instances)]

    def unreadable(self) -> dict[str, str]:
        """Instances whose records this replica cannot open, and why (e.g. another key)."""
        return dict(self._unreadable)

    async def start(self) -> None:
        """Create the topics if needed and read every instance before serving."""
        await create_topic(self._kafka, self._admin.audit_topic)
        await self._follower.start(1, {"cleanup.policy": "compact"})
        log.info(
            "instances: %d read from %s (%d unreadable)",
            len(self._instances),
            self._admin.topic,
            len(self._unreadable),
        )

    async def stop(self) -> None:
        """Stop following."""
        await self._follower.stop()

    async def latest(self) -> None:
        """Read what every replica has written so far, within the write timeout."""
        await asyncio.wait_for(self._follower.catch_up(), self._admin.write_timeout_s)

    def lock(self) -> asyncio.Lock:
        """Held from reading the current state to writing the change: one change at a time."""
        return self._writing

    async def write(self, change: Change, actor: Actor) -> None:
        """Publish the change and its audit event, then read the change back."""
        value = encode_instance(change.after, self._sealer) if change.after is not None else None
        timeout = self._admin.write_timeout_s
        await asyncio.wait_for(
            self._publisher.publish(self._admin.topic, change.name.encode(), value, []), timeout
        )
        # Audited as soon as it is stored: a read-back that times out must not leave a stored
        # change out of the audit trail.
        event = audit_event(
            change.action, change.name, change.before, change.after, actor, self._source
        )
        await asyncio.wait_for(
            self._publisher.publish(
                self._admin.audit_topic, event.key, event.value(), event.headers()
            ),
            timeout,
        )
        await self.latest()
        INSTANCE_CHANGES.labels(change.action).inc()
        log.info("instance %s %s (revision %s)", change.name, change.action, _revision(change))

    def _read(self, record: Any) -> None:
        if record.key is None:
            return
        name = record.key.decode(errors="replace")
        if record.value is None:
            self._instances.pop(name, None)
            self._unreadable.pop(name, None)
            deleted = datetime.fromtimestamp(record.timestamp / 1000, UTC)
            self._accounts.remove(name, utc_timestamp(deleted))
        else:
            try:
                instance = decode_instance(record.key, record.value, self._sealer)
            except RecordError as exc:
                # Not fatal: the other instances still work; the operator sees which and why.
                log.error("instance %s cannot be used on this replica: %s", name, exc)
                self._unreadable[name] = str(exc)
                self._instances.pop(name, None)
                self._accounts.unusable(name, str(exc))
            else:
                self._instances[name] = instance
                self._unreadable.pop(name, None)
                self._accounts.put(account_of(instance, self._twilio))
        INSTANCES.set(len(self._instances))


def _revision(change: Change) -> str:
    return str(change.after.revision) if change.after is not None else "-"
