"""Close an aiokafka consumer whatever state the broker is in, within a bound.

``AIOKafkaConsumer.stop`` has two ways of going wrong when the broker is gone: its fetcher
cancels the fetch tasks waiting out a broker error and then awaits them, so their
``CancelledError`` comes out of ``stop`` (and the client's connections are never closed, and
closing them afterwards can raise it again); and
leaving the group waits for the broker up to the request timeout (40 s). Neither loses
anything: what was not committed is redelivered to the group's next member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from aiokafka import AIOKafkaConsumer

from bridge.kafka.errors import kafka_errors

__all__ = ["stop_consumer", "stop_following"]

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 5.0


async def stop_consumer(
    consumer: AIOKafkaConsumer, what: str, timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """Stop ``consumer`` (leaving its group) within ``timeout_s``, then close its connections.

    Raises ``BrokerError`` when the broker refuses; a cancellation of the caller goes through.
    """
    with kafka_errors(what):
        try:
            stopped = await asyncio.wait_for(_stop(consumer), timeout_s)
        except TimeoutError:
            log.warning("%s: no answer within %.0f s; connections closed", what, timeout_s)
            stopped = False
        if not stopped:
            # What stop() did not reach; aiokafka has no public handle on its client. Closing
            # gathers the connections' closes, whose futures the abandoned stop may have
            # cancelled: that cancellation is theirs, not this task's.
            await _finished(consumer._client.close())


async def _stop(consumer: AIOKafkaConsumer) -> bool:
    """True once stopped; False when the fetcher's own cancellation cut ``stop`` short."""
    return await _finished(consumer.stop())


async def _finished(closing: Awaitable[object]) -> bool:
    """Await ``closing``: True when it finished, False when a cancellation of aiokafka's own
    tasks came out of it; a cancellation of this task goes through."""
    try:
        await closing
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return False
    return True


async def stop_following(
    task: asyncio.Task[None] | None, consumer: AIOKafkaConsumer | None, what: str
) -> None:
    """Cancel the background ``task`` that reads with ``consumer``, then stop the consumer."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if consumer is not None:
        await stop_consumer(consumer, what)
