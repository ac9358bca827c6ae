"""The instance log's write order: a stored change is audited even when reading it back fails.

No broker here (tests/integration/test_instances.py drives the real one); the publisher is a
stand-in that records what was published.
"""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from bridge.config import AdminSettings, KafkaSettings, TwilioSettings
from bridge.instances.changes import Change
from bridge.instances.log import InstanceLog
from bridge.instances.records import Actor
from bridge.twilio.accounts import Accounts
from tests.helpers import INSTANCE_ACCOUNT, INSTANCE_AUTH_TOKEN, stored_instance


class Published:
    """Publisher.publish's contract, acknowledging at once."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    async def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: object
    ) -> tuple[int, int]:
        self.topics.append(topic)
        return 0, len(self.topics) - 1


async def test_a_stored_change_is_audited_even_when_reading_it_back_times_out() -> None:
    admin = AdminSettings(encryption_key=SecretStr(base64.b64encode(bytes(32)).decode()))
    published = Published()
    log = InstanceLog(KafkaSettings(), admin, TwilioSettings(), Accounts(), published)  # type: ignore[arg-type]

    async def slow_broker() -> None:
        raise TimeoutError

    log.latest = slow_broker  # type: ignore[method-assign]
    after = stored_instance("acme", INSTANCE_ACCOUNT, INSTANCE_AUTH_TOKEN)
    with pytest.raises(TimeoutError):
        await log.write(Change("created", "acme", None, after), Actor(principal="admin-token"))
    assert published.topics == [admin.topic, admin.audit_topic]
