"""Instances' validation, masking and merge patches (``bridge.instances.model``)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.instances.model import (
    MASK,
    Instance,
    InstanceSpec,
    Problem,
    changed_fields,
    masked,
    merge_patch,
    validate_spec,
)
from tests.helpers import (
    ACCOUNT,
    API_KEY_SECRET,
    API_KEY_SID,
    INSTANCE_ACCOUNT,
    INSTANCE_AUTH_TOKEN,
    instance_spec,
)

STAMPS = {"revision": 1, "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "x"}


def valid(document: Any, stored: Instance | None = None) -> InstanceSpec:
    result = validate_spec(document, stored)
    assert isinstance(result, InstanceSpec), result
    return result


def problems(document: Any, stored: Instance | None = None) -> list[Problem]:
    result = validate_spec(document, stored)
    assert isinstance(result, list), result
    return result


def stored(document: dict[str, Any]) -> Instance:
    return Instance.model_validate({**document, **STAMPS})


# --- validation ----------------------------------------------------------------------------


def test_a_valid_spec_keeps_its_secret_and_defaults_its_events() -> None:
    result = valid(instance_spec())
    config = result.configuration
    assert (
        config.auth_token is not None
        and config.auth_token.get_secret_value() == INSTANCE_AUTH_TOKEN
    )
    assert (config.events.enabled, config.events.mechanism) == (True, "webhook")
    assert config.events.resources == ["messages"]
    assert result.tags == ["eu"]


def test_every_problem_is_named_at_once_by_its_dotted_field() -> None:
    document = {
        "name": "acme",
        "configuration": {
            "account_sid": "AC-not-a-sid",
            "region": "Europe",
            "colour": INSTANCE_AUTH_TOKEN,  # an unknown entry whose value is a secret
            "events": {"mechanism": "carrier-pigeon"},
        },
        "tags": ["ok", ""],
    }
    found = problems(document)
    invalid = {p.field for p in found if not p.missing}
    missing = {p.field for p in found if p.missing}
    assert invalid == {
        "configuration.account_sid",
        "configuration.region",
        "configuration.colour",
        "configuration.events.mechanism",
        "tags",
    }
    assert missing == {"configuration.auth_token"}
    assert next(p for p in found if p.field == "configuration.colour").message == (
        "not a known entry"
    )
    for problem in found:
        for value in (INSTANCE_AUTH_TOKEN, "AC-not-a-sid", "Europe", "carrier-pigeon"):
            assert value not in problem.message


def test_a_secret_in_a_bad_field_is_never_echoed() -> None:
    for field in ("region", "edge", "base_url", "account_sid", "api_key_sid"):
        found = problems(instance_spec(**{field: INSTANCE_AUTH_TOKEN}))
        assert f"configuration.{field}" in [p.field for p in found]
        assert all(INSTANCE_AUTH_TOKEN not in p.message for p in found)


def test_missing_entries_are_missing_not_invalid() -> None:
    found = problems({"configuration": {}})
    assert {(p.field, p.missing) for p in found} == {
        ("name", True),
        ("configuration.account_sid", True),
        ("configuration.auth_token", True),
    }


@pytest.mark.parametrize(
    ("credentials", "missing"),
    [
        ({"api_key_sid": API_KEY_SID}, "configuration.api_key_secret"),
        ({"api_key_secret": API_KEY_SECRET}, "configuration.api_key_sid"),
        ({}, "configuration.auth_token"),
    ],
)
def test_credentials_are_an_auth_token_or_a_whole_api_key(
    credentials: dict[str, str], missing: str
) -> None:
    document = {"name": "acme", "configuration": {"account_sid": INSTANCE_ACCOUNT, **credentials}}
    assert [(p.field, p.missing) for p in problems(document)] == [(missing, True)]


def test_an_api_key_alone_is_enough() -> None:
    document = {
        "name": "acme",
        "configuration": {
            "account_sid": INSTANCE_ACCOUNT,
            "api_key_sid": API_KEY_SID,
            "api_key_secret": API_KEY_SECRET,
        },
    }
    assert valid(document).configuration.secrets() == {"api_key_secret": API_KEY_SECRET}


@pytest.mark.parametrize("document", [[], "acme", None, 3])
def test_a_body_that_is_not_an_object_is_one_problem_about_the_body(document: Any) -> None:
    [problem] = problems(document)
    assert problem.field == "(body)"


def test_events_topics_take_environment_spelling_and_refuse_unknown_families() -> None:
    result = valid(instance_spec(events={"topics": {"message_status": "acme.status"}}))
    assert result.configuration.events.topics == {"message-status": "acme.status"}
    [problem] = problems(instance_spec(events={"topics": {"faxes": "t"}}))
    assert problem.field == "configuration.events.topics"


def test_resources_may_not_repeat() -> None:
    [problem] = problems(instance_spec(events={"resources": ["messages", "messages"]}))
    assert problem.field == "configuration.events.resources"


def test_base_url_loses_its_trailing_slash() -> None:
    assert (
        valid(instance_spec(base_url="http://mock:4010/")).configuration.base_url
        == "http://mock:4010"
    )


# --- masking ---------------------------------------------------------------------------------


def test_masked_shows_the_mask_for_every_secret_that_is_set() -> None:
    document = instance_spec(api_key_sid=API_KEY_SID, api_key_secret=API_KEY_SECRET)
    view = masked(stored(document))
    assert view["configuration"]["auth_token"] == MASK
    assert view["configuration"]["api_key_secret"] == MASK
    assert view["configuration"]["api_key_sid"] == API_KEY_SID
    assert view["revision"] == 1
    text = repr(view)
    assert INSTANCE_AUTH_TOKEN not in text and API_KEY_SECRET not in text


def test_masked_leaves_unset_secrets_out() -> None:
    view = masked(valid(instance_spec()))
    assert "api_key_secret" not in view["configuration"]
    assert "region" not in view["configuration"]


def test_the_mask_keeps_the_stored_secret() -> None:
    before = stored(instance_spec())
    document = instance_spec(auth_token=MASK, region="ie1")
    result = valid(document, before)
    assert result.configuration.auth_token is not None
    assert result.configuration.auth_token.get_secret_value() == INSTANCE_AUTH_TOKEN
    assert result.configuration.region == "ie1"


def test_a_new_secret_replaces_the_stored_one() -> None:
    result = valid(instance_spec(auth_token="tok-new"), stored(instance_spec()))
    assert result.configuration.auth_token is not None
    assert result.configuration.auth_token.get_secret_value() == "tok-new"


def test_the_mask_on_create_is_refused() -> None:
    [problem] = problems(instance_spec(auth_token=MASK))
    assert (problem.field, problem.missing) == ("configuration.auth_token", False)
    assert "keeps a stored secret" in problem.message


def test_the_mask_does_not_carry_a_secret_over_to_another_account() -> None:
    # The old token would be sent as the new account's: Twilio would answer 401 much later.
    [problem] = problems(
        instance_spec(account_sid=ACCOUNT, auth_token=MASK), stored(instance_spec())
    )
    assert problem.field == "configuration.auth_token" and "send the secret" in problem.message


def test_the_mask_does_not_carry_a_key_secret_over_to_another_key() -> None:
    before = stored(instance_spec(api_key_sid=API_KEY_SID, api_key_secret=API_KEY_SECRET))
    kept = valid(instance_spec(api_key_sid=API_KEY_SID, api_key_secret=MASK), before)
    assert kept.configuration.api_key_secret is not None
    other = instance_spec(api_key_sid="SK" + "d" * 32, api_key_secret=MASK)
    [problem] = problems(other, before)
    assert problem.field == "configuration.api_key_secret"


def test_a_topic_override_must_be_a_kafka_topic_name() -> None:
    [problem] = problems(instance_spec(events={"topics": {"messages": "no spaces/slashes"}}))
    assert problem.field == "configuration.events.topics.messages"


def test_the_mask_for_a_secret_that_was_never_stored_is_refused() -> None:
    document = instance_spec(api_key_sid=API_KEY_SID, api_key_secret=MASK)
    [problem] = problems(document, stored(instance_spec()))
    assert problem.field == "configuration.api_key_secret"


# --- merge patch (RFC 7396) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7396 appendix A, in part
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7396(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_merge_patch_leaves_its_target_alone() -> None:
    target = {"a": {"b": 1}}
    merge_patch(target, {"a": {"b": None}})
    assert target == {"a": {"b": 1}}


# --- changed fields --------------------------------------------------------------------------


def test_changed_fields_name_a_changed_token_without_its_value() -> None:
    before = stored(instance_spec())
    after = stored(instance_spec(auth_token="tok-rotated"))
    assert changed_fields(before, after) == ["configuration.auth_token"]


def test_changed_fields_are_dotted_and_nested() -> None:
    before = stored(instance_spec())
    after = stored({**instance_spec(events={"mechanism": "polling"}, region="ie1"), "tags": []})
    assert changed_fields(before, after) == [
        "configuration.events.mechanism",
        "configuration.region",
        "tags",
    ]


def test_nothing_changed_is_no_field() -> None:
    assert changed_fields(stored(instance_spec()), stored(instance_spec())) == []


def test_a_new_instance_changes_every_top_level_entry() -> None:
    assert changed_fields(None, stored(instance_spec())) == ["configuration", "name", "tags"]
