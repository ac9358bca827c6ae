"""The one place aiokafka's exceptions become the bridge's own: ``BrokerError``.

Kafka clients of the bridge run their broker calls inside ``kafka_errors()``, as httpx maps
httpcore's exceptions in one table; above ``bridge.kafka`` nothing catches an aiokafka type.
"""

from __future__ import annotations

from types import TracebackType

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


class kafka_errors:  # noqa: N801 - a context manager, named like contextlib.suppress
    """Translate an aiokafka error raised inside into ``BrokerError`` naming ``what`` failed.

    A class rather than ``@contextmanager``: it wraps every publish, and a generator-based
    context manager costs about twice as much per use.
    """

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, KafkaError):
            # Exception's own text: aiokafka's __str__ repeats the class name, already the reason.
            detail = Exception.__str__(exc)
            raise BrokerError(
                self._what, type(exc).__name__, detail, retriable=bool(exc.retriable)
            ) from exc
        if isinstance(exc, RuntimeError) and str(exc).startswith(_CLOSED_TRANSPORT):
            # uvloop refusing to write to a transport the broker closed, which aiokafka lets out
            # of a call (getmany) instead of its own connection error.
            raise BrokerError(self._what, "ConnectionLost", str(exc), retriable=True) from exc


_CLOSED_TRANSPORT = "unable to perform operation on"
