"""Create the topics the bridge owns, when they are missing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from bridge.config import KafkaSettings
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.errors import kafka_errors

__all__ = ["create_topic", "create_topics"]

TOPIC_ALREADY_EXISTS = 36


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    configs: Mapping[str, str] | None = None,
    **client: Any,
) -> None:
    """Create topics (an existing one is left as it is); raises ``BrokerError`` on any other
    broker error.

    ``client`` takes aiokafka connection arguments (security, TLS, SASL).
    """
    names = list(names)
    topics = [NewTopic(name, partitions, 1, topic_configs=dict(configs or {})) for name in names]
    admin = AIOKafkaAdminClient(**{"bootstrap_servers": bootstrap, **client})
    with kafka_errors(f"creating topics {', '.join(names)}"):
        try:
            await admin.start()
            response = await admin.create_topics(topics)
        finally:
            await admin.close()
        # aiokafka returns per-topic error codes instead of raising.
        for topic, code, *rest in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise for_code(code)(f"cannot create topic {topic}: {rest[0] if rest else ''}")


async def create_topic(
    settings: KafkaSettings,
    name: str,
    partitions: int = 1,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create one topic of the bridge's own over its connection (security, TLS, SASL), if it
    is missing; raises ``BrokerError`` on any other broker error."""
    await create_topics(
        settings.bootstrap_servers, [name], partitions, configs, **connection_kwargs(settings)
    )
