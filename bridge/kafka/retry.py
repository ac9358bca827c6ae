"""Try a broker call again until Kafka takes it: what must not be lost or answered wrongly waits.

A reply not acknowledged, an outcome not read back, a topic not followed: giving up on any of
them would drop a reply or answer a duplicate wrongly, so the bridge waits out a broker outage
instead, with a warning each time that names what failed and aiokafka's reason for it.
Cancellation (shutdown, a partition revoked) ends the wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bridge.kafka.errors import BrokerError

__all__ = ["pause", "until_taken"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def until_taken(
    call: Callable[[], Awaitable[T]], what: str, *, first_s: float = 1.0, max_s: float = 1.0
) -> T:
    """``call()``'s result, calling it again after each ``BrokerError``.

    The pause starts at ``first_s`` and doubles up to ``max_s``; any other exception ends it.
    """
    delay = first_s
    while True:
        try:
            return await call()
        except BrokerError as exc:
            await pause(what, exc, delay)
            delay = min(delay * 2, max_s)


async def pause(what: str, exc: BrokerError, delay_s: float) -> None:
    """Warn that ``what`` failed and will be tried again, then wait ``delay_s``.

    For a loop that must look at something else (a stop signal) between attempts.
    """
    log.warning("%s failed (%s); retrying in %.1f s", what, exc.reason, delay_s)
    await asyncio.sleep(delay_s)
