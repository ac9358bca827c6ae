"""The bridge's error tree: every failure knows its reply ``kind`` and whether a retry may help.

    BridgeError
    ├── RequestInvalid          kind=validation  the envelope cannot become a Twilio call
    │   └── UnknownOperation    kind=validation  operation not in the catalog (with suggestions)
    ├── TwilioCallFailed        kind from the HTTP status (auth, not_found, rate_limited, twilio)
    ├── CallTimeout             kind=timeout     no answer in time; may have reached Twilio
    ├── CallTransportError      kind=transport   connection-level failure
    │   └── CallNotSent         kind=transport   surely never reached Twilio (connect failed)
    ├── UnknownOutcome          kind=unknown_outcome  in flight when a process died
    └── InternalError           kind=internal    a bug in the bridge; the message says so

httpx and aiohttp exceptions are translated into these at the shell that calls them
(``bridge.twilio.client``), aiokafka's into ``bridge.kafka.errors.BrokerError`` in ``bridge.kafka``,
so nothing above the adapters sees a third-party exception. ``to_info()`` gives the reply's
``error`` object; messages never contain secrets because they are built from names, not values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BridgeError",
    "CallNotSent",
    "CallTimeout",
    "CallTransportError",
    "ErrorDetail",
    "ErrorKind",
    "InternalError",
    "RequestInvalid",
    "TwilioCallFailed",
    "UnknownOperation",
    "UnknownOutcome",
    "kind_for_status",
]

ErrorKind = Literal[
    "validation",
    "auth",
    "not_found",
    "rate_limited",
    "twilio",
    "timeout",
    "transport",
    "unknown_outcome",
    "internal",
]


@dataclass(frozen=True)
class ErrorDetail:
    """Plain data for a reply's ``error`` object; ``envelopes.ErrorInfo`` is its wire form."""

    kind: ErrorKind
    message: str
    retryable: bool = False
    http_status: int | None = None
    twilio_code: int | None = None
    more_info: str | None = None
    missing: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    kind: ErrorKind = "internal"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_detail(self) -> ErrorDetail:
        """This error as a reply's ``error`` object."""
        return ErrorDetail(kind=self.kind, message=self.message, retryable=self.retryable)


class RequestInvalid(BridgeError):
    """The envelope is well-formed JSON but cannot become a valid Twilio call."""

    kind: ErrorKind = "validation"

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[str, ...] | list[str] = (),
        invalid: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.invalid = tuple(invalid)

    def to_detail(self) -> ErrorDetail:
        return ErrorDetail(
            kind=self.kind, message=self.message, missing=self.missing, invalid=self.invalid
        )


class UnknownCredential(RequestInvalid):
    """No account by the envelope's ``credential`` name (yet: an instance may be on its way)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, invalid=["credential"])


class UnknownOperation(RequestInvalid):
    """The operation is not in the catalog; ``suggestions`` holds the closest names."""

    def __init__(self, name: str, api: str | None, suggestions: list[str]) -> None:
        where = f" in api '{api}'" if api else ""
        hint = f"; did you mean: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(f"unknown operation '{name}'{where}{hint}", invalid=("operation",))
        self.name = name
        self.api = api
        self.suggestions = suggestions


def kind_for_status(status: int) -> ErrorKind:
    """The reply kind for a Twilio HTTP error status."""
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    return "twilio"


class TwilioCallFailed(BridgeError):
    """Twilio answered with an error status; fields come from Twilio's error body."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int,
        twilio_code: int | None = None,
        more_info: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.twilio_code = twilio_code
        self.more_info = more_info
        self.kind = kind_for_status(http_status)
        self.retryable = http_status == 429 or twilio_code == 20429 or http_status >= 500

    def to_detail(self) -> ErrorDetail:
        return ErrorDetail(
            kind=self.kind,
            message=self.message,
            retryable=self.retryable,
            http_status=self.http_status,
            twilio_code=self.twilio_code,
            more_info=self.more_info,
        )


class CallTimeout(BridgeError):
    """Twilio did not answer in time; the call may or may not have taken effect."""

    kind: ErrorKind = "timeout"
    retryable = True


class CallTransportError(BridgeError):
    """The connection failed while the request may already have been sent."""

    kind: ErrorKind = "transport"
    retryable = True


class CallNotSent(CallTransportError):
    """The connection failed before any byte of the request left (safe to retry any method)."""


class UnknownOutcome(BridgeError):
    """A call was in flight when its process died: it may or may not have reached Twilio."""

    kind: ErrorKind = "unknown_outcome"


class InternalError(BridgeError):
    """A bug in the bridge; the reply says so instead of the consumer crashing."""

    kind: ErrorKind = "internal"
