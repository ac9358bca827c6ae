import random
from datetime import UTC, datetime

import pytest

from bridge.contract.envelopes import RetryOptions
from bridge.contract.errors import CallNotSent, CallTimeout, CallTransportError
from bridge.twilio.retry import Attempt, RetryPolicy, parse_retry_after

POLICY = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=8.0)


@pytest.mark.parametrize(
    ("method", "attempt", "retry"),
    [
        ("POST", Attempt(status=429), True),
        ("POST", Attempt(status=400, twilio_code=20429), True),
        ("POST", Attempt(error=CallNotSent("refused")), True),
        ("POST", Attempt(status=503), False),
        ("POST", Attempt(error=CallTimeout("slow")), False),
        ("POST", Attempt(error=CallTransportError("reset")), False),
        ("PATCH", Attempt(status=500), False),
        ("PUT", Attempt(status=502), False),
        ("GET", Attempt(status=503), True),
        ("GET", Attempt(error=CallTimeout("slow")), True),
        ("DELETE", Attempt(error=CallTransportError("reset")), True),
        ("GET", Attempt(status=400), False),
        ("GET", Attempt(status=401), False),
        ("GET", Attempt(status=404), False),
    ],
)
def test_what_is_retried(method: str, attempt: Attempt, retry: bool) -> None:
    assert POLICY.should_retry(method, attempt) is retry


def test_retry_all_errors_covers_every_failure_but_not_success() -> None:
    everything = RetryPolicy(retry_all_errors=True)
    assert everything.should_retry("POST", Attempt(status=503))
    assert everything.should_retry("POST", Attempt(status=400))
    assert everything.should_retry("POST", Attempt(error=CallTimeout("slow")))
    assert not everything.should_retry("POST", Attempt(status=201))


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(7)
    attempt = Attempt(status=429)
    for number, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        delays = [POLICY.delay_s(number, attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the whole range
    flat = RetryPolicy(base_delay_s=1.0, exponential=False)
    assert all(flat.delay_s(6, attempt, rng) <= 1.0 for _ in range(100))


def test_retry_after_wins_over_backoff_within_max_delay() -> None:
    assert POLICY.delay_s(1, Attempt(status=429, retry_after="3")) == 3.0
    assert POLICY.delay_s(1, Attempt(status=429, retry_after="120")) == 8.0
    assert POLICY.delay_s(1, Attempt(status=429, retry_after="0")) == 0.0


def test_next_delay_stops_at_max_attempts() -> None:
    attempt = Attempt(status=429, retry_after="1")
    assert POLICY.next_delay("POST", 4, attempt) == 1.0
    assert POLICY.next_delay("POST", 5, attempt) is None
    assert POLICY.next_delay("POST", 1, Attempt(status=400)) is None


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None


def test_envelope_options_override_only_what_they_set() -> None:
    merged = POLICY.with_options(RetryOptions(max_attempts=2, retry_all_errors=True))
    assert (merged.max_attempts, merged.retry_all_errors) == (2, True)
    assert (merged.base_delay_s, merged.max_delay_s) == (1.0, 8.0)
    assert POLICY.with_options(None) is POLICY
