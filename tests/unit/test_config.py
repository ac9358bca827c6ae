import base64
from pathlib import Path

import pytest

from bridge.config import KafkaSettings, SettingsError, encryption_key, load_settings
from tests.helpers import ACCOUNT, API_KEY_SID


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


def test_defaults_follow_the_contract() -> None:
    settings = load_settings()
    assert settings.kafka.request_topics == ["twilio.requests"]
    assert settings.kafka.reply_topic == "twilio.replies"
    assert settings.kafka.error_topic == "twilio.errors"
    assert settings.processing.max_in_flight == 256
    assert settings.credentials == {}


def test_nested_variables_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__REQUEST_TOPICS", "a, b")
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("BRIDGE_TWILIO__BASE_URL", "http://127.0.0.1:4010/{domain}/")
    monkeypatch.setenv("BRIDGE_CREDENTIALS__DEFAULT__ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("BRIDGE_CREDENTIALS__DEFAULT__AUTH_TOKEN", "tok-123")
    monkeypatch.setenv("BRIDGE_CREDENTIALS__EU__ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("BRIDGE_CREDENTIALS__EU__API_KEY_SID", API_KEY_SID)
    monkeypatch.setenv("BRIDGE_CREDENTIALS__EU__API_KEY_SECRET", "key-secret")
    settings = load_settings()
    assert settings.kafka.request_topics == ["a", "b"]
    assert settings.twilio.base_url == "http://127.0.0.1:4010/{domain}"
    assert settings.credentials["default"].username == ACCOUNT
    assert settings.credentials["eu"].username == API_KEY_SID
    assert settings.credentials["eu"].password.get_secret_value() == "key-secret"


def test_every_bad_setting_is_named_and_no_secret_is_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", "hunter2-sasl")
    monkeypatch.setenv("BRIDGE_PROCESSING__MAX_IN_FLIGHT", "0")
    monkeypatch.setenv("BRIDGE_CREDENTIALS__X__ACCOUNT_SID", "not-a-sid")
    monkeypatch.setenv("BRIDGE_CREDENTIALS__X__AUTH_TOKEN", "hunter2-token")
    monkeypatch.setenv("BRIDGE_CREDENTIALS__Y__ACCOUNT_SID", ACCOUNT)
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    for name in (
        "BRIDGE_KAFKA",
        "sasl_mechanism",
        "BRIDGE_PROCESSING__MAX_IN_FLIGHT",
        "BRIDGE_CREDENTIALS__X__ACCOUNT_SID",
        "BRIDGE_CREDENTIALS__Y",
    ):
        assert name in text
    assert "hunter2" not in text and "not-a-sid" not in text


def test_secrets_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "credentials__default__auth_token").write_text("from-file")
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("BRIDGE_CREDENTIALS__DEFAULT__ACCOUNT_SID", ACCOUNT)
    settings = load_settings()
    assert settings.credentials["default"].password.get_secret_value() == "from-file"
    assert "from-file" not in repr(settings)


def test_missing_secrets_directory_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", "/nonexistent/secrets")
    with pytest.raises(SettingsError, match="BRIDGE_SECRETS_DIR"):
        load_settings()


def test_webhook_family_settings_take_environment_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_WEBHOOK__TOPICS__MESSAGE_STATUS", "sms.status")
    monkeypatch.setenv("BRIDGE_WEBHOOK__SHARED_KEYS__k1", "secret-1")
    settings = load_settings()
    assert settings.webhook.topic_for("message-status") == "sms.status"
    assert settings.webhook.topic_for("voice") == "twilio.events.voice"
    monkeypatch.setenv("BRIDGE_WEBHOOK__TWIML__SMS", "<Response/>")
    with pytest.raises(SettingsError, match="BRIDGE_WEBHOOK__TWIML.*unknown webhook families"):
        load_settings()


def test_the_poller_needs_a_seen_window_that_covers_its_lookback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_CREDENTIALS__DEFAULT__ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("BRIDGE_CREDENTIALS__DEFAULT__AUTH_TOKEN", "tok-123")
    monkeypatch.setenv("BRIDGE_CREDENTIALS__DEFAULT__POLL", "true")
    monkeypatch.setenv("BRIDGE_WEBHOOK__DEDUPE_WINDOW_S", "60")
    with pytest.raises(SettingsError, match="dedupe_window_s must cover"):
        load_settings()
    monkeypatch.setenv("BRIDGE_WEBHOOK__DEDUPE_WINDOW_S", "3600")
    assert load_settings().credentials["default"].poll


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"security_protocol": "PLAINTEXT", "ssl_cafile": "/ca.pem"}, "kafka.ssl_cafile"),
        (
            {"security_protocol": "SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
            "kafka.sasl_mechanism, kafka.sasl_username",
        ),
        ({"idempotent_producer": True, "acks": "1"}, "acks=all"),
    ],
    ids=["tls-file-without-tls", "sasl-without-sasl", "idempotent-needs-acks-all"],
)
def test_kafka_settings_the_protocol_would_ignore_or_reject_stop_start_up(
    values: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        KafkaSettings.model_validate(values)


def test_acks_1_works_without_the_idempotent_producer() -> None:
    settings = KafkaSettings(idempotent_producer=False, acks="1")
    assert settings.acks == "1"


# --- the instances API -------------------------------------------------------------------------

ADMIN_KEY = base64.b64encode(bytes(range(32))).decode()


def test_the_instances_api_is_off_by_default_and_needs_nothing_then() -> None:
    admin = load_settings().admin
    assert admin.enabled is False and admin.token is None
    assert (admin.topic, admin.audit_topic) == ("twilio.instances", "twilio.instances.audit")


def test_the_instances_api_reads_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_ADMIN__ENABLED", "true")
    monkeypatch.setenv("BRIDGE_ADMIN__TOKEN", "a-long-enough-admin-token")
    monkeypatch.setenv("BRIDGE_ADMIN__ENCRYPTION_KEY", f" {ADMIN_KEY}\n")
    monkeypatch.setenv("BRIDGE_ADMIN__TOPIC", "acme.instances")
    monkeypatch.setenv("BRIDGE_ADMIN__WRITE_TIMEOUT_S", "3")
    admin = load_settings().admin
    assert admin.enabled and admin.topic == "acme.instances" and admin.write_timeout_s == 3
    assert admin.encryption_key is not None
    assert encryption_key(admin.encryption_key) == bytes(range(32))


def test_enabling_the_instances_api_needs_a_token_and_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_ADMIN__ENABLED", "true")
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "admin.token" in text and "admin.encryption_key" in text


@pytest.mark.parametrize(
    ("token", "key", "problems"),
    [
        ("short-hunter2", ADMIN_KEY, ["admin.token"]),
        ("long-enough-hunter2-token", "hunter2-not-base64!", ["not base64"]),
        (
            "long-enough-hunter2-token",
            base64.b64encode(b"hunter2-sixteen!").decode(),
            ["32 bytes, not 16"],
        ),
        ("short-hunter2", "hunter2-not-base64!", ["admin.token", "not base64"]),
    ],
)
def test_a_bad_token_or_key_is_named_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, token: str, key: str, problems: list[str]
) -> None:
    monkeypatch.setenv("BRIDGE_ADMIN__ENABLED", "true")
    monkeypatch.setenv("BRIDGE_ADMIN__TOKEN", token)
    monkeypatch.setenv("BRIDGE_ADMIN__ENCRYPTION_KEY", key)
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    for problem in problems:
        assert problem in text
    assert "hunter2" not in text
    assert base64.b64encode(b"hunter2-sixteen!").decode() not in text


def test_a_disabled_instances_api_ignores_a_bad_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_ADMIN__ENCRYPTION_KEY", "not base64")
    assert load_settings().admin.enabled is False


def test_twiml_answers_are_off_by_default_and_opted_into_per_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings().twiml
    assert defaults.families == [] and defaults.topic == "twilio.twiml"
    assert defaults.timeout_s == 8 and defaults.max_bytes == 65_536
    assert "<Say>" in defaults.fallback["voice"] and "<Hangup/>" in defaults.fallback["voice"]
    assert defaults.fallback["messages"].endswith("<Response/>")
    monkeypatch.setenv("BRIDGE_TWIML__FAMILIES", "voice, messages")
    monkeypatch.setenv(
        "BRIDGE_TWIML__FALLBACK__VOICE", "<Response><Redirect>/busy</Redirect></Response>"
    )
    twiml = load_settings().twiml
    assert twiml.families == ["voice", "messages"]
    # Setting one family's fallback keeps the other's default.
    assert twiml.fallback == {
        "voice": "<Response><Redirect>/busy</Redirect></Response>",
        "messages": defaults.fallback["messages"],
    }


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("BRIDGE_TWIML__TIMEOUT_S", "15", "BRIDGE_TWIML__TIMEOUT_S: Input should be less than 15"),
        ("BRIDGE_TWIML__FAMILIES", "voice,call-status", "BRIDGE_TWIML__FAMILIES"),
        ("BRIDGE_TWIML__FALLBACK__VOICE", "<Say>Sorry</Say>", "twiml.fallback.voice"),
        ("BRIDGE_TWIML__FALLBACK__STATUS", "<Response/>", "unknown families ['status']"),
    ],
)
def test_twiml_settings_that_cannot_work_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert problem in str(info.value)
