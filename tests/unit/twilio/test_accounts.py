"""The accounts registry: static credentials plus instances (``bridge.twilio.accounts``)."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import SecretStr

from bridge.config import Credential, TwilioSettings
from bridge.instances.accounts import account_of
from bridge.instances.model import Instance
from bridge.twilio.accounts import Account, Accounts, basic_auth_header
from bridge.twilio.ratelimit import Limits
from bridge.twilio.retry import RetryPolicy
from tests.helpers import ACCOUNT, API_KEY_SID, INSTANCE_ACCOUNT, stored_instance

STATIC = {"default": Credential(account_sid=ACCOUNT, auth_token=SecretStr("static-token"))}
TWILIO = TwilioSettings(base_url="http://mock:4010", response_timeout_s=7.5)


def instance(name: str = "acme", sid: str = INSTANCE_ACCOUNT, **configuration: Any) -> Instance:
    token = configuration.pop("auth_token", f"{name}-token")
    return stored_instance(name, sid, token, **configuration)


def account(name: str = "acme", sid: str = INSTANCE_ACCOUNT, **configuration: Any) -> Account:
    return account_of(instance(name, sid, **configuration), TWILIO)


def decoded(auth: str) -> str:
    scheme, _, value = auth.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(value).decode()


# --- one account -----------------------------------------------------------------------------


def test_basic_auth_uses_the_account_sid_and_token_or_the_api_key() -> None:
    token = Credential(account_sid=ACCOUNT, auth_token=SecretStr("t0k"))
    key = Credential(account_sid=ACCOUNT, api_key_sid=API_KEY_SID, api_key_secret=SecretStr("s3c"))
    assert decoded(basic_auth_header(token)) == f"{ACCOUNT}:t0k"
    assert decoded(basic_auth_header(key)) == f"{API_KEY_SID}:s3c"


def test_a_static_account_takes_webhooks_and_polls_when_told() -> None:
    polled = Credential(account_sid=ACCOUNT, auth_token=SecretStr("t"), poll=True)
    one = Account.from_settings("p", polled, calls=True)
    assert (one.source, one.webhooks, one.polls) == ("settings", True, True)
    assert one.resources == ("messages", "calls")
    assert Account.from_settings("p", STATIC["default"], calls=False).resources == ("messages",)


def test_an_instance_account_carries_its_credential_and_events() -> None:
    one = account(events={"mechanism": "polling", "refresh_interval_s": 30, "resources": ["calls"]})
    assert (one.name, one.source, one.account_sid) == ("acme", "instance", INSTANCE_ACCOUNT)
    assert decoded(one.auth) == f"{INSTANCE_ACCOUNT}:acme-token"
    assert one.auth_token == "acme-token"
    assert (one.webhooks, one.polls, one.refresh_interval_s) == (False, True, 30)
    assert one.resources == ("calls",)


def test_an_api_key_instance_has_no_token_to_check_webhooks_with() -> None:
    one = account(auth_token=None, api_key_sid=API_KEY_SID, api_key_secret="key-secret")
    assert one.auth_token is None
    assert decoded(one.auth) == f"{API_KEY_SID}:key-secret"


def test_events_off_neither_takes_webhooks_nor_polls() -> None:
    for mechanism in ("webhook", "polling"):
        one = account(events={"enabled": False, "mechanism": mechanism})
        assert (one.webhooks, one.polls) == (False, False)
    assert (account().webhooks, account().polls) == (True, False)


def test_event_topics_are_read_only() -> None:
    one = account(events={"topics": {"message-status": "acme.status"}})
    assert dict(one.topics) == {"message-status": "acme.status"}
    assert not hasattr(one.topics, "__setitem__")


def test_an_instance_without_an_endpoint_uses_the_bridges() -> None:
    assert account().twilio is None


def test_an_instance_endpoint_overrides_the_bridges_and_keeps_its_timeouts() -> None:
    own = account(base_url="http://other:9999").twilio
    assert own is not None
    assert (own.base_url, own.response_timeout_s) == ("http://other:9999", 7.5)
    regional = account(region="ie1", edge="dublin").twilio
    assert regional is not None
    # Set over the bridge's: a bridge pointed at a mock (base_url) keeps the instance there,
    # since base_url wins over region and edge (origin_for).
    assert (regional.base_url, regional.region, regional.edge) == (
        "http://mock:4010",
        "ie1",
        "dublin",
    )


def test_an_instance_brings_its_retry_policy_and_limits() -> None:
    one = account(
        retry={"max_attempts": 5, "base_delay_s": 0.1, "retry_all_errors": True},
        rate_limit={"requests_per_second": 3, "burst": 2, "max_concurrent": 4},
        filter_nulls=True,
    )
    assert one.retry == RetryPolicy(max_attempts=5, base_delay_s=0.1, retry_all_errors=True)
    assert one.rate_limit == Limits.of(
        requests_per_second=3, burst=2, max_concurrent=4, account_concurrency=100
    )
    assert one.filter_nulls is True
    plain = account()
    assert (plain.retry, plain.rate_limit, plain.filter_nulls) == (None, None, None)


def test_an_account_never_shows_its_secrets_in_repr() -> None:
    text = repr(account())
    assert "acme-token" not in text and "Basic" not in text


# --- the registry ----------------------------------------------------------------------------


def test_put_get_and_remove() -> None:
    accounts = Accounts(STATIC)
    one = account()
    accounts.put(one)
    assert accounts.get("acme") is one
    assert len(accounts) == 2 and [a.name for a in accounts] == ["default", "acme"]
    accounts.remove("acme", "2026-01-02T00:00:00.000Z")
    assert accounts.get("acme") is None
    assert [a.name for a in accounts] == ["default"]


def test_an_unusable_instance_says_why_not_that_it_was_deleted() -> None:
    accounts = Accounts(STATIC)
    accounts.put(account())
    accounts.unusable("acme", "sealed under key 'abc', this replica has 'def'")
    assert accounts.get("acme") is None and accounts.by_account_sid(INSTANCE_ACCOUNT) == []
    why = accounts.why_unknown("acme")
    assert "cannot use: sealed under key" in why and "deleted" not in why


def test_a_deleted_instance_is_named_as_deleted() -> None:
    accounts = Accounts(STATIC)
    accounts.put(account())
    accounts.remove("acme", "2026-01-02T03:04:05.000Z")
    why = accounts.why_unknown("acme")
    assert "deleted" in why and "2026-01-02T03:04:05.000Z" in why
    assert "deleted" not in accounts.why_unknown("globex")
    accounts.remove("globex", "2026-01-02T03:04:05.000Z")  # never here: nothing to say
    assert "deleted" not in accounts.why_unknown("globex")


def test_an_unusable_instance_that_is_then_deleted_is_named_as_deleted() -> None:
    accounts = Accounts(STATIC)
    accounts.put(account())
    accounts.unusable("acme", "sealed under key 'abc', this replica has 'def'")
    accounts.remove("acme", "2026-01-02T03:04:05.000Z")
    why = accounts.why_unknown("acme")
    assert "was deleted at 2026-01-02T03:04:05.000Z" in why and "cannot use" not in why


def test_an_unknown_name_lists_the_static_names_and_counts_the_instances() -> None:
    accounts = Accounts(STATIC)
    accounts.put(account())
    why = accounts.why_unknown("nope")
    assert "unknown credential 'nope'" in why and "default" in why and "1 instances" in why
    assert "acme" not in why  # instance names are not for every envelope writer to read
    assert "none configured" in Accounts().why_unknown("nope")


def test_an_instance_created_again_is_no_longer_deleted() -> None:
    accounts = Accounts()
    accounts.put(account())
    accounts.remove("acme", "then")
    accounts.put(account())
    assert accounts.get("acme") is not None
    assert "deleted" not in accounts.why_unknown("acme")


def test_removing_what_was_never_there_records_nothing() -> None:
    accounts = Accounts()
    accounts.remove("ghost", "then")
    assert "deleted" not in accounts.why_unknown("ghost")


def test_accounts_are_found_by_account_sid() -> None:
    accounts = Accounts(STATIC)
    first, second = account("acme"), account("acme-eu")
    accounts.put(first)
    accounts.put(second)
    assert accounts.by_account_sid(INSTANCE_ACCOUNT) == [first, second]
    assert [a.name for a in accounts.by_account_sid(ACCOUNT)] == ["default"]
    assert accounts.by_account_sid("AC" + "f" * 32) == []


def test_a_changed_instance_leaves_the_index_of_its_old_account_sid() -> None:
    accounts = Accounts()
    accounts.put(account())
    moved = account(sid="AC" + "d" * 32)
    accounts.put(moved)
    assert accounts.by_account_sid(INSTANCE_ACCOUNT) == []
    assert accounts.by_account_sid("AC" + "d" * 32) == [moved]
    accounts.remove("acme", "then")
    assert accounts.by_account_sid("AC" + "d" * 32) == []


def test_a_replaced_instance_is_indexed_once() -> None:
    accounts = Accounts()
    accounts.put(account())
    newer = account(region="ie1")
    accounts.put(newer)
    assert accounts.by_account_sid(INSTANCE_ACCOUNT) == [newer]


def test_instances_never_shadow_a_static_name() -> None:
    accounts = Accounts(STATIC)
    assert accounts.is_static("default") and not accounts.is_static("acme")
    shadow = account("default", sid=ACCOUNT, events={"topics": {"messages": "stolen"}})
    accounts.put(shadow)
    found = accounts.get("default")
    assert found is not None and found.source == "settings"
    # Nor anywhere else: not for webhooks (their token and topics), not for the poller.
    assert [a.source for a in accounts.by_account_sid(ACCOUNT)] == ["settings"]
    assert [a.source for a in accounts] == ["settings"]
    accounts.remove("default", "then")
    assert accounts.get("default") is not None
    assert "deleted" not in accounts.why_unknown("default")
