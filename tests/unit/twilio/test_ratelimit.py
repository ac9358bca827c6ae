"""Rate limits and concurrency caps per credential (``bridge.twilio.ratelimit``)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.twilio.ratelimit import ConcurrencyGate, Limiter, Limits, TokenBucket, next_cap
from bridge.twilio.retry import Attempt

OK = Attempt(status=201)
TOO_MANY = Attempt(status=429, twilio_code=20429)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- token bucket ------------------------------------------------------------------------------


def test_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0)
    assert [bucket.reserve(0) for _ in range(5)] == pytest.approx([0, 0, 0, 0.1, 0.2])


def test_bucket_refills_with_time_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2, burst=2, now=0)
    bucket.reserve(0), bucket.reserve(0)
    assert bucket.reserve(0.5) == 0  # one token came back in half a second
    assert not bucket.full(0.5)
    assert bucket.full(60)  # and never more than the burst, however long it rested
    assert [bucket.reserve(60) for _ in range(3)] == pytest.approx([0, 0, 0.5])


# --- the cap that follows Twilio ---------------------------------------------------------------


def test_cap_drops_at_once_to_leave_room_for_the_accounts_other_clients() -> None:
    # Twilio counts 95 in flight for the account, 20 of them ours: others use 75, and the
    # account should stay at 90 % of its 100.
    assert next_cap(60, 100, OK, reported=95, ours=20, account_limit=100) == 15


def test_cap_rises_one_call_at_a_time_and_never_past_its_ceiling() -> None:
    assert next_cap(10, 100, OK, reported=12, ours=12, account_limit=100) == 11
    assert next_cap(10, 100, OK, reported=None, ours=5, account_limit=100) == 11
    assert next_cap(100, 100, OK, reported=None, ours=5, account_limit=100) == 100
    # Alone on the account, the bridge still keeps 10 % below Twilio's limit.
    assert next_cap(90, 100, OK, reported=90, ours=90, account_limit=100) == 90


def test_cap_halves_on_a_concurrency_429_without_the_header() -> None:
    assert next_cap(40, 100, TOO_MANY, reported=None, ours=40, account_limit=100) == 20
    assert next_cap(1, 100, TOO_MANY, reported=None, ours=1, account_limit=100) == 1
    # Verify's "max send attempts" is a 429 about one phone number, not about concurrency:
    # no reason to halve, nor to send more.
    verify = Attempt(status=429, twilio_code=60203)
    assert next_cap(40, 100, verify, reported=None, ours=40, account_limit=100) == 40


def test_a_429_never_raises_the_cap_whatever_the_header_says() -> None:
    assert next_cap(12, 100, TOO_MANY, reported=31, ours=27, account_limit=30) == 12


def test_cap_ignores_the_header_when_the_account_limit_is_unknown() -> None:
    assert next_cap(40, 100, OK, reported=500, ours=1, account_limit=0) == 41


# --- the gate ----------------------------------------------------------------------------------


async def test_gate_holds_callers_over_the_cap_and_serves_them_in_order() -> None:
    gate = ConcurrencyGate(2)
    await gate.acquire()
    await gate.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await gate.acquire()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert order == [] and gate.in_flight == 2
    gate.release()
    await asyncio.sleep(0)
    assert order == [0]
    gate.resize(4)  # a larger cap lets the rest in at once
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2] and gate.in_flight == 4


async def test_gate_shrinks_without_touching_calls_in_flight() -> None:
    gate = ConcurrencyGate(3)
    for _ in range(3):
        await gate.acquire()
    gate.resize(1)
    waiter = asyncio.create_task(gate.acquire())
    gate.release()
    gate.release()
    await asyncio.sleep(0)
    assert not waiter.done()  # still one in flight, and the cap is one
    gate.release()
    await waiter
    assert gate.in_flight == 1


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = ConcurrencyGate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    assert gate.in_flight == 0
    await asyncio.wait_for(gate.acquire(), 1)


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_place_on() -> None:
    gate = ConcurrencyGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # grants 'first'...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert gate.in_flight == 1


# --- the limiter -------------------------------------------------------------------------------


async def test_limiter_paces_a_credential_and_measures_the_wait() -> None:
    limiter = Limiter(Limits.of(requests_per_second=50, burst=1))
    waited = []
    for _ in range(5):
        async with limiter.slot("default") as slot:
            waited.append(slot.waited_s)
    assert waited[0] == 0
    # Four waits of at least 20 ms each: a lower bound the limiter guarantees.
    assert sum(waited) >= 0.079
    assert sum(1 for w in waited if w > 0) == 4


async def test_each_sender_has_its_own_pace_inside_the_credentials() -> None:
    clock = Clock()
    limiter = Limiter(Limits.of(per_sender_per_second=1, per_sender_burst=1), clock=clock)
    assert limiter._reserve("default", "+14155550001") == 0
    assert limiter._reserve("default", "+14155550002") == 0
    assert limiter._reserve("default", "+14155550001") == pytest.approx(1.0)
    assert limiter._reserve("other", "+14155550001") == 0  # another account, another bucket


async def test_limiter_without_sender_does_not_touch_sender_buckets() -> None:
    clock = Clock()
    limiter = Limiter(
        Limits.of(requests_per_second=10, burst=2, per_sender_per_second=1), clock=clock
    )
    async with limiter.slot("default", None) as slot:
        assert slot.waited_s == 0
    async with limiter.slot("default", "+14155550001") as slot:
        assert slot.waited_s == 0
    assert set(limiter._buckets) == {("default", None), ("default", "+14155550001")}
    # Two calls took the credential's two tokens, once each: the next one has to wait.
    assert limiter._reserve("default", None) == pytest.approx(0.1)


async def test_idle_sender_buckets_are_forgotten_past_the_bound() -> None:
    clock = Clock()
    limiter = Limiter(Limits.of(per_sender_per_second=1), clock=clock)
    for n in range(10_002):
        limiter._reserve("default", f"+1415{n:07d}")
    clock.now += 10  # every bucket is full again
    limiter._reserve("default", "+19999999999")
    assert len(limiter._buckets) == 1


async def test_limiter_caps_calls_in_flight_per_credential() -> None:
    limiter = Limiter(Limits.of(max_concurrent=2))
    peak = running = 0

    async def call(credential: str) -> None:
        nonlocal peak, running
        async with limiter.slot(credential):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(call("default") for _ in range(6)))
    assert peak == 2
    peak = 0
    await asyncio.gather(*(call(name) for name in ("a", "a", "b", "b")))
    assert peak == 4  # each credential has its own cap


async def test_limiter_follows_twilio_concurrent_requests() -> None:
    limiter = Limiter(Limits.of(max_concurrent=100, account_concurrency=100))
    async with limiter.slot("default") as slot:
        slot.report(OK, "99")  # others hold 98 of the account's 100
    assert limiter.cap("default") == 1
    for _ in range(5):
        async with limiter.slot("default") as slot:
            slot.report(OK, "not a number")
    assert limiter.cap("default") == 6


async def test_limiter_with_everything_off_never_waits() -> None:
    limiter = Limiter()
    async with limiter.slot("default", "+14155550001") as slot:
        slot.report(TOO_MANY, "1000")
        assert slot.waited_s == 0
    assert limiter.cap("default") is None and not limiter._buckets


def test_the_cap_starts_under_the_accounts_limit_and_its_own_ceiling() -> None:
    assert Limiter(Limits.of(max_concurrent=100, account_concurrency=20)).cap("default") == 18
    assert Limiter(Limits.of(max_concurrent=5, account_concurrency=100)).cap("default") == 5
    assert Limiter(Limits.of(max_concurrent=100, account_concurrency=0)).cap("default") == 100
    assert Limiter(Limits.of(max_concurrent=0, account_concurrency=100)).cap("default") is None


# --- limits per credential (instances bring their own) -----------------------------------------


async def test_a_credentials_own_limits_replace_the_default() -> None:
    limiter = Limiter(Limits.of(max_concurrent=3))
    async with limiter.slot("acme", None, Limits.of(max_concurrent=7)):
        pass
    async with limiter.slot("default"):
        pass
    assert (limiter.cap("acme"), limiter.cap("default")) == (7, 3)


async def test_own_limits_pace_only_their_credential() -> None:
    clock = Clock()
    limiter = Limiter(clock=clock)
    slow = Limits.of(requests_per_second=1, burst=1)
    assert limiter._reserve("acme", None, slow) == 0
    assert limiter._reserve("acme", None, slow) == pytest.approx(1.0)
    assert limiter._reserve("default", None) == 0
    assert limiter._reserve("default", None) == 0


async def test_changed_limits_start_a_fresh_gate() -> None:
    limiter = Limiter()
    one, two = Limits.of(max_concurrent=1), Limits.of(max_concurrent=2)
    async with limiter.slot("acme", None, one):
        # The old gate is full; the new limits' gate is not, so this does not wait.
        async with asyncio.timeout(1):
            async with limiter.slot("acme", None, two) as slot:
                assert slot.waited_s == 0
                assert limiter.cap("acme") == 2
    # Both released, each to its own gate: the new gate is free again.
    gate = limiter._gates["acme"]
    assert (gate.cap, gate.in_flight) == (2, 0)


async def test_equal_limits_keep_the_gate_and_what_it_learnt() -> None:
    limiter = Limiter()
    learnt = Limits.of(max_concurrent=100, account_concurrency=100)
    async with limiter.slot("acme", None, learnt) as slot:
        slot.report(OK, "99")
    assert limiter.cap("acme") == 1
    # The same limits, from an account built again (an instance read again): nothing resets.
    same = Limits.of(max_concurrent=100, account_concurrency=100)
    entered = asyncio.Event()

    async def second() -> None:
        async with limiter.slot("acme", None, same):
            entered.set()

    async with limiter.slot("acme", None, same):
        assert limiter.cap("acme") == 1
        waiter = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        assert not entered.is_set()  # the cap of one holds
    await asyncio.wait_for(waiter, 1)
    assert entered.is_set()


async def test_changed_rates_start_fresh_buckets() -> None:
    clock = Clock()
    limiter = Limiter(clock=clock)
    slow = Limits.of(requests_per_second=1, burst=1, per_sender_per_second=1)
    async with limiter.slot("acme", "+14155550001", slow):
        pass
    assert limiter._reserve("acme", None, slow) == pytest.approx(1.0)
    faster = Limits.of(requests_per_second=5, burst=1, per_sender_per_second=5)
    async with limiter.slot("acme", "+14155550001", faster) as slot:
        assert slot.waited_s == 0
