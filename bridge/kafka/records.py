"""A consumed Kafka record as plain data, so pure code never depends on aiokafka types."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None
    # When this process took it from the consumer (time.monotonic()); 0.0 when not consumed.
    # Not part of what the record is: the same record read twice is still equal.
    taken_at: float = field(default=0.0, compare=False)

    @classmethod
    def of(cls, raw: Any) -> Record:
        """The plain data of a record as aiokafka hands it over (its ``ConsumerRecord``)."""
        return cls(
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key,
            value=raw.value,
            headers=tuple(raw.headers or ()),
            timestamp_ms=raw.timestamp,
            taken_at=time.monotonic(),
        )

    def text_headers(self) -> list[tuple[str, str]]:
        """Headers whose values are UTF-8, as text (others cannot be forwarded over HTTP)."""
        out = []
        for name, value in self.headers:
            try:
                out.append((name, value.decode()))
            except UnicodeDecodeError:
                continue
        return out
