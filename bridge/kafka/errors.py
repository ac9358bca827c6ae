"""The one place aiokafka's exceptions become the bridge's own: ``BrokerError``.

Kafka clients of the bridge run their broker calls inside ``kafka_errors()``, as httpx maps
httpcore's exceptions in one table; above ``bridge.kafka`` nothing catches an aiokafka type.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import KafkaError

__all__ = ["BrokerError", "kafka_errors"]


class BrokerError(Exception):
    """Kafka did not do what was asked: unreachable, too slow, or refused.

    ``reason`` is aiokafka's error class name (``KafkaConnectionError``, ``KafkaTimeoutError``,
    ``UnknownError``…): it names what happened and never carries a secret. ``retriable`` is
    aiokafka's own verdict on whether the same call may succeed later.
    """

    def __init__(self, what: str, reason: str, detail: str = "", *, retriable: bool) -> None:
        super().__init__(f"{what}: {reason}" + (f": {detail}" if detail else ""))
        self.what = what
        self.reason = reason
        self.detail = detail
        self.retriable = retriable


@contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Translate an aiokafka error raised inside into ``BrokerError`` naming ``what`` failed."""
    try:
        yield
    except KafkaError as exc:
        raise BrokerError(
            what, type(exc).__name__, str(exc), retriable=bool(exc.retriable)
        ) from exc
