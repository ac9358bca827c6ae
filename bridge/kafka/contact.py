"""First contact with a broker: is one there, and does it let the bridge in?

Start-up waits while no broker answers (connection refused, host unreachable, timed out, name
not resolved: a broker starting or restarting looks like that) and stops at once when one
answers but refuses the bridge (TLS verification, SASL authentication), which waiting would not
change.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.protocol.metadata import MetadataRequest

from bridge.config import KafkaSettings
from bridge.kafka.connection import connection_kwargs
from bridge.kafka.errors import BrokerError, kafka_errors

__all__ = ["reach_broker"]


async def reach_broker(settings: KafkaSettings, timeout_s: float) -> None:
    """Return once a bootstrap server answers a metadata request over the bridge's connection.

    Raises ``BrokerError`` with ``retriable`` set when none answered within ``timeout_s`` each,
    naming what happened at every server; ``BrokerError`` without it when a broker refused the
    bridge (SASL), and ``ssl.SSLError`` when TLS failed (a certificate from another CA).
    """
    kwargs = connection_kwargs(settings)
    servers = kwargs.pop("bootstrap_servers")
    failures = []
    for host, port, _ in collect_hosts(servers):
        try:
            await asyncio.wait_for(_ask(host, port, kwargs, timeout_s), timeout_s)
        except ssl.SSLError:
            raise
        except BrokerError as exc:
            if not exc.retriable:
                raise
            failures.append(f"{host}:{port} {exc.reason}")
        except (OSError, TimeoutError) as exc:
            # The errno's own words: asyncio and uvloop word the same refusal differently.
            failures.append(
                f"{host}:{port} {os.strerror(exc.errno) if exc.errno else type(exc).__name__}"
            )
        else:
            return
    raise BrokerError(
        "reaching a broker", "KafkaConnectionError", ", ".join(failures), retriable=True
    )


async def _ask(host: str, port: int, kwargs: dict[str, Any], timeout_s: float) -> None:
    with kafka_errors(f"connecting to {host}:{port}"):
        conn = await create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **kwargs)
        try:
            await conn.send(MetadataRequest([]))
        finally:
            conn.close()
