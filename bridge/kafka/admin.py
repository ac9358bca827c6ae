"""Create the topics the bridge owns, when they are missing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

__all__ = ["create_topics"]

TOPIC_ALREADY_EXISTS = 36


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    configs: Mapping[str, str] | None = None,
    **client: Any,
) -> None:
    """Create topics (an existing one is left as it is); raises on any other broker error.

    ``client`` takes aiokafka connection arguments (security, TLS, SASL).
    """
    topics = [NewTopic(name, partitions, 1, topic_configs=dict(configs or {})) for name in names]
    admin = AIOKafkaAdminClient(**{"bootstrap_servers": bootstrap, **client})
    try:
        await admin.start()
        response = await admin.create_topics(topics)
    finally:
        await admin.close()
    # aiokafka returns per-topic error codes instead of raising.
    for topic, code, *rest in response.topic_errors:
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise for_code(code)(f"cannot create topic {topic}: {rest[0] if rest else ''}")
