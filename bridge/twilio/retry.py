"""When to try a Twilio call again, and after how long. Pure: no I/O, the clock is the caller's.

A repeated POST can send a second SMS, so only what surely did not take effect is retried for
POST, PUT and PATCH: 429 (Twilio did not process it), and connections that never carried the
request. GET and DELETE are also retried on 5xx, timeouts and broken connections. Retry on all
errors widens this to every failed attempt, as the Prismatic and SAP connectors offer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bridge.config import RetrySettings
from bridge.contract.envelopes import RetryOptions
from bridge.contract.errors import BridgeError, CallNotSent, CallTimeout, CallTransportError

__all__ = ["IDEMPOTENT_METHODS", "Attempt", "RetryPolicy", "parse_retry_after"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_TOO_MANY = 20429
# The settings' defaults are the policy's, so they are written down once.
_DEFAULT = RetrySettings()


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt ended: an HTTP status (with Twilio's code), or an error before any."""

    status: int | None = None
    twilio_code: int | None = None
    retry_after: str | None = None
    error: BridgeError | None = None

    @property
    def rate_limited(self) -> bool:
        """Twilio refused for concurrency: it did not process the request."""
        return self.status == 429 or self.twilio_code == _TOO_MANY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter."""

    max_attempts: int = _DEFAULT.max_attempts
    base_delay_s: float = _DEFAULT.base_delay_s
    max_delay_s: float = _DEFAULT.max_delay_s
    exponential: bool = _DEFAULT.exponential
    retry_all_errors: bool = _DEFAULT.retry_all_errors

    def with_options(self, options: RetryOptions | None) -> RetryPolicy:
        """This policy with an envelope's overrides applied."""
        if options is None:
            return self
        return replace(self, **options.model_dump(exclude_none=True))

    def should_retry(self, method: str, attempt: Attempt) -> bool:
        """Whether another attempt may help and cannot cause a second side effect."""
        if attempt.rate_limited or isinstance(attempt.error, CallNotSent):
            return True
        failed = attempt.error is not None or (attempt.status or 0) >= 400
        if self.retry_all_errors:
            return failed
        transient = (attempt.status or 0) >= 500 or isinstance(
            attempt.error, CallTimeout | CallTransportError
        )
        return transient and method.upper() in IDEMPOTENT_METHODS

    def delay_s(self, number: int, attempt: Attempt, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt ``number`` (1-based): Retry-After, else backoff."""
        hinted = parse_retry_after(attempt.retry_after) if attempt.retry_after else None
        if hinted is not None:
            return min(hinted, self.max_delay_s)
        ceiling = self.base_delay_s * (2 ** (number - 1) if self.exponential else 1)
        # Full jitter: spreads the retries of many requests refused at the same moment.
        return (rng or random).uniform(0, min(ceiling, self.max_delay_s))

    def next_delay(
        self, method: str, number: int, attempt: Attempt, rng: random.Random | None = None
    ) -> float | None:
        """The wait before attempt ``number + 1``, or None when attempt ``number`` is final."""
        if number >= self.max_attempts or not self.should_retry(method, attempt):
            return None
        return self.delay_s(number, attempt, rng)


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or HTTP date); None if unreadable."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
