"""Kafka security settings → aiokafka arguments: protocols, SASL, TLS contexts, secrets kept out.

TLS contexts are exercised with an in-memory handshake against a server context, so a test
sees what a broker would: the CA trusted, the host name checked, the client certificate shown.
Certificates are made at run time with ``openssl`` (tests needing them skip without it).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from bridge.config import KafkaSettings, Settings, SettingsError, load_settings
from bridge.kafka import producer as producer_module
from bridge.kafka.connection import KafkaSecurityError, connection_kwargs, ssl_context
from tests.support.kafka_gateway import server_tls
from tests.support.tls import Pki, make_pki, openssl_available

PASSWORD = "kafka-sasl-password-not-a-secret"
PROTOCOLS = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
needs_openssl = pytest.mark.skipif(not openssl_available(), reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if not openssl_available():
        pytest.skip("needs the openssl command")
    return make_pki(tmp_path_factory.mktemp("pki"))


def _sasl(mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
    return {"sasl_mechanism": mechanism, "sasl_username": "bridge", "sasl_password": PASSWORD}


def _settings(protocol: str, mechanism: str, pki: Pki | None) -> KafkaSettings:
    fields: dict[str, Any] = {"bootstrap_servers": "broker:9093", "security_protocol": protocol}
    if protocol.startswith("SASL"):
        fields |= _sasl(mechanism)
    if protocol.endswith("SSL") and pki is not None:
        fields["ssl_cafile"] = pki.ca
    return KafkaSettings(**fields)


def _handshake(
    client: ssl.SSLContext, server: ssl.SSLContext, server_name: str = "localhost"
) -> dict[str, Any]:
    """Run a TLS handshake in memory; the server's view of the client certificate (or {})."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname=server_name)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            # TLS 1.3: the server judges the client certificate after the client is done,
            # and the client only learns of a refusal on its next read.
            try:
                client_side.read(1)
            except ssl.SSLWantReadError:
                pass
            peer: dict[str, Any] = server_side.getpeercert() or {}
            return peer
    raise AssertionError("handshake did not finish")


def _common_name(cert: dict[str, Any]) -> str:
    subject = dict(pair[0] for pair in cert.get("subject", ()))
    return str(subject.get("commonName", ""))


# --- protocols and mechanisms ------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_protocol_and_mechanism_maps_to_aiokafka_arguments(
    protocol: str, mechanism: str
) -> None:
    kwargs = connection_kwargs(_settings(protocol, mechanism, None))
    assert kwargs["bootstrap_servers"] == "broker:9093"
    assert kwargs["client_id"] == "twilio-bridge"
    assert kwargs["security_protocol"] == protocol
    if protocol.endswith("SSL"):
        context = kwargs["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    else:
        assert "ssl_context" not in kwargs
    if protocol.startswith("SASL"):
        assert kwargs["sasl_mechanism"] == mechanism
        assert kwargs["sasl_plain_username"] == "bridge"
        assert kwargs["sasl_plain_password"] == PASSWORD  # aiokafka needs it in the clear
    else:
        assert not any(key.startswith("sasl") for key in kwargs)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_every_kind_of_aiokafka_client_accepts_the_arguments(
    protocol: str, mechanism: str
) -> None:
    kwargs = connection_kwargs(_settings(protocol, mechanism, None))
    producer = AIOKafkaProducer(**kwargs, acks="all", enable_idempotence=True)
    consumer = AIOKafkaConsumer(**kwargs, group_id="g")
    admin = AIOKafkaAdminClient(**kwargs)
    await producer.stop()
    await consumer.stop()
    await admin.close()


def test_sasl_without_its_settings_names_each_missing_one() -> None:
    with pytest.raises(ValidationError) as raised:
        KafkaSettings(security_protocol="SASL_SSL")
    assert "SASL_SSL needs kafka.sasl_mechanism, kafka.sasl_username, kafka.sasl_password" in str(
        raised.value
    )
    with pytest.raises(ValidationError) as raised:
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_password=PASSWORD
        )
    message = str(raised.value)
    assert "needs kafka.sasl_username" in message
    assert "sasl_mechanism" not in message.split("needs", 1)[1] and PASSWORD not in message


def test_an_unknown_protocol_or_mechanism_is_refused() -> None:
    with pytest.raises(ValidationError):
        KafkaSettings(security_protocol="SASL_SSL ")
    with pytest.raises(ValidationError):
        KafkaSettings(security_protocol="SASL_SSL", **_sasl("GSSAPI"))


# --- production defaults -----------------------------------------------------------------


def test_production_defaults_are_plaintext_idempotent_and_acks_all() -> None:
    settings = KafkaSettings()
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.idempotent_producer is True and settings.acks == "all"


@pytest.mark.parametrize(
    ("fields", "acks", "idempotent"),
    [({}, "all", True), ({"idempotent_producer": False, "acks": "1"}, 1, False)],
)
def test_the_publisher_asks_for_what_the_settings_say(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], acks: object, idempotent: bool
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(producer_module, "AIOKafkaProducer", lambda **kw: seen.update(kw))
    settings = KafkaSettings(security_protocol="SASL_SSL", **_sasl(), **fields)
    producer_module.Publisher(settings)
    assert seen["acks"] == acks and seen["enable_idempotence"] is idempotent
    # The producer takes the same connection as every other client.
    assert seen["sasl_plain_password"] == PASSWORD and "ssl_context" in seen


# --- TLS ---------------------------------------------------------------------------------


def test_ssl_with_a_ca_verifies_the_broker_and_its_name(pki: Pki) -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_cafile=pki.ca))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [_common_name(ca) for ca in context.get_ca_certs()] == ["test-ca"]
    broker = server_tls(pki.server_cert, pki.server_key)
    assert _handshake(context, broker, "127.0.0.1") == {}  # trusted, no client certificate
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake(context, broker, "kafka.example.com")


def test_ssl_without_a_ca_trusts_the_system_store_not_the_test_ca(pki: Pki) -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL"))
    assert context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, server_tls(pki.server_cert, pki.server_key))


def test_a_broker_certificate_from_another_ca_is_refused(pki: Pki) -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_cafile=pki.rogue_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, server_tls(pki.server_cert, pki.server_key))


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_the_client_certificate_is_presented_for_mutual_tls(pki: Pki, protocol: str) -> None:
    sasl = _sasl() if protocol == "SASL_SSL" else {}
    settings = KafkaSettings(
        security_protocol=protocol,
        ssl_cafile=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
        **sasl,
    )
    context = connection_kwargs(settings)["ssl_context"]
    peer = _handshake(context, server_tls(pki.server_cert, pki.server_key, client_ca=pki.ca))
    assert _common_name(peer) == "bridge-client"


def test_a_certificate_file_holding_its_key_needs_no_keyfile(pki: Pki, tmp_path: Path) -> None:
    bundle = tmp_path / "client-bundle.pem"
    bundle.write_text(pki.client_cert.read_text() + pki.client_key.read_text())
    settings = KafkaSettings(security_protocol="SSL", ssl_cafile=pki.ca, ssl_certfile=bundle)
    peer = _handshake(ssl_context(settings), server_tls(pki.server_cert, pki.server_key, pki.ca))
    assert _common_name(peer) == "bridge-client"


def test_without_a_client_certificate_mutual_tls_is_refused(pki: Pki) -> None:
    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_cafile=pki.ca))
    with pytest.raises(ssl.SSLError):
        _handshake(context, server_tls(pki.server_cert, pki.server_key, client_ca=pki.ca))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ssl_cafile": Path("/nonexistent/ca.pem")}, "kafka.ssl_cafile: /nonexistent/ca.pem is"),
        ({"ssl_keyfile": "client_key"}, "kafka.ssl_keyfile is set without kafka.ssl_certfile"),
        ({"ssl_cafile": "client_key"}, "kafka.ssl_cafile: .* holds no usable CA certificate"),
        (
            {"ssl_certfile": "client_cert", "ssl_keyfile": "rogue_client_key"},
            "rogue-client.key is not the private key of .*bridge-client.pem",
        ),
        ({"ssl_certfile": "client_cert"}, "cannot load .*bridge-client.pem"),
        (
            {"ssl_certfile": "client_cert", "ssl_keyfile": "client_key_encrypted"},
            "kafka.ssl_keyfile: .*enc.key is encrypted",
        ),
    ],
)
def test_unusable_tls_files_are_named_in_the_error(
    pki: Pki, fields: dict[str, Any], message: str
) -> None:
    resolved = {k: getattr(pki, v) if isinstance(v, str) else v for k, v in fields.items()}
    settings = KafkaSettings(security_protocol="SASL_SSL", **_sasl(), **resolved)
    with pytest.raises(KafkaSecurityError, match=message) as raised:
        connection_kwargs(settings)
    assert isinstance(raised.value, SettingsError)
    assert PASSWORD not in str(raised.value) and pki.key_passphrase not in str(raised.value)
    assert "PRIVATE KEY" not in str(raised.value)


def test_an_encrypted_key_never_prompts_for_its_passphrase(pki: Pki) -> None:
    # Without a passphrase callback OpenSSL would ask on the terminal (a hang in a pod); the
    # callback refuses instead, and the error says what to do.
    settings = KafkaSettings(
        security_protocol="SSL",
        ssl_cafile=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key_encrypted,
    )
    with pytest.raises(KafkaSecurityError, match="is encrypted"):
        ssl_context(settings)


def test_tls_files_with_a_plaintext_protocol_are_refused_not_ignored(pki: Pki) -> None:
    with pytest.raises(ValueError, match="kafka.ssl_cafile set, but SASL_PLAINTEXT"):
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT", ssl_cafile=Path("/nonexistent"), **_sasl()
        )


# --- secrets -----------------------------------------------------------------------------


def test_the_sasl_password_never_shows_in_settings_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    kafka = KafkaSettings(security_protocol="SASL_SSL", **_sasl())
    root = Settings(kafka=kafka)
    for text in (repr(kafka), str(kafka), repr(root), str(root), kafka.model_dump_json()):
        assert PASSWORD not in text
    assert "**********" in repr(kafka)


def test_settings_errors_never_quote_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-1")  # not supported
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_USERNAME", "bridge")
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", PASSWORD)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "BRIDGE_KAFKA__SASL_MECHANISM" in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_the_password_can_come_from_the_secrets_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    (tmp_path / "kafka__sasl_password").write_text(PASSWORD)
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("BRIDGE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_USERNAME", "bridge")
    kwargs = connection_kwargs(load_settings().kafka)
    assert kwargs["sasl_plain_password"] == PASSWORD
