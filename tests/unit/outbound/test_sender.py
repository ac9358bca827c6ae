"""Sending one call (``bridge.outbound.sender``): attempts, retries, the rate limiter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bridge.contract.envelopes import parse_request
from bridge.contract.errors import CallNotSent, CallTimeout
from bridge.observability.metrics import REGISTRY
from bridge.outbound.sender import Sender, Sent, retry_reason, why
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder, TwilioCall
from bridge.twilio.catalog import Catalog
from bridge.twilio.client import TwilioClient
from bridge.twilio.ratelimit import Limiter, Limits, Slot
from bridge.twilio.retry import Attempt, RetryPolicy
from tests.helpers import (
    CREATED,
    CREDENTIALS,
    ENVELOPE,
    FAST_RETRIES,
    FETCH_MESSAGE,
    TOO_MANY,
    TWILIO_SETTINGS,
    RecordingTwilio,
    answering,
    answering_in_turn,
)


def call_for(envelope: dict[str, Any]) -> TwilioCall:
    builder = CallBuilder(Catalog.load(), Accounts(CREDENTIALS), TWILIO_SETTINGS)
    return builder.build(parse_request(json.dumps(envelope).encode()))


async def send(
    twilio: RecordingTwilio,
    envelope: dict[str, Any] = ENVELOPE,
    policy: RetryPolicy = FAST_RETRIES,
    limiter: Limiter | None = None,
) -> Sent:
    client = TwilioClient(TWILIO_SETTINGS, transport=httpx.MockTransport(twilio))
    try:
        return await Sender(client, limiter).send(call_for(envelope), policy)
    finally:
        await client.aclose()


def retries(reason: str) -> float:
    return REGISTRY.get_sample_value("twilio_bridge_retries_total", {"reason": reason}) or 0.0


async def test_a_success_is_one_attempt_without_warnings() -> None:
    sent = await send(answering(201, {"sid": "SM1"}))
    assert sent.result is not None and sent.result.status == 201
    assert (sent.attempt, sent.attempts, sent.retried, sent.wait_ms) == (
        Attempt(status=201),
        1,
        (),
        0.0,
    )


async def test_each_retry_says_why_and_is_counted() -> None:
    before = retries("rate_limited")
    twilio = answering_in_turn(TOO_MANY, TOO_MANY, CREATED)
    sent = await send(twilio)
    assert sent.result is not None and sent.result.status == 201
    assert sent.attempts == 3 and len(twilio.requests) == 3
    assert sent.retried == (
        "attempt 1: HTTP 429, Twilio code 20429; retried after 0.00 s",
        "attempt 2: HTTP 429, Twilio code 20429; retried after 0.00 s",
    )
    assert retries("rate_limited") == before + 2


async def test_the_last_failure_is_kept_when_the_policy_allows_no_more() -> None:
    sent = await send(answering_in_turn(TOO_MANY))
    assert sent.result is not None and sent.result.status == 429
    assert sent.attempt == Attempt(status=429, twilio_code=20429)
    assert sent.attempts == 3 and len(sent.retried) == 2


async def test_an_attempt_without_an_answer_keeps_its_error() -> None:
    # A GET is retried after a timeout; a POST would not be.
    sent = await send(answering_in_turn(httpx.ReadTimeout), FETCH_MESSAGE)
    assert sent.result is None and isinstance(sent.attempt.error, CallTimeout)
    assert sent.attempts == 3
    assert sent.retried[0] == "attempt 1: timeout (CallTimeout); retried after 0.00 s"


class WaitsKept(Limiter):
    """The limiter, keeping what each slot waited."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self.waits_s: list[float] = []

    @asynccontextmanager
    async def slot(
        self, credential: str, sender: str | None = None, limits: Limits | None = None
    ) -> AsyncIterator[Slot]:
        async with super().slot(credential, sender, limits) as slot:
            self.waits_s.append(slot.waited_s)
            yield slot


async def test_the_time_waited_for_the_rate_limiter_is_summed_over_attempts() -> None:
    # One message every 50 ms from one number: the second and third attempts wait for their
    # turn, each less the time the attempt before took (more on a loaded machine, so what
    # each waited is read from the limiter rather than bounded from below).
    limiter = WaitsKept(Limits.of(per_sender_per_second=20, per_sender_burst=1))
    sent = await send(answering_in_turn(TOO_MANY), limiter=limiter)
    assert sent.attempts == 3 and len(limiter.waits_s) == 3
    assert sent.wait_ms == pytest.approx(1000 * sum(limiter.waits_s))


@pytest.mark.parametrize(
    ("attempt", "text", "reason"),
    [
        (Attempt(status=429, twilio_code=20429), "HTTP 429, Twilio code 20429", "rate_limited"),
        (Attempt(status=503), "HTTP 503", "http_5xx"),
        (Attempt(error=CallTimeout("no answer")), "timeout (CallTimeout)", "timeout"),
        (Attempt(error=CallNotSent("refused")), "transport (CallNotSent)", "transport"),
    ],
)
def test_how_an_attempt_failed_in_words_and_as_a_metric_label(
    attempt: Attempt, text: str, reason: str
) -> None:
    assert (why(attempt), retry_reason(attempt)) == (text, reason)
