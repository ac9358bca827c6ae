"""What to do when a broker refuses what the bridge's defaults need: one sentence per refusal.

Pure functions from a refusal (aiokafka's error class name or a Kafka error code, and the topic
or group it concerns) to a message that names the setting or the grant to change and why; the
start-up checks of :mod:`bridge.kafka.producer` put them in ``BrokerError.detail``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["group_refusal", "idempotence_refusal", "topic_refusal", "topic_refusals"]

UNKNOWN_TOPIC_OR_PARTITION = 3
TOPIC_AUTHORIZATION_FAILED = 29
# Kafka's error codes answered per topic that no wait will change.
_TOPIC_REASONS = {
    UNKNOWN_TOPIC_OR_PARTITION: "UnknownTopicOrPartitionError",
    TOPIC_AUTHORIZATION_FAILED: "TopicAuthorizationFailedError",
}
_AUTHORIZATION = ("ClusterAuthorizationFailedError", "TransactionalIdAuthorizationFailed")


def idempotence_refusal(reason: str) -> str:
    """The broker refused InitProducerId: it has no idempotent producer, or denies it to us."""
    if reason in _AUTHORIZATION:
        why, fix = "the bridge's user may not use it", "grant it IdempotentWrite on the cluster"
    else:
        why = f"InitProducerId answered {reason}: the broker does not support it"
        fix = "use a broker that does"
    return (
        f"the broker refused the idempotent producer ({why}): {fix}, or set "
        "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER=false to run without it; a producer retry may then "
        "write a reply twice (consumers keep the first reply of each id)"
    )


def topic_refusal(topic: str, code: int) -> str | None:
    """Why ``topic`` cannot be used, from the error code of a metadata answer; None when the
    code is no refusal (0) or one that waiting may clear (a leader being elected)."""
    if code == UNKNOWN_TOPIC_OR_PARTITION:
        return (
            f"topic {topic} does not exist and the broker does not create topics "
            "automatically (auto.create.topics.enable=false): create it, or point the "
            "BRIDGE_KAFKA__*_TOPIC(S) setting at one that exists"
        )
    if code == TOPIC_AUTHORIZATION_FAILED:
        return (
            f"the bridge's user is not authorised for topic {topic}: grant it Describe and "
            "Read (request topics) or Describe and Write (reply, error and event topics)"
        )
    return None


def topic_refusals(answers: Iterable[tuple[str, int]]) -> tuple[str, str] | None:
    """(reason, message) for every refused topic of (topic, error code) pairs, else None."""
    refused = [(code, text) for topic, code in answers if (text := topic_refusal(topic, code))]
    if not refused:
        return None
    return _TOPIC_REASONS[refused[0][0]], "; ".join(text for _, text in refused)


def group_refusal(group: str, reason: str) -> str | None:
    """Why the consumer group ``group`` cannot be used; None for a reason waiting may clear."""
    if reason == "GroupAuthorizationFailedError":
        return (
            f"the bridge's user is not authorised for consumer group {group}: grant it Read on "
            "the group, or set BRIDGE_KAFKA__GROUP_ID to a group it may use"
        )
    return None
