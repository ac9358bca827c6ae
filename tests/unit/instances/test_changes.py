"""What each instances API call would change (``bridge.instances.changes``)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.instances import changes
from bridge.instances.changes import Change, Refusal, Rules
from bridge.instances.model import MASK, Instance, masked
from tests.helpers import API_KEY_SID, INSTANCE_AUTH_TOKEN, instance_spec

RULES = Rules(
    is_static=lambda name: name == "default",
    default_refresh_interval_s=15,
    max_refresh_interval_s=2700,
)


def change(result: Change | Refusal) -> Change:
    assert isinstance(result, Change), result
    return result


def refusal(result: Change | Refusal, status: int) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.status == status, result
    return result


def created(document: dict[str, Any] | None = None) -> Instance:
    after = change(changes.create(document or instance_spec(), None, RULES)).after
    assert after is not None
    return after


def token_of(instance: Instance | None) -> str | None:
    assert instance is not None
    secret = instance.configuration.auth_token
    return secret.get_secret_value() if secret is not None else None


# --- create ----------------------------------------------------------------------------------


def test_create_stamps_revision_1() -> None:
    result = change(changes.create(instance_spec(), None, RULES))
    assert (result.action, result.name, result.before) == ("created", "acme", None)
    assert result.after is not None and result.after.revision == 1
    assert result.after.created_at == result.after.updated_at


def test_create_of_an_existing_name_is_a_conflict() -> None:
    refused = refusal(changes.create(instance_spec(), created(), RULES), 409)
    assert refused.kind == "conflict"


def test_create_of_a_static_credentials_name_is_a_conflict() -> None:
    refused = refusal(changes.create(instance_spec("default"), None, RULES), 409)
    assert "settings" in refused.message


def test_an_invalid_body_is_refused_with_every_problem() -> None:
    document = instance_spec(region="Europe", events={"mechanism": "pull"})
    refused = refusal(changes.create(document, None, RULES), 400)
    assert refused.kind == "validation"
    assert {p.field for p in refused.problems} == {
        "configuration.region",
        "configuration.events.mechanism",
    }
    assert "configuration.region" in refused.message and "Europe" not in refused.message


def test_the_mask_on_create_is_refused() -> None:
    refused = refusal(changes.create(instance_spec(auth_token=MASK), None, RULES), 400)
    assert [p.field for p in refused.problems] == ["configuration.auth_token"]


# --- the polling interval rule ---------------------------------------------------------------


def test_a_polling_interval_over_the_maximum_is_refused() -> None:
    document = instance_spec(events={"mechanism": "polling", "refresh_interval_s": 3600})
    refused = refusal(changes.create(document, None, RULES), 400)
    [problem] = refused.problems
    assert problem.field == "configuration.events.refresh_interval_s"
    assert "2700" in problem.message


def test_the_pollers_default_interval_counts_when_none_is_given() -> None:
    strict = Rules(lambda _: False, default_refresh_interval_s=60, max_refresh_interval_s=30)
    document = instance_spec(events={"mechanism": "polling"})
    refusal(changes.create(document, None, strict), 400)
    change(
        changes.create(
            instance_spec(events={"mechanism": "polling", "refresh_interval_s": 20}), None, strict
        )
    )


def test_a_long_interval_is_fine_for_webhook_instances() -> None:
    document = instance_spec(events={"mechanism": "webhook", "refresh_interval_s": 3600})
    change(changes.create(document, None, RULES))


# --- replace (PUT) ---------------------------------------------------------------------------


def test_put_creates_when_absent() -> None:
    result = change(changes.replace("acme", instance_spec(), None, RULES, None))
    assert result.action == "created"
    assert result.after is not None and result.after.revision == 1


def test_put_takes_the_name_from_the_path() -> None:
    document = instance_spec()
    del document["name"]
    result = change(changes.replace("acme", document, None, RULES, None))
    assert result.after is not None and result.after.name == "acme"


def test_put_with_another_name_in_the_body_is_refused() -> None:
    refused = refusal(changes.replace("acme", instance_spec("globex"), created(), RULES, None), 400)
    assert [p.field for p in refused.problems] == ["name"]


def test_put_increments_the_revision_and_keeps_created_at() -> None:
    current = created()
    current = current.model_copy(update={"created_at": "2020-01-01T00:00:00.000Z"})
    result = change(changes.replace("acme", instance_spec(region="ie1"), current, RULES, None))
    assert result.action == "updated" and result.before is current
    assert result.after is not None
    assert (result.after.revision, result.after.created_at) == (2, "2020-01-01T00:00:00.000Z")
    assert result.after.updated_at != current.created_at
    assert result.after.configuration.region == "ie1"


def test_put_with_the_mask_keeps_the_stored_token() -> None:
    result = change(changes.replace("acme", instance_spec(auth_token=MASK), created(), RULES, None))
    assert token_of(result.after) == INSTANCE_AUTH_TOKEN


def test_what_get_returned_can_be_put_back() -> None:
    current = created()
    result = change(changes.replace("acme", masked(current), current, RULES, '"1"'))
    assert result.after is not None and result.after.revision == 2
    assert token_of(result.after) == INSTANCE_AUTH_TOKEN


def test_put_of_a_static_credentials_name_is_a_conflict() -> None:
    refusal(changes.replace("default", instance_spec("default"), None, RULES, None), 409)


# --- If-Match --------------------------------------------------------------------------------


@pytest.mark.parametrize("if_match", ['"1"', "1", 'W/"1"', '"7", "1"', "*"])
def test_if_match_of_the_current_revision_or_star_passes(if_match: str) -> None:
    change(changes.replace("acme", instance_spec(), created(), RULES, if_match))
    change(changes.delete("acme", created(), if_match))


@pytest.mark.parametrize("if_match", ['"2"', '"0"', "", 'W/"11"'])
def test_if_match_of_another_revision_is_a_failed_precondition(if_match: str) -> None:
    current = created()
    refused = refusal(changes.replace("acme", instance_spec(), current, RULES, if_match), 412)
    assert refused.kind == "precondition_failed" and "revision 1" in refused.message
    refusal(changes.patch("acme", {"tags": []}, current, RULES, if_match), 412)
    refusal(changes.delete("acme", current, if_match), 412)


def test_if_match_star_fails_when_there_is_no_instance() -> None:
    refused = refusal(changes.replace("acme", instance_spec(), None, RULES, "*"), 412)
    assert "no instance" in refused.message


def test_if_match_is_checked_before_the_body() -> None:
    refusal(changes.replace("acme", {"nonsense": 1}, created(), RULES, '"9"'), 412)


# --- patch (JSON Merge Patch) ----------------------------------------------------------------


def test_patch_of_a_missing_instance_is_not_found() -> None:
    refused = refusal(changes.patch("acme", {"tags": []}, None, RULES, None), 404)
    assert refused.kind == "not_found"


def test_patch_merges_nested_objects_and_keeps_the_secret() -> None:
    current = created(
        instance_spec(region="ie1", events={"mechanism": "webhook", "resources": ["calls"]})
    )
    result = change(
        changes.patch(
            "acme", {"configuration": {"events": {"mechanism": "polling"}}}, current, RULES, None
        )
    )
    after = result.after
    assert after is not None and after.revision == 2
    assert after.configuration.events.mechanism == "polling"
    assert after.configuration.events.resources == ["calls"]  # merged, not replaced
    assert after.configuration.region == "ie1"
    assert token_of(after) == INSTANCE_AUTH_TOKEN


def test_patch_null_removes_an_entry() -> None:
    current = created(instance_spec(region="ie1", edge="dublin"))
    result = change(changes.patch("acme", {"configuration": {"edge": None}}, current, RULES, None))
    assert result.after is not None
    assert (result.after.configuration.region, result.after.configuration.edge) == ("ie1", None)


def test_patch_switches_from_an_auth_token_to_an_api_key() -> None:
    patch = {
        "configuration": {"auth_token": None, "api_key_sid": API_KEY_SID, "api_key_secret": "k-s"}
    }
    result = change(changes.patch("acme", patch, created(), RULES, None))
    config = result.after.configuration if result.after is not None else None
    assert config is not None and config.auth_token is None
    assert config.api_key_secret is not None and config.api_key_secret.get_secret_value() == "k-s"


def test_patch_that_removes_every_credential_is_refused() -> None:
    refused = refusal(
        changes.patch("acme", {"configuration": {"auth_token": None}}, created(), RULES, None), 400
    )
    assert [(p.field, p.missing) for p in refused.problems] == [("configuration.auth_token", True)]


@pytest.mark.parametrize("document", [[], "x", None, 1])
def test_a_patch_is_an_object(document: Any) -> None:
    refusal(changes.patch("acme", document, created(), RULES, None), 400)


def test_patch_may_not_rename() -> None:
    refusal(changes.patch("acme", {"name": "globex"}, created(), RULES, None), 400)


# --- delete ----------------------------------------------------------------------------------


def test_delete_of_a_missing_instance_is_not_found() -> None:
    refusal(changes.delete("acme", None, None), 404)


def test_delete_has_nothing_after() -> None:
    current = created()
    result = change(changes.delete("acme", current, None))
    assert (result.action, result.before, result.after) == ("deleted", current, None)
