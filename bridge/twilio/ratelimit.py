"""Rate limits and concurrency caps per credential, so the bridge backs off before Twilio does.

A token bucket paces each credential's calls and, optionally, each sender's (``From`` or
``MessagingServiceSid``: carriers cap a number's messages per second). A gate caps each
credential's calls in flight. Twilio counts concurrency per account across every client and
reports the count in ``Twilio-Concurrent-Requests``; the gate lowers its cap as soon as that
count nears the account's limit, so replicas and other clients of one account share it without
429s, and raises it again one call at a time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bridge.twilio.retry import Attempt

__all__ = ["ConcurrencyGate", "Limiter", "Limits", "Slot", "TokenBucket", "next_cap"]

# Aim below the account's limit: Twilio counted the others' calls before ours arrived.
_ACCOUNT_TARGET = 0.9
# Idle sender buckets are forgotten past this many, so a stream of new numbers cannot grow
# memory without bound; a forgotten bucket was full, so forgetting it changes nothing.
_MAX_IDLE_SENDERS = 10_000


class TokenBucket:
    """Pacing by reservation: each call takes a token now and waits until it would exist.

    Reserving (tokens may go negative) keeps callers in arrival order without polling.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def reserve(self, now: float) -> float:
        """Take one token; the seconds to wait before using it (0 when one was there)."""
        self._refill(now)
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def full(self, now: float) -> bool:
        """True when the bucket holds its whole burst, so it is as good as a new one."""
        self._refill(now)
        return self._tokens >= self.burst

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now


def next_cap(
    cap: int,
    ceiling: int,
    attempt: Attempt,
    *,
    reported: int | None,
    ours: int,
    account_limit: int,
) -> int:
    """The gate's next cap after one answer: down at once to fit the account, up by one.

    ``reported`` is Twilio's account-wide count when this call arrived and ``ours`` the
    credential's calls in flight when it was sent, this one included; the difference is what
    the account's other clients held. Counts taken at send time, not at the answer, keep a
    burst of early answers (counted when few of ours were out) from raising the cap.
    """
    if reported is not None and account_limit:
        wanted = _account_target(account_limit) - max(0, reported - ours)
    elif attempt.rate_limited and attempt.twilio_code in (None, 20429):
        wanted = cap // 2
    else:
        wanted = cap + 1
    if attempt.rate_limited:
        wanted = min(wanted, cap)  # a refusal is never a reason to send more
    return max(1, min(ceiling, cap + 1, wanted))


def _account_target(account_limit: int) -> int:
    return max(1, math.floor(account_limit * _ACCOUNT_TARGET))


class ConcurrencyGate:
    """A semaphore whose size can change while callers wait; waiters are served in order."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a place if one is free now, without waiting."""
        if self.in_flight < self.cap and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a place under the cap."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: hand it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a place back and let waiters in."""
        self.in_flight -= 1
        self._wake()

    def resize(self, cap: int) -> None:
        """Change the cap; calls already in flight finish, new ones wait if over it."""
        self.cap = cap
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.cap:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


@dataclass(slots=True)
class Slot:
    """One call's permission to go; ``report`` its answer so the gate can follow Twilio."""

    waited_s: float
    _limiter: Limiter
    _credential: str
    _ours: int  # the credential's calls in flight when this one went, itself included

    def report(self, attempt: Attempt, concurrent: str | None) -> None:
        """Feed the answer (and its ``Twilio-Concurrent-Requests`` value) back to the gate."""
        self._limiter.observe(self._credential, attempt, concurrent, self._ours)


@dataclass(frozen=True, slots=True)
class Limits:
    """One credential's limits; ``0`` turns a limit off."""

    rate: tuple[float, int] = (0, 1)  # calls per second, burst
    sender_rate: tuple[float, int] = (0, 1)
    account: int = 0  # the account's concurrency limit at Twilio
    ceiling: int = 0  # the most calls in flight

    @classmethod
    def of(
        cls,
        *,
        requests_per_second: float = 0,
        burst: int = 1,
        per_sender_per_second: float = 0,
        per_sender_burst: int = 1,
        max_concurrent: int = 0,
        account_concurrency: int = 0,
    ) -> Limits:
        """Limits from the settings' names."""
        # Alone on the account, the bridge still stays under the share it aims the account at.
        ceiling = (
            min(max_concurrent, _account_target(account_concurrency))
            if account_concurrency and max_concurrent
            else max_concurrent
        )
        return cls(
            (requests_per_second, burst),
            (per_sender_per_second, per_sender_burst),
            account_concurrency,
            ceiling,
        )


class Limiter:
    """Every credential's buckets and gate; all limits are off by default.

    The bridge's limits apply to every credential unless a call brings its own (an instance's):
    a credential whose limits change starts again with fresh buckets and gate.
    """

    def __init__(
        self, limits: Limits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._default = limits or Limits()
        self._clock = clock
        self._limits: dict[str, Limits] = {}
        self._buckets: dict[tuple[str, str | None], TokenBucket] = {}
        self._gates: dict[str, ConcurrencyGate] = {}

    @asynccontextmanager
    async def slot(
        self, credential: str, sender: str | None = None, limits: Limits | None = None
    ) -> AsyncIterator[Slot]:
        """Wait for the rate limits, then for a place under the credential's cap."""
        own = limits or self._default
        prior = self._limits.get(credential)
        if prior is not own:
            if prior is not None and prior != own:
                self._forget(credential)
            self._limits[credential] = own
        delay = self._reserve(credential, None, own)
        if sender is not None:
            delay = max(delay, self._reserve(credential, sender, own))
        gate = self._gate(credential, own)
        waited = 0.0
        if delay > 0 or (gate is not None and not gate.try_acquire()):
            started = self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if gate is not None:
                await gate.acquire()
            waited = self._clock() - started
        try:
            yield Slot(waited, self, credential, gate.in_flight if gate is not None else 0)
        finally:
            if gate is not None:
                gate.release()

    def observe(self, credential: str, attempt: Attempt, concurrent: str | None, ours: int) -> None:
        """Resize the credential's gate after an answer to a call sent with ``ours`` out."""
        gate = self._gates.get(credential)
        if gate is None:
            return
        limits = self._limits.get(credential, self._default)
        reported = int(concurrent) if concurrent and concurrent.strip().isdigit() else None
        cap = next_cap(
            gate.cap,
            limits.ceiling,
            attempt,
            reported=reported,
            ours=ours,
            account_limit=limits.account,
        )
        if cap != gate.cap:
            gate.resize(cap)

    def cap(self, credential: str) -> int | None:
        """The credential's current concurrency cap (None when uncapped)."""
        gate = self._gate(credential, self._limits.get(credential, self._default))
        return gate.cap if gate is not None else None

    def _gate(self, credential: str, limits: Limits) -> ConcurrencyGate | None:
        if not limits.ceiling:
            return None
        gate = self._gates.get(credential)
        if gate is None:
            gate = self._gates[credential] = ConcurrencyGate(limits.ceiling)
        return gate

    def _forget(self, credential: str) -> None:
        # Calls holding the old gate release it; new calls queue at the new one.
        self._gates.pop(credential, None)
        for key in [k for k in self._buckets if k[0] == credential]:
            del self._buckets[key]

    def _reserve(self, credential: str, sender: str | None, limits: Limits | None = None) -> float:
        limits = limits or self._limits.get(credential, self._default)
        rate, burst = limits.rate if sender is None else limits.sender_rate
        if not rate:
            return 0.0
        now = self._clock()
        key = (credential, sender)
        bucket = self._buckets.get(key)
        if bucket is None:
            if sender is not None and len(self._buckets) > _MAX_IDLE_SENDERS:
                self._forget_idle(now)
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        return bucket.reserve(now)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if k[1] is not None and b.full(now)]:
            del self._buckets[key]
