"""A broker call is tried again until Kafka takes it, with the backoff and warning it asks for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.kafka import retry
from bridge.kafka.errors import BrokerError

REFUSED = BrokerError("publish to replies", "KafkaTimeoutError", retriable=True)


class Flaky:
    """Fails ``failures`` times with ``REFUSED``, then answers ``result``."""

    def __init__(self, failures: int, result: str = "taken") -> None:
        self.failures = failures
        self.result = result
        self.calls = 0
        self.called = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.called.set()
        if self.calls <= self.failures:
            raise REFUSED
        return self.result


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, float]]:
    """The pauses until_taken asks for, without waiting them out."""
    seen: list[tuple[str, str, float]] = []

    async def record(what: str, exc: BrokerError, delay_s: float) -> None:
        seen.append((what, exc.reason, delay_s))

    monkeypatch.setattr(retry, "pause", record)
    return seen


async def test_the_result_comes_once_kafka_takes_it(pauses: list[tuple[str, str, float]]) -> None:
    call = Flaky(failures=6)
    assert await retry.until_taken(call, "publish to replies", first_s=0.1, max_s=1.0) == "taken"
    assert call.calls == 7
    assert [delay for _, _, delay in pauses] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert {(what, reason) for what, reason, _ in pauses} == {
        ("publish to replies", "KafkaTimeoutError")
    }


async def test_the_default_pause_is_a_second_every_time(
    pauses: list[tuple[str, str, float]],
) -> None:
    await retry.until_taken(Flaky(failures=3), "reading t")
    assert [delay for _, _, delay in pauses] == [1.0, 1.0, 1.0]


async def test_a_first_success_neither_pauses_nor_warns(
    pauses: list[tuple[str, str, float]],
) -> None:
    assert await retry.until_taken(Flaky(failures=0), "reading t") == "taken"
    assert pauses == []


async def test_any_other_exception_ends_it_at_once(pauses: list[tuple[str, str, float]]) -> None:
    calls = 0

    async def refused_for_good() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not a broker error")

    with pytest.raises(ValueError):
        await retry.until_taken(refused_for_good, "publish to replies")
    assert calls == 1 and pauses == []


async def test_cancelling_ends_the_wait() -> None:
    call = Flaky(failures=1_000)
    waiting = asyncio.create_task(retry.until_taken(call, "reading t", first_s=60, max_s=60))
    await call.called.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert call.calls == 1


async def test_a_pause_warns_with_what_failed_why_and_for_how_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "bridge.kafka.retry"):
        await retry.pause("poller: reading state", REFUSED, 0.0)
    assert caplog.messages == [
        "poller: reading state failed (KafkaTimeoutError); retrying in 0.0 s"
    ]
