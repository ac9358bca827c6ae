"""The message poller: lists Messages (and Calls) of the accounts that poll (credentials marked
``poll``, instances set to polling) and publishes each new state as a CloudEvent, on the
webhooks' topics.

Who polls what is decided by Kafka: each credential's state record lives in one partition of
a compacted state topic, and the replicas share that topic as one consumer group, so exactly
one replica owns (and polls) each credential at a time. A new owner reads the partition from
the start to get the watermark, so a restart or a rebalance neither replays history nor skips
anything; the seen-ids window recognises states published just before the hand-over.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.config import KafkaSettings, PollerSettings, WebhookSettings
from bridge.contract.envelopes import BasicRequest
from bridge.contract.errors import BridgeError
from bridge.contract.events import CloudEvent, with_trace
from bridge.inbound.delivery import EventDelivery
from bridge.inbound.polling.state import PollState, call_event, message_event, parse_twilio_time
from bridge.kafka.errors import BrokerError
from bridge.kafka.ownership import OwnedPartitions
from bridge.kafka.producer import Publisher
from bridge.kafka.retry import pause
from bridge.observability.metrics import POLLER_ITEMS, POLLER_RUNS
from bridge.observability.tracing import tracer
from bridge.twilio.accounts import Account, Accounts, event_topic
from bridge.twilio.calls import CallBuilder
from bridge.twilio.client import TwilioClient
from bridge.twilio.pages import Page, PageFailed, page_of, sid_of, walk
from bridge.twilio.responses import parse_body

__all__ = ["Poller"]

log = logging.getLogger(__name__)

# (operation, date filter, item converter) for each kind of resource polled.
_KINDS: dict[str, tuple[str, str, Callable[..., tuple[str, CloudEvent]]]] = {
    "messages": ("ListMessage", "DateSent>", message_event),
    "calls": ("ListCall", "StartTime>", call_event),
}


class Poller:
    """Polls the credentials this replica owns, every ``refresh_interval_s``."""

    def __init__(
        self,
        settings: PollerSettings,
        kafka: KafkaSettings,
        webhook: WebhookSettings,
        accounts: Accounts,
        builder: CallBuilder,
        client: TwilioClient,
        publisher: Publisher,
        delivery: EventDelivery,
    ) -> None:
        self._settings = settings
        self._webhook = webhook
        self._accounts = accounts
        self._builder = builder
        self._client = client
        self._publisher = publisher
        self._delivery = delivery
        self._states: dict[str, PollState] = {}
        self._last_poll: dict[str, float] = {}
        self._owned = OwnedPartitions(
            kafka, settings.state_topic, f"{kafka.group_id}.poller", owner="poller"
        )

    def partition_of(self, credential: str) -> int:
        """The state partition (and so the owner) of a credential: stable across restarts."""
        return zlib.crc32(credential.encode()) % self._settings.partitions

    async def start(self) -> None:
        """Create the state topic if needed and join the pollers' group."""
        await self._owned.start(self._settings.partitions, {"cleanup.policy": "compact"})

    async def stop(self) -> None:
        """Leave the group."""
        await self._owned.stop()

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the state topic and poll owned credentials until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                records = await self._owned.fetch(timeout_ms=500)
            except BrokerError as exc:
                await pause("poller: reading state", exc, 1.0)
                continue
            for record in records:
                self._remember(record.key, record.value)
            for account in await self._due():
                if self._accounts.get(account.name) is account:  # not changed meanwhile
                    # One span per poll: the list calls are its children, its events carry it.
                    with tracer().internal("poll", {"twilio.operation": "poll"}):
                        await self._poll(account)

    def _remember(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        try:
            self._states[key.decode()] = PollState.from_json(value)
        except (ValueError, UnicodeDecodeError):
            log.warning("poller: ignoring a record that is not a state in the state topic")

    async def _due(self) -> list[Account]:
        """Owned polling accounts whose partition was read to its end and whose turn has come."""
        owned = self._owned.owned()
        now = time.monotonic()
        due = []
        # A copy: instances may come and go while a poll awaits.
        for account in [a for a in self._accounts if a.polls]:
            partition = self.partition_of(account.name)
            last = self._last_poll.get(account.name, float("-inf"))
            interval = account.refresh_interval_s or self._settings.refresh_interval_s
            if (
                partition in owned
                and now - last >= interval
                and await self._owned.caught_up(partition)
            ):
                due.append(account)
        return due

    async def _poll(self, account: Account) -> None:
        credential = account.name
        self._last_poll[credential] = time.monotonic()
        now = datetime.now(UTC)
        start = self._settings.start_at or now
        state = self._states.get(credential) or PollState(start, start)
        resources: list[dict[str, Any]] = []
        events: list[tuple[str, CloudEvent]] = []
        for kind in account.resources:
            found = await self._list(credential, kind, state)
            if found is None:
                POLLER_RUNS.labels("twilio_failed").inc()
                return  # Twilio failed: try again next time, from the same watermark
            POLLER_ITEMS.labels(kind).inc(len(found))
            convert = _KINDS[kind][2]
            for resource in found:
                family, event = convert(resource, now)
                topic = event_topic(self._webhook, family, (account,))
                events.append((topic, event))
            resources += found
        trace = tracer().current().headers()
        events = [(topic, with_trace(event, trace)) for topic, event in events]
        if events and not await self._delivery.deliver(events):
            log.warning("poller %s: Kafka did not acknowledge in time; next time", credential)
            POLLER_RUNS.labels("kafka_timeout").inc()
            return
        advanced = state.advanced(resources)
        if advanced != self._states.get(credential):
            self._states[credential] = advanced
            # Into the partition that decides ownership, not the one the key hashes to: the
            # next owner reads only its own partitions.
            await self._publisher.publish(
                self._settings.state_topic,
                credential.encode(),
                advanced.to_json(),
                [],
                partition=self.partition_of(credential),
            )
        POLLER_RUNS.labels("ok").inc()
        log.info("poller %s: %d resources, %d events", credential, len(resources), len(events))

    async def _list(
        self, credential: str, kind: str, state: PollState
    ) -> list[dict[str, Any]] | None:
        """Every resource of ``kind`` since the state's query start, page by page."""
        operation, date_filter, _ = _KINDS[kind]
        since = state.query_from(timedelta(seconds=self._settings.lookback_s))
        request = BasicRequest(
            id=f"poll-{credential}",
            mode="basic",
            operation=operation,
            credential=credential,
            query={date_filter: since.isoformat(), "PageSize": self._settings.page_size},
        )

        async def fetch(uri: str | None, number: int) -> Page | PageFailed:
            paged = request if uri is None else request.model_copy(update={"next_page_uri": uri})
            try:
                result = await self._client.send(self._builder.build(paged))
            except BridgeError as exc:
                log.warning("poller %s: %s failed: %s", credential, operation, exc.message)
                return PageFailed(exc.message)
            page = page_of(parse_body(result), len(result.content)) if result.status < 400 else None
            if page is None:
                log.warning("poller %s: %s answered %s", credential, operation, result.status)
                return PageFailed(f"HTTP {result.status}")
            return page

        first = await fetch(None, 1)
        if isinstance(first, PageFailed):
            return None
        # A page with nothing new means the server is repeating itself: the walk stops there.
        walked = await walk(first, fetch, max_pages=self._settings.max_pages, identity=sid_of)
        if walked.failed is not None:
            return None
        return [r for r in walked.items if _updated_since(r, state.since)]


def _updated_since(resource: Mapping[str, Any], since: datetime) -> bool:
    updated = parse_twilio_time(resource.get("date_updated"))
    return updated is None or updated >= since
