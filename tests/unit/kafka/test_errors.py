"""aiokafka's exceptions become ``BrokerError`` inside ``kafka_errors()``; nothing else changes."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    for_code,
)

from bridge.kafka.errors import BrokerError, kafka_errors


@pytest.mark.parametrize(
    ("raised", "message", "retriable"),
    [
        (
            KafkaConnectionError("Unable to bootstrap from [localhost:9]"),
            "starting the producer: KafkaConnectionError: Unable to bootstrap from [localhost:9]",
            True,
        ),
        (
            TopicAuthorizationFailedError(),
            "starting the producer: TopicAuthorizationFailedError",
            False,
        ),
        (
            for_code(44)("cannot create topic t: refused"),
            "starting the producer: PolicyViolationError: cannot create topic t: refused",
            False,
        ),
        (KafkaError("no partitions"), "starting the producer: KafkaError: no partitions", False),
    ],
    ids=["connection", "authorization", "from a code", "the base class"],
)
def test_an_aiokafka_error_becomes_a_broker_error(
    raised: KafkaError, message: str, retriable: bool
) -> None:
    with pytest.raises(BrokerError) as caught:
        with kafka_errors("starting the producer"):
            raise raised
    error = caught.value
    assert str(error) == message
    assert (error.what, error.reason) == ("starting the producer", type(raised).__name__)
    assert error.retriable is retriable
    assert error.__cause__ is raised  # the original stays reachable for a traceback


CLOSED = (
    "unable to perform operation on <TCPTransport closed=True reading=False>; the handler is closed"
)


def test_a_connection_the_broker_dropped_is_a_retriable_broker_error() -> None:
    raised = RuntimeError(CLOSED)
    with pytest.raises(BrokerError) as caught:
        with kafka_errors("fetching requests"):
            raise raised
    error = caught.value
    assert (error.what, error.reason, error.retriable) == (
        "fetching requests",
        "ConnectionLost",
        True,
    )
    assert error.__cause__ is raised


@pytest.mark.parametrize(
    "raised",
    [
        ValueError("bad"),
        RuntimeError("bad"),
        ConnectionRefusedError(111, "refused"),  # contact.py names each server's own
        asyncio.CancelledError(),
        TimeoutError(),
    ],
    ids=repr,
)
def test_other_exceptions_pass_unchanged(raised: BaseException) -> None:
    with pytest.raises(type(raised)) as caught:
        with kafka_errors("fetching"):
            raise raised
    assert caught.value is raised


def test_nothing_raised_nothing_changed() -> None:
    with kafka_errors("fetching"):
        value = 1
    assert value == 1
