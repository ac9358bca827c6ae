"""Each refusal a broker can give at first contact becomes a sentence naming what to change."""

from __future__ import annotations

from bridge.kafka.refusals import (
    group_refusal,
    idempotence_refusal,
    topic_refusal,
    topic_refusals,
)


def test_an_idempotence_refusal_names_the_setting_and_what_turning_it_off_costs() -> None:
    text = idempotence_refusal("UnknownError")
    assert "InitProducerId answered UnknownError" in text
    assert "BRIDGE_KAFKA__IDEMPOTENT_PRODUCER=false" in text
    assert "a reply twice" in text
    assert "IdempotentWrite" in idempotence_refusal("ClusterAuthorizationFailedError")


def test_topic_refusals_name_each_topic_and_leave_passing_errors_alone() -> None:
    assert "create it" in (topic_refusal("t", 3) or "")
    assert "Describe and" in (topic_refusal("t", 29) or "")
    assert topic_refusal("t", 0) is None
    assert topic_refusal("t", 5) is None  # LEADER_NOT_AVAILABLE: a topic being created
    assert topic_refusals([("a", 0), ("b", 5)]) is None
    reason, text = topic_refusals([("a", 29), ("b", 3)]) or ("", "")
    assert reason == "TopicAuthorizationFailedError"
    assert "topic a" in text and "topic b" in text


def test_a_group_refusal_names_the_group_and_the_setting() -> None:
    text = group_refusal("g", "GroupAuthorizationFailedError") or ""
    assert "consumer group g" in text and "BRIDGE_KAFKA__GROUP_ID" in text
    assert group_refusal("g", "GroupCoordinatorNotAvailableError") is None
