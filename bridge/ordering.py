"""Run jobs concurrently across keys while keeping their order within a key.

Each key with queued work has one worker task that drains its queue, so a slow or retrying
job holds back only its own key (the Confluent Parallel Consumer's KEY ordering).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["KeyedRunner"]

Job = Callable[[], Awaitable[None]]


class KeyedRunner:
    """Per-key FIFO execution with one task per active key."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[Job]] = {}
        self._workers: dict[Hashable, asyncio.Task[None]] = {}

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
        self._workers[key] = asyncio.create_task(self._drain(key))

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
        tasks = [task for key, task in self._workers.items() if where(key)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
