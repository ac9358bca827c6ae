"""Run jobs concurrently across keys while keeping their order within a key.

Each key with queued work has one worker task that drains its queue, so a slow or retrying
job holds back only its own key (the Confluent Parallel Consumer's KEY ordering).

New workers start at most ``starts_per_turn`` per turn of the event loop. A consumer hands
over hundreds of records at once (a fetch, or every slot freed by a burst of answers); started
together, their first steps (parse, build, send) would run back to back while the answers
already waiting in the sockets were not read. Started a few at a time, the loop polls its
sockets in between: at 256 in flight and 100 ms of Twilio latency this alone took the bridge
from 58 % to 85 % of 256 ÷ 100 ms (tests/perf/README.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["KeyedRunner"]

Job = Callable[[], Awaitable[None]]
STARTS_PER_TURN = 16


class KeyedRunner:
    """Per-key FIFO execution with one task per active key."""

    def __init__(self, starts_per_turn: int = STARTS_PER_TURN) -> None:
        self._queues: dict[Hashable, deque[Job]] = {}
        self._workers: dict[Hashable, asyncio.Task[None]] = {}
        self._starts_per_turn = starts_per_turn
        self._to_start: deque[Hashable] = deque()  # keys with a queue and no worker yet
        self._starting = False  # a _start_some call is scheduled

    @property
    def active_keys(self) -> int:
        """Keys with queued or running work."""
        return len(self._queues)

    def submit(self, key: Hashable, job: Job) -> None:
        """Queue ``job`` after every earlier job of ``key``; jobs must not raise."""
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)
            return
        self._queues[key] = deque((job,))
        self._to_start.append(key)
        if not self._starting:
            self._starting = True
            asyncio.get_running_loop().call_soon(self._start_some)

    def _start_some(self) -> None:
        to_start = self._to_start
        for _ in range(min(self._starts_per_turn, len(to_start))):
            key = to_start.popleft()
            if key in self._queues:  # not cancelled meanwhile
                self._workers[key] = asyncio.create_task(self._drain(key))
        if to_start:
            asyncio.get_running_loop().call_soon(self._start_some)
        else:
            self._starting = False

    async def _drain(self, key: Hashable) -> None:
        queue = self._queues[key]
        try:
            while queue:
                await queue[0]()
                queue.popleft()
        finally:
            del self._queues[key]
            del self._workers[key]

    async def cancel(self, where: Callable[[Hashable], bool] = lambda _key: True) -> None:
        """Cancel the workers of the keys ``where`` selects and wait until they are gone."""
        # Keys whose worker has not started yet just forget their jobs.
        waiting = [key for key in self._to_start if where(key)]
        for key in waiting:
            self._queues.pop(key, None)
        if waiting:
            self._to_start = deque(key for key in self._to_start if key in self._queues)
        selected = [(key, task) for key, task in self._workers.items() if where(key)]
        for _, task in selected:
            task.cancel()
        await asyncio.gather(*(task for _, task in selected), return_exceptions=True)
        for key, task in selected:
            if self._workers.get(key) is task:  # cancelled before its first step: no finally ran
                del self._workers[key]
                self._queues.pop(key, None)
