"""Which ids were seen in the last window of time. Pure: the clock is the caller's.

Ids are kept in arrival order with the time they expire, so forgetting the expired ones is a
walk from the oldest that stops at the first live one (one that arrived late may then linger
a little longer in memory, never in answers).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RedeliveryWindow"]


class RedeliveryWindow:
    """A set of ids that forgets each one ``window_s`` after it was added."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._expires: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expires)

    def add(self, key: str, seen_at: float) -> None:
        """Remember ``key`` as seen at ``seen_at`` (a later sighting extends it)."""
        expires = seen_at + self.window_s
        if expires <= self._expires.get(key, float("-inf")):
            return
        self._expires[key] = expires
        self._expires.move_to_end(key)

    def contains(self, key: str, now: float) -> bool:
        """True when ``key`` was seen less than ``window_s`` before ``now``."""
        self._forget(now)
        # Records from other replicas may arrive out of time order, so check this one too.
        return self._expires.get(key, float("-inf")) > now

    def _forget(self, now: float) -> None:
        expires = self._expires
        while expires:
            key, until = next(iter(expires.items()))
            if until > now:
                return
            del expires[key]
