"""Kafka security end to end: the real bridge process over TLS, mutual TLS and SASL.

Tansu 0.6 can do neither TLS nor SASL (see ``bridge/tooling/local/tansu.py``), so a test gateway
(``kafka_gateway.py``) stands in front of a plaintext Tansu and is the TLS server and the SASL
server; Tansu advertises the gateway, so every client of the bridge (producer, request
consumer, seen-log admin and consumer, poller admin and consumer) can only reach the broker
through it, with the protocol, certificates and credentials the ``BRIDGE_KAFKA__*`` settings
give. The gateway records which mechanism, user and client certificate each connection used.
Certificates are made at run time by ``openssl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.config import KafkaSettings
from bridge.kafka.admin import create_topics
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.errors import BrokerError
from bridge.kafka.producer import Publisher
from bridge.tooling.local.tansu import TansuBroker
from tests.support.fast_twilio import spawn
from tests.support.harness import BridgeProcess, Topics
from tests.support.kafka_gateway import KafkaGateway, server_tls
from tests.support.tls import Pki, make_pki, openssl_available

pytestmark = pytest.mark.skipif(not openssl_available(), reason="needs the openssl command")

BRIDGE_USER, BRIDGE_PASSWORD = "bridge", "bridge-sasl-password-not-a-secret"
TESTER_USER, TESTER_PASSWORD = "tester", "tester-sasl-password-not-a-secret"
USERS = {BRIDGE_USER: BRIDGE_PASSWORD, TESTER_USER: TESTER_PASSWORD}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class Case:
    """One way of securing the connection, as the bridge's settings say it."""

    protocol: str
    mechanism: str | None = None
    client_cert: bool = False
    secrets_dir: bool = False  # the SASL password from a mounted file, not the environment
    poll: bool = False  # also start the poller, whose clients must take the same settings

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL")

    def __str__(self) -> str:
        parts = [self.protocol, self.mechanism or "", "client-cert" if self.client_cert else ""]
        return "-".join(p for p in parts if p)


CASES = [
    Case("SSL"),
    Case("SSL", client_cert=True, poll=True),
    Case("SASL_PLAINTEXT", "PLAIN"),
    Case("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    Case("SASL_PLAINTEXT", "SCRAM-SHA-512", secrets_dir=True),
    Case("SASL_SSL", "PLAIN", secrets_dir=True),
    Case("SASL_SSL", "SCRAM-SHA-256"),
    Case("SASL_SSL", "SCRAM-SHA-512", client_cert=True, poll=True),
]


def _fields(case: Case, pki: Pki, *, bridge: bool) -> dict[str, Any]:
    """Kafka settings for the bridge's side (``bridge``) or the test's own clients."""
    fields: dict[str, Any] = {"security_protocol": case.protocol}
    if case.tls:
        fields["ssl_cafile"] = pki.ca
        if case.client_cert:
            cert, key = (
                (pki.client_cert, pki.client_key) if bridge else (pki.tester_cert, pki.tester_key)
            )
            fields |= {"ssl_certfile": cert, "ssl_keyfile": key}
    if case.sasl:
        user, password = (
            (BRIDGE_USER, BRIDGE_PASSWORD) if bridge else (TESTER_USER, TESTER_PASSWORD)
        )
        fields |= {"sasl_mechanism": case.mechanism, "sasl_username": user}
        fields["sasl_password"] = password
    return fields


def _env(fields: dict[str, Any], secrets: Path | None) -> dict[str, str]:
    """``BRIDGE_KAFKA__*`` variables; the SASL password as a secrets-dir file if ``secrets``."""
    env = {f"BRIDGE_KAFKA__{name.upper()}": str(value) for name, value in fields.items()}
    if secrets is not None and "sasl_password" in fields:
        secrets.mkdir()
        (secrets / "kafka__sasl_password").write_text(env.pop("BRIDGE_KAFKA__SASL_PASSWORD"))
        env["BRIDGE_SECRETS_DIR"] = str(secrets)
    return env


@asynccontextmanager
async def secured(
    case: Case, pki: Pki, tmp_path: Path, *, client_ca: Path | None = None
) -> AsyncIterator[KafkaGateway]:
    """A plaintext Tansu behind a gateway that secures it as ``case`` says."""
    tls = None
    if case.tls:
        tls = server_tls(
            pki.server_cert, pki.server_key, client_ca or (pki.ca if case.client_cert else None)
        )
    async with KafkaGateway(0, tls=tls, users=USERS if case.sasl else None) as gateway:
        async with TansuBroker(log_dir=tmp_path, advertised_listener=gateway.address) as broker:
            gateway.upstream_port = broker.port
            yield gateway


async def _produce(kwargs: dict[str, Any], topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(**kwargs)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _first(kwargs: dict[str, Any], topic: str, within_s: float) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **kwargs)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), within_s)
        value: dict[str, Any] = json.loads(record.value)
        return value
    finally:
        await consumer.stop()


@dataclass
class Outcome:
    """What one secured round trip of the bridge process gave."""

    reply: dict[str, Any] | None = None
    sent_id: str = ""
    exit_code: int | None = None
    log: str = ""
    authenticated: Counter[tuple[str, str]] = field(default_factory=Counter)
    client_certs: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    error: BaseException | None = None


async def _round_trip(case: Case, pki: Pki, base_url: str, workdir: Path) -> Outcome:
    """Start the bridge process secured as ``case`` says, send it one envelope, await its reply."""
    outcome = Outcome()
    bridge: BridgeProcess | None = None
    try:
        async with secured(case, pki, workdir) as gateway:
            mine = KafkaSettings(
                bootstrap_servers=gateway.address, **_fields(case, pki, bridge=False)
            )
            kwargs = connection_kwargs(mine)
            topics = Topics.fresh()
            names = [topics.requests, topics.replies, topics.errors]
            await create_topics(gateway.address, names, **kwargs)
            env = _env(
                _fields(case, pki, bridge=True), workdir / "secrets" if case.secrets_dir else None
            )
            # Tansu holds a group's first join for half the session timeout.
            env["BRIDGE_KAFKA__SESSION_TIMEOUT_MS"] = "1000"
            env["BRIDGE_HTTP__DRAIN_DELAY_S"] = "0"  # no Kubernetes endpoints to drain
            if case.poll:
                env |= {
                    "BRIDGE_CREDENTIALS__DEFAULT__POLL": "true",
                    "BRIDGE_POLLER__STATE_TOPIC": f"poll-{topics.group}",
                    "BRIDGE_POLLER__PARTITIONS": "1",
                }
            bridge = BridgeProcess(gateway.address, base_url, topics, workdir / "bridge.log", env)
            outcome.sent_id = f"secure-{uuid.uuid4().hex[:8]}"
            envelope = {
                "id": outcome.sent_id,
                "mode": "basic",
                "operation": "CreateMessage",
                "body": {"To": "+14155550100", "From": "+14155550101", "Body": str(case)},
            }
            bridge.start()
            try:
                await _produce(kwargs, topics.requests, b"k", json.dumps(envelope).encode())
                outcome.reply = await _first(kwargs, topics.replies, 20)
                if case.poll:
                    await _wait_for(lambda: "poller: owns state partitions" in bridge.log(), 10)
            finally:
                # In a thread: the gateway runs on this loop, and the bridge stops through it.
                outcome.exit_code = await asyncio.to_thread(bridge.stop)
            outcome.authenticated = gateway.authenticated
            outcome.client_certs = gateway.client_certs
            outcome.failures = gateway.failures
    except Exception as exc:  # reported by the case's own test
        outcome.error = exc
    finally:
        outcome.log = bridge.log() if bridge is not None else ""
    return outcome


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def outcomes(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case's round trip, all at once (each alone is mostly waiting)."""
    mock, port = spawn()
    try:
        base_url = f"http://127.0.0.1:{port}"
        results = await asyncio.gather(
            *(
                _round_trip(case, pki, base_url, tmp_path_factory.mktemp(str(case)))
                for case in CASES
            )
        )
    finally:
        mock.terminate()
        mock.wait(5)
        if mock.stdout is not None:
            mock.stdout.close()
    return {str(case): outcome for case, outcome in zip(CASES, results, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_bridge_consumes_and_replies_over_a_secured_connection(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    got = outcomes[str(case)]
    if got.error is not None:
        raise AssertionError(f"{got.error!r}\n{got.log[-3000:]}") from got.error
    assert got.exit_code == 0, got.log[-3000:]
    assert got.reply is not None
    assert got.reply["id"] == got.sent_id and got.reply["status"] == "ok", got.reply
    assert BRIDGE_PASSWORD not in got.log and TESTER_PASSWORD not in got.log
    # The bridge's own clients came through the gateway with the bridge's identity: at least
    # the producer, the request consumer (bootstrap and coordinator) and the seen log.
    if case.sasl:
        assert got.authenticated[(str(case.mechanism), BRIDGE_USER)] >= 3, got.authenticated
        assert {user for _, user in got.authenticated} == {BRIDGE_USER, TESTER_USER}
        assert {mech for mech, _ in got.authenticated} == {case.mechanism}
    if case.client_cert:
        assert got.client_certs["bridge-client"] >= 3, got.client_certs
    assert not got.failures, got.failures


async def _wait_for(condition: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_broker_certificate_from_another_ca_stops_the_bridge_at_start(
    pki: Pki, mock: Callable[..., str], tmp_path: Path
) -> None:
    case = Case("SSL")
    async with secured(case, pki, tmp_path) as gateway:
        fields = _fields(case, pki, bridge=True) | {"ssl_cafile": pki.rogue_ca}
        bridge = BridgeProcess(
            gateway.address, mock(), Topics.fresh(), tmp_path / "bridge.log", _env(fields, None)
        ).start()
        started = time.monotonic()
        try:
            code = await asyncio.to_thread(bridge.wait, 15)
        finally:
            await asyncio.to_thread(bridge.stop)
        took = time.monotonic() - started
    log = bridge.log()
    # One clear line and exit 1: no traceback, nothing left open.
    assert code == 1, log[-3000:]
    assert "start-up failed" in log and "CERTIFICATE_VERIFY_FAILED" in log, log[-3000:]
    assert "Traceback" not in log and "Unclosed" not in log, log[-3000:]
    print(f"\nwrong CA: the bridge exited {code} after {took:.1f} s")


@pytest.mark.parametrize("client", ["none", "rogue"])
async def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(
    client: str, pki: Pki, tmp_path: Path
) -> None:
    case = Case("SSL", client_cert=True)
    async with secured(case, pki, tmp_path) as gateway:
        fields = _fields(case, pki, bridge=True)
        if client == "none":
            del fields["ssl_certfile"], fields["ssl_keyfile"]
        else:
            fields |= {"ssl_certfile": pki.rogue_client_cert, "ssl_keyfile": pki.rogue_client_key}
        publisher = Publisher(KafkaSettings(bootstrap_servers=gateway.address, **fields))
        with pytest.raises(BrokerError) as raised:
            await asyncio.wait_for(publisher.start(), 10)
        await publisher.stop()
    assert raised.value.reason == "KafkaConnectionError"
    assert not gateway.client_certs


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_a_wrong_sasl_password_is_refused_and_never_shown(
    mechanism: str, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    case = Case("SASL_SSL", mechanism)
    wrong = "wrong-password-not-a-secret"
    async with secured(case, pki, tmp_path) as gateway:
        fields = _fields(case, pki, bridge=True) | {"sasl_password": wrong}
        publisher = Publisher(KafkaSettings(bootstrap_servers=gateway.address, **fields))
        with caplog.at_level(logging.ERROR, "aiokafka"):
            with pytest.raises(BrokerError) as raised:
                await asyncio.wait_for(publisher.start(), 10)
        await publisher.stop()
    assert raised.value.reason == "KafkaConnectionError"
    assert "SaslAuthenticationFailed" in caplog.text, caplog.text
    assert wrong not in caplog.text and wrong not in str(raised.value)
    assert not gateway.authenticated
    assert gateway.failures and all(f.startswith(mechanism) for f in gateway.failures)
