"""Background tasks are held until done, found by key, waited for, cancelled, failures logged."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from bridge.aio import TaskSet


async def test_a_task_is_held_until_done_then_let_go() -> None:
    tasks = TaskSet("test")
    release = asyncio.Event()
    done = asyncio.Event()

    async def work() -> None:
        await release.wait()
        done.set()

    tasks.add(work())  # nothing else holds the task
    gc.collect()
    assert len(tasks) == 1
    release.set()
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0)  # the done-callback runs on the next turn
    assert len(tasks) == 0


async def test_a_keyed_task_is_found_while_it_runs() -> None:
    tasks = TaskSet("test")
    release = asyncio.Event()
    task = tasks.add(release.wait(), key="event-1")
    assert tasks.get("event-1") is task and tasks.get("event-2") is None
    release.set()
    assert await task is True
    await asyncio.sleep(0)
    assert tasks.get("event-1") is None


async def test_wait_says_whether_everything_finished_and_cancel_stops_the_rest() -> None:
    tasks = TaskSet("test")
    assert await tasks.wait(0.01) is True  # nothing to wait for
    quick = tasks.add(asyncio.sleep(0))
    stuck = tasks.add(asyncio.Event().wait())
    assert await tasks.wait(0.05) is False
    assert quick.done() and not stuck.done()
    tasks.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
    await asyncio.sleep(0)
    assert len(tasks) == 0
    assert await tasks.wait(0.01) is True


async def test_a_failure_is_logged_a_cancellation_is_not(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("redelivery log")

    async def refused() -> None:
        raise RuntimeError("refused")

    with caplog.at_level(logging.ERROR, "bridge.aio"):
        failing = tasks.add(refused())
        cancelled = tasks.add(asyncio.Event().wait())
        cancelled.cancel()
        await asyncio.gather(failing, cancelled, return_exceptions=True)
        await asyncio.sleep(0)
    assert caplog.messages == ["redelivery log: a background task failed (RuntimeError)"]
    assert caplog.records[0].exc_info is not None
    assert len(tasks) == 0
