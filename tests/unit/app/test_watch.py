"""The broker watch: readiness and the gauge follow the producer's connections at once, a
metadata request catches a broker that hangs, and each change is logged once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bridge.app import watch as watch_module
from bridge.app.watch import BrokerWatch
from bridge.observability.metrics import BROKER_REACHABLE


class Publisher:
    """The two looks the watch takes: connections, and a metadata request."""

    def __init__(self) -> None:
        self.connections = True
        self.answers = True
        self.requests = 0
        self.looked = asyncio.Event()

    async def connected(self, timeout_s: float) -> bool:
        self.looked.set()
        return self.connections

    async def reachable(self, timeout_s: float) -> bool:
        self.requests += 1
        return self.answers


class Consumer:
    async def lag(self) -> dict[Any, int]:
        return {}


async def _looks(publisher: Publisher, n: int = 2) -> None:
    for _ in range(n):
        publisher.looked.clear()
        await asyncio.wait_for(publisher.looked.wait(), 5)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_module, "LOOK_S", 0.001)


async def test_readiness_follows_the_connections_and_a_hung_broker_is_caught(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bridge.app.watch")
    publisher = Publisher()
    watch = BrokerWatch(publisher, Consumer())  # type: ignore[arg-type]
    assert not watch.reachable and BROKER_REACHABLE._value.get() == 0
    running = asyncio.create_task(watch.run())
    try:
        await _looks(publisher)
        assert watch.reachable and BROKER_REACHABLE._value.get() == 1
        publisher.connections = False  # the broker died: its connections closed
        await _looks(publisher)
        assert not watch.reachable and BROKER_REACHABLE._value.get() == 0
        publisher.connections = True  # back: a request confirms before readiness returns
        await _looks(publisher)
        assert watch.reachable
        # Connections open but no answer: caught by the request, which runs every look
        # while unreachable, and every 5 s otherwise.
        publisher.answers = False
        monkeypatch.setattr(watch_module, "REQUEST_EVERY_S", 0.0)
        await _looks(publisher)
        assert not watch.reachable
        asked = publisher.requests
        await _looks(publisher)
        assert publisher.requests > asked and not watch.reachable
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert caplog.messages.count("broker unreachable: not ready until it is back") == 2
    assert sum("broker reachable again after" in m for m in caplog.messages) == 1
