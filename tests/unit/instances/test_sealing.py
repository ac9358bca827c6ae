"""Sealed secrets and instance records (``bridge.instances.sealing``, ``.records``)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from bridge.instances.model import MASK, Instance
from bridge.instances.records import (
    Actor,
    RecordError,
    audit_event,
    decode_instance,
    encode_instance,
)
from bridge.instances.sealing import Sealer, SealError
from tests.helpers import (
    API_KEY_SECRET,
    API_KEY_SID,
    INSTANCE_ACCOUNT,
    INSTANCE_AUTH_TOKEN,
    stored_instance,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NEW_TOKEN = "tok-ROTATED-0b1c2d"


def instance(revision: int = 1, **configuration: Any) -> Instance:
    token = configuration.pop("auth_token", INSTANCE_AUTH_TOKEN)
    return stored_instance(
        "acme", INSTANCE_ACCOUNT, token, revision=revision, tags=("eu",), **configuration
    )


def encodings(secret: str) -> list[bytes]:
    """The secret as it could leak: plain, and base64 of it (standard and URL-safe)."""
    raw = secret.encode()
    b64 = [base64.b64encode(raw), base64.urlsafe_b64encode(raw)]
    return [raw, *b64, *(b.rstrip(b"=") for b in b64)]


# --- sealing ---------------------------------------------------------------------------------


def test_sealed_secrets_open_again() -> None:
    sealer = Sealer(KEY)
    secrets = {"auth_token": INSTANCE_AUTH_TOKEN, "api_key_secret": API_KEY_SECRET}
    sealed = sealer.seal("acme", secrets)
    assert sealed.startswith(f"v1.{sealer.key_id}.")
    assert Sealer(KEY).open("acme", sealed) == secrets


def test_each_seal_uses_a_fresh_nonce() -> None:
    sealer = Sealer(KEY)
    assert sealer.seal("acme", {"auth_token": INSTANCE_AUTH_TOKEN}) != sealer.seal(
        "acme", {"auth_token": INSTANCE_AUTH_TOKEN}
    )


def test_another_key_is_named_by_both_key_ids() -> None:
    sealed = Sealer(KEY).seal("acme", {"auth_token": INSTANCE_AUTH_TOKEN})
    other = Sealer(OTHER_KEY)
    with pytest.raises(SealError) as info:
        other.open("acme", sealed)
    message = str(info.value)
    assert Sealer(KEY).key_id in message and other.key_id in message
    assert Sealer(KEY).key_id != other.key_id
    assert INSTANCE_AUTH_TOKEN not in message


def test_a_key_id_is_no_part_of_the_key() -> None:
    key_id = Sealer(KEY).key_id
    assert len(key_id) == 12
    assert key_id not in KEY.hex() and key_id.encode() not in base64.b64encode(KEY)


def test_altered_text_does_not_open() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("acme", {"auth_token": INSTANCE_AUTH_TOKEN})
    last = sealed[-2]
    altered = sealed[:-2] + ("A" if last != "A" else "B") + sealed[-1]
    with pytest.raises(SealError, match="altered"):
        sealer.open("acme", altered)


def test_secrets_sealed_for_another_name_do_not_open() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("acme", {"auth_token": INSTANCE_AUTH_TOKEN})
    with pytest.raises(SealError, match="another name"):
        sealer.open("globex", sealed)


@pytest.mark.parametrize("sealed", ["", "v2.abc.def", "garbage", "v1"])
def test_unknown_formats_say_so(sealed: str) -> None:
    with pytest.raises(SealError):
        Sealer(KEY).open("acme", sealed)


def test_truncated_text_does_not_open() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("acme", {"auth_token": INSTANCE_AUTH_TOKEN})
    with pytest.raises(SealError):
        sealer.open("acme", sealed[: len(sealer.key_id) + 8])


# --- records ---------------------------------------------------------------------------------


def test_a_record_holds_no_secret_in_any_readable_form() -> None:
    sealer = Sealer(KEY)
    value = encode_instance(
        instance(api_key_sid=API_KEY_SID, api_key_secret=API_KEY_SECRET), sealer
    )
    for secret in (INSTANCE_AUTH_TOKEN, API_KEY_SECRET):
        for leak in encodings(secret):
            assert leak not in value
    document = orjson.loads(value)
    assert "auth_token" not in document["configuration"]
    assert document["sealed"].startswith("v1.")
    assert document["format"] == 1


def test_a_record_reads_back_as_the_same_instance() -> None:
    sealer = Sealer(KEY)
    original = instance(region="ie1", events={"mechanism": "polling"})
    decoded = decode_instance(b"acme", encode_instance(original, sealer), sealer)
    assert decoded == original
    assert decoded.configuration.auth_token is not None
    assert decoded.configuration.auth_token.get_secret_value() == INSTANCE_AUTH_TOKEN


def test_a_record_under_another_key_says_which_keys() -> None:
    value = encode_instance(instance(), Sealer(KEY))
    with pytest.raises(RecordError) as info:
        decode_instance(b"acme", value, Sealer(OTHER_KEY))
    assert Sealer(OTHER_KEY).key_id in str(info.value)


def test_a_record_copied_under_another_key_name_does_not_open() -> None:
    sealer = Sealer(KEY)
    document = orjson.loads(encode_instance(instance(), sealer))
    document["name"] = "globex"
    with pytest.raises(RecordError, match="another name"):
        decode_instance(b"globex", orjson.dumps(document), sealer)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"acme", b"not json"),
        (b"\xff", b"{}"),
        (b"acme", b"[]"),
        (b"acme", b'{"format": 2}'),
        (b"other", None),  # the key and the name differ
    ],
)
def test_unreadable_records_are_record_errors(key: bytes, value: bytes | None) -> None:
    sealer = Sealer(KEY)
    with pytest.raises(RecordError):
        decode_instance(key, value or encode_instance(instance(), sealer), sealer)


def test_an_invalid_stored_instance_is_a_record_error_without_its_values() -> None:
    sealer = Sealer(KEY)
    document = orjson.loads(encode_instance(instance(), sealer))
    document["configuration"]["region"] = "Not A Region"
    with pytest.raises(RecordError, match="1 problems") as info:
        decode_instance(b"acme", orjson.dumps(document), sealer)
    assert "Not A Region" not in str(info.value)


# --- audit events ----------------------------------------------------------------------------

ACTOR = Actor(
    principal="admin-token", address="10.0.0.9", on_behalf_of="alice", user_agent="curl/8"
)


def test_an_update_event_says_who_changed_what_without_secrets() -> None:
    before, after = instance(), instance(revision=2, auth_token=NEW_TOKEN, region="ie1")
    event = audit_event("updated", "acme", before, after, ACTOR, "twilio-kafka-bridge/test")
    data = event.data
    assert event.type == "com.twilio-kafka-bridge.instance.updated"
    assert event.key == b"acme"
    assert data["action"] == "updated"
    assert (data["revision"], data["previous_revision"]) == (2, 1)
    assert data["actor"] == {
        "principal": "admin-token",
        "address": "10.0.0.9",
        "on_behalf_of": "alice",
        "user_agent": "curl/8",
    }
    assert data["changed"] == ["configuration.auth_token", "configuration.region"]
    assert data["instance_after"]["configuration"]["auth_token"] == MASK
    value = event.value() + b"".join(v for _, v in event.headers())
    for secret in (INSTANCE_AUTH_TOKEN, NEW_TOKEN):
        for leak in encodings(secret):
            assert leak not in value


def test_a_delete_event_has_no_after_and_no_invented_actor_parts() -> None:
    event = audit_event("deleted", "acme", instance(), None, Actor(principal="admin-token"), "s")
    data = event.data
    assert (data["revision"], data["previous_revision"], data["instance_after"]) == (None, 1, None)
    assert {k: v for k, v in data["actor"].items() if v is not None} == {"principal": "admin-token"}
    assert INSTANCE_AUTH_TOKEN.encode() not in event.value()
