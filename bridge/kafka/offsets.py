"""Which offset of a partition may be committed while records finish out of order.

Records of one partition are processed concurrently, so they finish in any order; the
committed offset may only move past a record once it and every record before it are done
(at-least-once). Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PartitionOffsets"]


class PartitionOffsets:
    """Outstanding offsets of one partition, in the order they were fetched."""

    __slots__ = ("_done", "_pending", "_committable", "_committed")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._committable: int | None = None
        self._committed: int | None = None

    def __len__(self) -> int:
        """Records fetched and not yet below the commit point."""
        return len(self._pending)

    def add(self, offset: int) -> None:
        """Record that ``offset`` was fetched; offsets must arrive in increasing order."""
        if self._pending and offset <= self._pending[-1]:
            raise ValueError(f"offset {offset} after {self._pending[-1]}")
        self._pending.append(offset)

    def complete(self, offset: int) -> None:
        """Record that ``offset`` is fully handled (reply acknowledged by Kafka)."""
        self._done.add(offset)
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            head = pending.popleft()
            done.discard(head)
            self._committable = head + 1

    def committable(self) -> int | None:
        """The offset to commit now (Kafka's 'next record to read'), or None if nothing new."""
        if self._committable is None or self._committable == self._committed:
            return None
        return self._committable

    def committed(self, offset: int) -> None:
        """Record that the broker accepted a commit of ``offset``."""
        self._committed = offset
