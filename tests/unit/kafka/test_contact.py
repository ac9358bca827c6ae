"""First contact: no broker listening is a retriable BrokerError naming each server and why."""

from __future__ import annotations

import pytest

from bridge.config import KafkaSettings
from bridge.kafka.contact import reach_broker
from bridge.kafka.errors import BrokerError
from bridge.tooling.local.process import free_port


async def test_no_broker_listening_is_retriable_and_names_every_server() -> None:
    ports = [free_port(), free_port()]
    servers = ",".join(f"127.0.0.1:{p}" for p in ports)
    with pytest.raises(BrokerError) as raised:
        await reach_broker(KafkaSettings(bootstrap_servers=servers), 2.0)
    assert raised.value.retriable and raised.value.reason == "KafkaConnectionError"
    for port in ports:
        assert f"127.0.0.1:{port} Connection refused" in raised.value.detail
