"""Webhooks answered with TwiML from a Kafka service, within Twilio's deadline.

How an answer reaches the replica holding the webhook: every replica reads every new record of
the TwiML topic (``TopicTail``: no consumer group, all partitions, added ones too) and keeps
the event ids it holds webhooks for; an answer for an id held elsewhere is not its business.
No partition has to be owned, so replicas join and leave without a rebalance or a lost answer,
and a service answers with a plain keyed record to the one topic. The cost: every replica
reads every answer (a few hundred bytes each).

The id is held before the event is published, since a service may read the event and answer
before the producer hears Kafka's acknowledgement; the deadline is armed only once the event is
acknowledged, and counts from the webhook's arrival, as Twilio's 15 s do. Without the
acknowledgement the webhook gets 503, as every other, and nothing is awaited.

Each id settles once, the first answer winning: the service's TwiML, or the fallback for a bad
answer or at the deadline. Twilio's retries of the webhook (same id) get what it settled to for
``KEEP_S``, without a second event; answers read for ids held by other replicas are kept as
long, for a retry the load balancer sends here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.config import KafkaSettings, TwimlSettings
from bridge.contract.envelopes import ErrorRecord, SourceRef
from bridge.contract.events import CloudEvent
from bridge.contract.twiml import TwimlInvalid, awaiting, check_twiml
from bridge.inbound.delivery import EventDelivery
from bridge.inbound.twiml.failures import invalid_answer, no_answer, source_of
from bridge.inbound.twiml.settled import Settled, SettledWindow
from bridge.kafka.producer import Publisher
from bridge.kafka.records import Record
from bridge.kafka.tail import TopicTail
from bridge.observability.metrics import (
    TWIML_ANSWER_SECONDS,
    TWIML_ANSWERS,
    TWIML_DROPPED,
    TWIML_WAITING,
    labelled,
)
from bridge.observability.tracing import tracer

__all__ = ["KEEP_S", "TwimlAnswers"]

log = logging.getLogger(__name__)
# Twilio retries a webhook after its own 15 s timeout or a failed connection, a few times.
KEEP_S = 120.0
# An id published by another replica reaches this one's redelivery window a moment after the
# answer may: judge an answer "unknown" only this long after reading it.
UNKNOWN_AFTER_S = 5.0


class _Call:
    """An event id this replica holds webhooks for, until its answer or its deadline."""

    __slots__ = ("event", "family", "future", "holders", "published", "published_at", "timer")

    def __init__(self, family: str, event: CloudEvent, future: asyncio.Future[Settled]) -> None:
        self.family = family
        self.event = event
        self.future = future
        self.holders = 0
        # Where this replica published the event, and when Kafka acknowledged it (loop time).
        self.published: SourceRef | None = None
        self.published_at: float | None = None
        self.timer: asyncio.TimerHandle | None = None


class TwimlAnswers:
    """Publishes awaited events and answers their webhooks with the TwiML read back."""

    def __init__(
        self,
        settings: TwimlSettings,
        kafka: KafkaSettings,
        publisher: Publisher,
        *,
        published: Callable[[str], bool] | None,
    ) -> None:
        """``published`` says whether any replica published an event id recently (the
        webhooks' redelivery window); without it, no answer is counted ``unknown``."""
        self.families = frozenset(settings.families)
        self._settings = settings
        self._publisher = publisher
        self._error_topic = kafka.error_topic
        self._published = published
        # Room for the base64 of a bad answer in its error record.
        self._raw_limit = max(0, min(settings.max_bytes, publisher.max_record_bytes * 3 // 4))
        self._tail = TopicTail(kafka, settings.topic, self.read)
        self._waiting: dict[str, _Call] = {}
        self._settled = SettledWindow(KEEP_S)
        self._recording: set[asyncio.Future[Any]] = set()
        TWIML_WAITING.set_function(lambda: len(self._waiting))

    async def start(self) -> None:
        """Create the TwiML topic if missing and read its new records from now on."""
        await self._tail.start()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop reading; finish recording failures (within ``grace_s``)."""
        for call in self._waiting.values():
            if call.timer is not None:
                call.timer.cancel()
        if self._recording:
            await asyncio.wait(self._recording, timeout=grace_s)
        for task in self._recording:
            task.cancel()
        await self._tail.stop()

    async def respond(
        self, family: str, topic: str, event: CloudEvent, delivery: EventDelivery
    ) -> str | None:
        """Publish ``event`` to ``topic`` (once per id) and wait for its answer: the TwiML for
        Twilio, or None when Kafka did not acknowledge the event (the webhook gets 503)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._settings.timeout_s
        settled = self._settled.get(event.id, started)
        if settled is None:  # else a retry of a webhook already answered: nothing to publish
            call = self._waiting.get(event.id) or self._hold(family, event)
            settled = await self._wait(call, topic, delivery, deadline)
            if settled is None:
                return None
        span = tracer().current()  # the webhook's
        if span.recording:
            waited_ms = round((loop.time() - started) * 1000, 3)
            span.event(f"twiml answer: {settled.outcome}", {"twilio.wait_ms": waited_ms})
        labelled(TWIML_ANSWERS, family, settled.outcome).inc()
        return settled.twiml or self._settings.fallback[family]

    def published(self, topic: str, event: CloudEvent, partition: int, offset: int) -> None:
        """``EventDelivery``'s word that Kafka acknowledged ``event`` at (partition, offset)."""
        call = self._waiting.get(event.id)
        if call is not None and call.published is None:
            call.published = source_of(Record(topic, partition, offset, event.key, None))
            call.published_at = asyncio.get_running_loop().time()

    def _hold(self, family: str, event: CloudEvent) -> _Call:
        settings = self._settings
        deadline = datetime.now(UTC) + timedelta(seconds=settings.timeout_s)
        future = asyncio.get_running_loop().create_future()
        call = _Call(family, awaiting(event, settings.topic, deadline), future)
        self._waiting[event.id] = call
        return call

    async def _wait(
        self, call: _Call, topic: str, delivery: EventDelivery, deadline: float
    ) -> Settled | None:
        call.holders += 1
        try:
            # A retry joining a held id publishes only when the first did not get through.
            if call.timer is None and not await delivery.deliver([(topic, call.event)]):
                return None
            if call.timer is None and not call.future.done():
                call.timer = asyncio.get_running_loop().call_at(deadline, self._expire, call)
            # Shielded: a webhook that goes away must not take the answer from its retries.
            return await asyncio.shield(call.future)
        finally:
            call.holders -= 1
            if call.holders == 0 and not call.future.done():
                # Every webhook for it went away (a 503, a closed connection): an answer that
                # comes now is kept like one read for another replica.
                self._waiting.pop(call.event.id, None)
                if call.timer is not None:
                    call.timer.cancel()

    def _expire(self, call: _Call) -> None:
        if call.future.done():
            return
        log.warning(
            "no TwiML answer for %s event %s within %g s; answering the fallback",
            call.family,
            call.event.id,
            self._settings.timeout_s,
        )
        if call.published is not None:
            timeout_s = self._settings.timeout_s
            self._record(no_answer(call.event.id, call.family, call.published, timeout_s))
        self._settle(call, Settled("timeout", None, here=True))

    def _settle(self, call: _Call, settled: Settled) -> None:
        if call.timer is not None:
            call.timer.cancel()
        self._waiting.pop(call.event.id, None)
        self._settled.settle(call.event.id, settled, asyncio.get_running_loop().time())
        call.future.set_result(settled)

    def read(self, record: Record) -> None:
        """One record of the TwiML topic: an answer for a held id, or for someone else's."""
        event_id = (record.key or b"").decode(errors="replace")
        call = self._waiting.get(event_id)
        if call is not None:
            self._answer(call, record)
            return
        now = asyncio.get_running_loop().time()
        known = self._settled.get(event_id, now)
        if known is None:
            settled, _ = self._judge(record, here=False)
            self._settled.settle(event_id, settled, now)
            if self._published is not None:
                asyncio.get_running_loop().call_later(UNKNOWN_AFTER_S, self._unknown, event_id)
        elif known.here:
            TWIML_DROPPED.labels("late" if known.outcome == "timeout" else "repeated").inc()

    def _answer(self, call: _Call, record: Record) -> None:
        settled, problem = self._judge(record, here=True)
        if problem:
            log.warning(
                "the TwiML answer for %s event %s cannot be used (%s); answering the fallback",
                call.family,
                call.event.id,
                problem,
            )
            if call.published is not None:
                failure = invalid_answer(
                    call.event.id, call.family, record, problem, self._raw_limit
                )
                self._record(failure)
        if call.published_at is not None:
            waited = asyncio.get_running_loop().time() - call.published_at
            labelled(TWIML_ANSWER_SECONDS, call.family).observe(waited)
        self._settle(call, settled)

    def _judge(self, record: Record, *, here: bool) -> tuple[Settled, str]:
        """What an answer settles its id to, and why it cannot be used ("" when it can)."""
        try:
            twiml = check_twiml(record.value or b"", self._settings.max_bytes)
        except TwimlInvalid as exc:
            return Settled("invalid", None, here), str(exc)
        return Settled("answered", twiml, here), ""

    def _unknown(self, event_id: str) -> None:
        """Count an answer whose id no replica published within the redelivery window."""
        if self._published is not None and not self._published(event_id):
            TWIML_DROPPED.labels("unknown").inc()

    def _record(self, failure: ErrorRecord) -> None:
        """Publish a failure to the error topic in the background: Twilio's answer is not
        held back for it."""
        event_id = (failure.id or "").encode()
        headers = [("id", event_id), ("kind", failure.error.kind.encode())]
        value = failure.model_dump_json().encode()
        task = asyncio.ensure_future(
            self._publisher.publish(self._error_topic, event_id, value, headers)
        )
        self._recording.add(task)
        task.add_done_callback(self._recorded)

    def _recorded(self, task: asyncio.Future[Any]) -> None:
        self._recording.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a TwiML failure could not be recorded: %s", type(task.exception()).__name__)
