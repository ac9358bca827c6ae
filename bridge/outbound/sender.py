"""Sending one Twilio call: each attempt within the rate limiter, retried as the policy allows.

``Sender.send`` raises only what the client raises besides ``BridgeError`` (a bug); a failed
call is a ``Sent`` without a result, saying how its last attempt ended.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bridge.contract.errors import BridgeError, kind_for_status
from bridge.observability.metrics import (
    RATE_LIMIT_WAIT_SECONDS,
    RATE_LIMIT_WAITS,
    RETRIES,
    status_class,
)
from bridge.observability.tracing import tracer
from bridge.twilio.calls import TwilioCall
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter
from bridge.twilio.responses import HttpResult, twilio_code
from bridge.twilio.retry import Attempt, RetryPolicy

__all__ = ["Sender", "Sent", "retry_reason", "why"]


@dataclass(frozen=True, slots=True)
class Sent:
    """How sending one call ended, over all its attempts."""

    result: HttpResult | None  # the last answer; None when the last attempt got none
    attempt: Attempt  # how the last attempt ended
    attempts: int
    retried: tuple[str, ...] = ()  # why each retry, as reply warnings
    wait_ms: float = 0.0  # time spent waiting for the rate limiter


class Sender:
    """Sends calls through a Twilio client, within a rate limiter, with retries."""

    def __init__(self, client: TwilioClient, limiter: Limiter | None = None) -> None:
        self._client = client
        self._limiter = limiter or Limiter()

    async def send(self, call: TwilioCall, policy: RetryPolicy) -> Sent:
        """Send ``call`` until it succeeds or ``policy`` allows no further attempt."""
        attempts, wait_ms = 0, 0.0
        retried: list[str] = []
        while True:
            attempts += 1
            result, attempt, waited_ms = await self._attempt(call, attempts)
            wait_ms += waited_ms
            if result is not None and result.status < 400:
                break
            delay = policy.next_delay(call.method, attempts, attempt)
            if delay is None:
                break
            retried.append(f"attempt {attempts}: {why(attempt)}; retried after {delay:.2f} s")
            reason = retry_reason(attempt)
            RETRIES.labels(reason).inc()
            tracer().current().event("retry", {"twilio.attempt": attempts, "error.type": reason})
            await asyncio.sleep(delay)
        return Sent(result, attempt, attempts, tuple(retried), wait_ms)

    async def _attempt(
        self, call: TwilioCall, number: int
    ) -> tuple[HttpResult | None, Attempt, float]:
        """Attempt ``number``: the answer (if any), how it ended, milliseconds waited for a
        slot."""
        account = call.account
        async with self._limiter.slot(account.name, call.sender, account.rate_limit) as slot:
            waited_ms = slot.waited_s * 1000
            if slot.waited_s:
                RATE_LIMIT_WAITS.inc()
                RATE_LIMIT_WAIT_SECONDS.inc(slot.waited_s)
                tracer().current().event(
                    "rate limit wait", {"twilio.attempt": number, "twilio.wait_ms": waited_ms}
                )
            try:
                result = await self._client.send(call, number)
            except BridgeError as exc:
                return None, Attempt(error=exc), waited_ms
            if result.status < 400:
                attempt = Attempt(status=result.status)
            else:
                attempt = Attempt(
                    status=result.status,
                    twilio_code=twilio_code(result),
                    retry_after=result.header("retry-after"),
                )
            slot.report(attempt, result.header("twilio-concurrent-requests"))
            return result, attempt, waited_ms


def why(attempt: Attempt) -> str:
    """How an attempt failed, for a warning: an error kind and type, or the status and code."""
    if attempt.error is not None:
        return f"{attempt.error.kind} ({type(attempt.error).__name__})"
    code = f", Twilio code {attempt.twilio_code}" if attempt.twilio_code else ""
    return f"HTTP {attempt.status}{code}"


def retry_reason(attempt: Attempt) -> str:
    """A retry's reason as a metric label: an error kind, or the status's kind and class."""
    if attempt.error is not None:
        return attempt.error.kind
    status = attempt.status or 0
    kind = kind_for_status(status)
    return kind if kind != "twilio" else f"http_{status_class(status)}"
