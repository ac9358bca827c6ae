"""Closing a consumer whatever the broker does: aiokafka's stray cancellation is absorbed and a
stop that hangs is cut short, both closing the connections; the caller's own cancellation
still goes through."""

from __future__ import annotations

import asyncio

import pytest

from bridge.kafka import closing
from bridge.kafka.closing import stop_consumer


class Client:
    def __init__(self, how: str = "clean") -> None:
        self.closed = 0
        self.how = how

    async def close(self) -> None:
        self.closed += 1
        if self.how == "connection cancelled":
            raise asyncio.CancelledError  # a connection's close, cancelled by the stop cut short


class Consumer:
    def __init__(self, how: str, closing: str = "clean") -> None:
        self.how = how
        self._client = Client(closing)

    async def stop(self) -> None:
        if self.how == "fetcher cancelled":
            raise asyncio.CancelledError  # what aiokafka's fetcher lets out
        if self.how == "hangs":
            await asyncio.sleep(3600)


@pytest.mark.parametrize(("how", "closed"), [("clean", 0), ("fetcher cancelled", 1)])
async def test_a_stray_cancellation_from_stop_closes_the_connections(how: str, closed: int) -> None:
    consumer = Consumer(how)
    await stop_consumer(consumer, "stopping")
    assert consumer._client.closed == closed


async def test_a_stop_that_hangs_is_cut_short(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = Consumer("hangs")
    await stop_consumer(consumer, "leaving the group", timeout_s=0.01)
    assert consumer._client.closed == 1
    assert "leaving the group: no answer within 0 s" in caplog.text
    assert closing.STOP_TIMEOUT_S == 5.0


async def test_a_stray_cancellation_from_closing_the_connections_is_absorbed() -> None:
    consumer = Consumer("hangs", closing="connection cancelled")
    await stop_consumer(consumer, "leaving the group", timeout_s=0.01)
    assert consumer._client.closed == 1


async def test_the_callers_cancellation_goes_through() -> None:
    consumer = Consumer("hangs")
    stopping = asyncio.create_task(stop_consumer(consumer, "stopping"))
    await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
