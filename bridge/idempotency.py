"""What happened before to a request id: never seen, started (outcome unknown) or answered.

Pure bookkeeping; the clock is the caller's. A request that changes something at Twilio
(POST, PUT, PATCH, DELETE) is recorded as *started* before it is sent and *answered* once its
reply exists, so a redelivery or a client's resend within the window is answered without
calling Twilio again. Ids are kept as 8-byte digests with where their answer lies in Kafka,
about 260 bytes each (measured with tracemalloc): the replies themselves stay in Kafka.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "Answered",
    "OutcomeIndex",
    "Outcomes",
    "Prior",
    "Started",
    "changes_state",
    "digest",
]

# GET and HEAD only read: sending them twice does no harm, so they are not recorded.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def changes_state(method: str) -> bool:
    """True for methods whose second call could do something twice at Twilio."""
    return method.upper() not in _SAFE_METHODS


def digest(request_id: str) -> int:
    """The id as a 64-bit number: collisions are vanishingly rare at any real volume."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Started:
    """Sent (or about to be) and not answered: a process died in between."""

    at: float


@dataclass(frozen=True, slots=True)
class Answered:
    """Answered; the first reply is in the outcome topic at ``partition``/``offset``."""

    at: float
    partition: int
    offset: int


Prior = Started | Answered
State = Literal["started", "answered"]


class OutcomeIndex:
    """Request ids of the last ``window_s`` seconds and what became of each."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        # digest -> (expires, partition, offset); offset -1 marks "started".
        self._entries: OrderedDict[int, tuple[float, int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def record(
        self, request_id: str, state: State, at: float, partition: int = -1, offset: int = -1
    ) -> None:
        """Note a start or an answer seen at ``at``; an answer is never undone by a start."""
        key = digest(request_id)
        known = self._entries.get(key)
        if state == "started":
            if known is not None and known[2] >= 0 and known[0] > at:
                return
            entry = (at + self.window_s, -1, -1)
        else:
            entry = (at + self.window_s, partition, offset)
        self._entries[key] = entry
        self._entries.move_to_end(key)

    def prior(self, request_id: str, now: float) -> Prior | None:
        """What happened to ``request_id`` within the window before ``now``, if anything."""
        self._forget(now)
        entry = self._entries.get(digest(request_id))
        if entry is None or entry[0] <= now:
            return None
        at = entry[0] - self.window_s
        return Started(at) if entry[2] < 0 else Answered(at, entry[1], entry[2])

    def _forget(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (expires, _, _) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[key]


class Outcomes(Protocol):
    """Where outcomes are recorded and looked up (``bridge.kafka.outcome_log.OutcomeLog``)."""

    async def check(self, request_id: str) -> Prior | None:
        """What became of ``request_id`` before, once any send of it here has finished."""

    async def begin(self, request_id: str) -> None:
        """Record that ``request_id`` is about to be sent."""

    async def finish(self, request_id: str, reply: bytes) -> None:
        """Record ``reply`` as the answer of ``request_id``."""

    def release(self, request_id: str) -> None:
        """End this process's send of ``request_id``."""

    async def first_reply(self, answered: Answered) -> bytes | None:
        """The reply recorded for an answered id (None if gone)."""
