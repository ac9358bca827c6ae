"""Tasks the bridge starts in the background and must keep until they finish.

The event loop holds only a weak reference to a task, so a task nobody else holds may vanish
half-way (a publish never acknowledged, nothing said); a ``TaskSet`` holds each task until it
is done, and logs the exception of one that failed, which nobody might otherwise see. Waiting
and cancelling take the whole set, for shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Hashable
from functools import partial
from typing import Any, TypeVar

__all__ = ["TaskSet"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskSet:
    """Background tasks held until done, each findable by a key of its own."""

    def __init__(self, name: str) -> None:
        self._name = name  # says whose task failed, in the log
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        """Tasks not finished yet."""
        return len(self._tasks)

    def add(self, work: Coroutine[Any, Any, T], key: Hashable | None = None) -> asyncio.Task[T]:
        """Run ``work`` in a task held until it is done; ``get(key)`` finds it meanwhile."""
        task = asyncio.create_task(work)
        held = task if key is None else key
        self._tasks[held] = task
        task.add_done_callback(partial(self._done, held))
        return task

    def get(self, key: Hashable) -> asyncio.Task[Any] | None:
        """The unfinished task added under ``key``, if any."""
        return self._tasks.get(key)

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the tasks running now; True when all of them finished."""
        if not self._tasks:
            return True
        _, running = await asyncio.wait(list(self._tasks.values()), timeout=timeout_s)
        return not running

    def cancel(self) -> None:
        """Cancel every unfinished task (without waiting for them to end)."""
        for task in self._tasks.values():
            task.cancel()

    def _done(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "%s: a background task failed (%s)", self._name, type(exc).__name__, exc_info=exc
            )
