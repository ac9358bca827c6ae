"""Instances as Kafka records: the compacted instances topic and the audit events. Pure.

The instances topic follows Kafka Connect's config topic: the key is the instance name, the
value its whole latest state (secrets sealed), a tombstone deletes it, and compaction keeps one
record per name. Audit events are CloudEvents saying who changed what and when; they carry the
names of the changed entries and the masked result, never a secret.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.contract.envelopes import utc_timestamp
from bridge.contract.events import CloudEvent
from bridge.instances.model import SECRET_FIELDS, Instance, changed_fields, masked
from bridge.instances.sealing import Sealer, SealError

__all__ = ["Actor", "AuditData", "RecordError", "audit_event", "decode_instance", "encode_instance"]

_FORMAT = 1
Action = Literal["created", "updated", "deleted"]


class RecordError(ValueError):
    """A record of the instances topic that cannot be read; says why, never a secret."""


class Actor(BaseModel):
    """Who asked for a change, as far as the admin API can tell."""

    model_config = ConfigDict(frozen=True)

    principal: str = Field(description="How the caller authenticated: 'admin-token'.")
    address: str | None = Field(default=None, description="The caller's IP address.")
    on_behalf_of: str | None = Field(
        default=None, description="X-On-Behalf-Of, as the caller declared it (not verified)."
    )
    user_agent: str | None = None


class AuditData(BaseModel):
    """The data of an audit event: one change of one instance, without any secret."""

    action: Action
    instance: str
    revision: int | None = Field(description="The revision after the change (null: deleted).")
    previous_revision: int | None = Field(description="The revision before (null: created).")
    actor: Actor
    changed: list[str] = Field(
        description="Dotted names of the entries that changed; secrets by name only."
    )
    instance_after: dict[str, Any] | None = Field(
        description="The instance after the change, secrets as '********' (null: deleted)."
    )


def encode_instance(instance: Instance, sealer: Sealer) -> bytes:
    """The record value: the instance with its secrets sealed under ``sealer``'s key."""
    document = instance.model_dump(mode="json", exclude_none=True)
    for name in SECRET_FIELDS:
        document["configuration"].pop(name, None)
    document["sealed"] = sealer.seal(instance.name, instance.configuration.secrets())
    document["format"] = _FORMAT
    return orjson.dumps(document)


def decode_instance(key: bytes, value: bytes, sealer: Sealer) -> Instance:
    """The instance in a record; raises ``RecordError`` (including ``SealError``'s reason)."""
    try:
        document = orjson.loads(value)
        name = key.decode()
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        raise RecordError("not an instance record (not JSON, or the key is not text)") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise RecordError("not an instance record of a known format")
    sealed = document.pop("sealed", "")
    document.pop("format")
    if document.get("name") != name or not isinstance(document.get("configuration"), dict):
        raise RecordError("the record's key and name differ, or it has no configuration")
    try:
        document["configuration"].update(sealer.open(name, str(sealed)))
    except SealError as exc:
        raise RecordError(str(exc)) from None
    try:
        return Instance.model_validate(document)
    except ValidationError as exc:
        raise RecordError(
            f"the stored instance is not valid ({exc.error_count()} problems)"
        ) from None


def audit_event(
    action: Action,
    name: str,
    before: Instance | None,
    after: Instance | None,
    actor: Actor,
    source: str,
) -> CloudEvent:
    """The CloudEvent recording one change; keyed by the instance name, so they stay in order."""
    data = AuditData(
        action=action,
        instance=name,
        revision=after.revision if after is not None else None,
        previous_revision=before.revision if before is not None else None,
        actor=actor,
        changed=changed_fields(before, after),
        instance_after=masked(after) if after is not None else None,
    )
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=source,
        type=f"com.twilio-kafka-bridge.instance.{action}",
        data=data.model_dump(mode="json"),
        subject=name,
        time=utc_timestamp(),
    )
