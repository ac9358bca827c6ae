"""One consumed record, start to end: process it, publish its outcome, count and log it.

The consumer calls ``RequestHandler`` for every record and commits the offset once it returns,
so it returns only when Kafka acknowledged everything the outcome needs: the reply, the error
record and the idempotency log's answer. It never raises for a bad record: an outcome the broker
refuses outright (an oversized key, say) still ends in a minimal error record, because a stuck
partition would be worse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from bridge.contract.envelopes import ErrorInfo, Reply
from bridge.kafka.producer import Publisher
from bridge.kafka.records import Record
from bridge.observability.metrics import ERRORS, REPLY_PUBLISH_SECONDS, REQUESTS, labelled
from bridge.observability.tracing import NOTABLE_WAIT_MS, AttributeValue, tracer
from bridge.outbound.processor import Outcome, Processor
from bridge.outbound.replies import error_record, error_record_bytes, reply_bytes

__all__ = ["RequestHandler"]

Headers = tuple[tuple[str, bytes], ...]

log = logging.getLogger(__name__)
# Kafka header values are bytes of any length, but an id is at most 256 characters.
_MAX_ID_HEADER = 256


class RequestHandler:
    """Processes records and publishes each outcome on the reply and error topics."""

    def __init__(
        self, processor: Processor, publisher: Publisher, *, reply_topic: str, error_topic: str
    ) -> None:
        self._processor = processor
        self._publisher = publisher
        self._reply_topic = reply_topic
        self._error_topic = error_topic

    async def __call__(self, record: Record) -> None:
        """Process one record and publish its outcome; returns once Kafka acknowledged it.

        One span covers both (a messaging "process" span, the child of the trace context in
        the record's headers); the reply and the error record carry its context."""
        with tracer().consumer(
            f"process {record.topic}", record.headers, _span_attributes(record)
        ) as span:
            if span.recording and record.taken_at:
                # The time it waited for the records before it with the same key.
                waited_ms = (time.monotonic() - record.taken_at) * 1000
                if waited_ms >= NOTABLE_WAIT_MS:
                    span.event("key order wait", {"twilio.wait_ms": round(waited_ms, 3)})
            outcome = await self._processor.process(record)
            trace = span.headers()
            try:
                await self.publish(record, outcome, trace)
            except Exception:
                log.exception("could not publish the outcome of %s", record.offset)
                await self._publish_minimal(record, outcome, trace)
            _count_and_log(record, outcome)

    async def publish(self, record: Record, outcome: Outcome, trace: Headers = ()) -> None:
        """Publish the reply and the error record of one outcome, concurrently, with the
        ``trace`` context in their headers; returns once they and the idempotency log's answer
        (``outcome.recorded``) are acknowledged."""
        sends: list[Awaitable[object]] = []
        if outcome.recorded is not None:
            sends.append(outcome.recorded)
        if outcome.reply is not None:
            sends.append(self._publish_reply(record, outcome.reply, outcome.reply_value, trace))
        if outcome.error is not None:
            error = outcome.error
            headers = [
                ("id", (error.id or "").encode()),
                ("kind", error.error.kind.encode()),
                *trace,
            ]
            value = error_record_bytes(error, self._publisher.max_record_bytes)
            sends.append(self._publisher.publish(self._error_topic, record.key, value, headers))
        await asyncio.gather(*sends)

    async def _publish_minimal(self, record: Record, outcome: Outcome, trace: Headers) -> None:
        """An error record with only the request's place, no key and no copy of the request."""
        request_id = outcome.reply.id if outcome.reply is not None else None
        info = ErrorInfo(
            kind="internal",
            message="the outcome of this request could not be published; see source",
            retryable=False,
        )
        bare = Record(record.topic, record.partition, record.offset, None, None, (), None)
        minimal = error_record(bare, info, request_id=request_id, document=None)
        headers = [
            ("id", (request_id or "").encode()[:_MAX_ID_HEADER]),
            ("kind", b"internal"),
            *trace,
        ]
        value = minimal.model_dump_json().encode()
        await self._publisher.publish(self._error_topic, None, value, headers)

    async def _publish_reply(
        self, record: Record, reply: Reply, value: bytes | None, trace: Headers
    ) -> None:
        headers = [("id", reply.id.encode()), ("status", reply.status.encode()), *trace]
        started = time.perf_counter()
        if value is None:
            value = reply_bytes(reply, self._publisher.max_record_bytes)
        await self._publisher.publish(self._reply_topic, record.key, value, headers)
        REPLY_PUBLISH_SECONDS.observe(time.perf_counter() - started)


def _span_attributes(record: Record) -> dict[str, AttributeValue | None]:
    # Messaging semantic conventions for a consumed record being processed.
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
    }


def _count_and_log(record: Record, outcome: Outcome) -> None:
    reply, error = outcome.reply, outcome.error
    status = reply.status if reply is not None else "rejected"
    labelled(REQUESTS, record.topic, status).inc()
    if error is not None:
        ERRORS.labels(error.error.kind).inc()
    level = logging.DEBUG if error is None else logging.WARNING
    if not log.isEnabledFor(level):
        return
    kind = error.error.kind if error is not None else None
    log.log(
        level,
        error.error.message if error is not None else "request done",
        extra={
            "request_id": reply.id if reply is not None else None,
            "operation": reply.operation if reply is not None else None,
            "outcome": kind or status,
            "duration_ms": reply.duration_ms if reply is not None else None,
            "topic": record.topic,
        },
    )
