"""What each awaited event id settled to, remembered for a while. Pure: the clock is the caller's.

An id settles once (the first answer wins) and every webhook for it gets the same from then on:
Twilio's retries, here or, for answers read on behalf of another replica, after a load balancer
sent the retry to this one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

__all__ = ["Outcome", "Settled", "SettledWindow"]

Outcome = Literal["answered", "timeout", "invalid"]


@dataclass(frozen=True, slots=True)
class Settled:
    """How an id was answered: the service's TwiML, or (``twiml`` None) the family's fallback.

    ``here`` says a webhook on this replica waited for it; otherwise it is an answer read for
    an id another replica (or none) holds.
    """

    outcome: Outcome
    twiml: str | None
    here: bool


class SettledWindow:
    """Settled ids, each forgotten ``keep_s`` after it settled."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._entries: OrderedDict[str, tuple[float, Settled]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, event_id: str, now: float) -> Settled | None:
        """What ``event_id`` settled to, if it did within the window."""
        self._forget(now)
        entry = self._entries.get(event_id)
        return entry[1] if entry is not None else None

    def settle(self, event_id: str, settled: Settled, now: float) -> bool:
        """Remember ``settled`` for ``event_id``, unless it settled already (False then)."""
        if self.get(event_id, now) is not None:
            return False
        self._entries[event_id] = (now + self.keep_s, settled)
        return True

    def _forget(self, now: float) -> None:
        entries = self._entries
        while entries:
            until, _ = next(iter(entries.values()))
            if until > now:
                return
            entries.popitem(last=False)
