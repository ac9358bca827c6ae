"""An OTLP/HTTP trace sink for the benchmarks: takes every export, counts its spans, keeps none.

    python -m tests.perf.otlp_sink [--port 0]      # prints: READY <port>

``POST /v1/traces`` (``application/x-protobuf``, gzip or not) is decoded as an
``ExportTraceServiceRequest`` and answered 200 with an empty ``ExportTraceServiceResponse``, as
a collector does; ``GET /__stats`` returns the exports, spans, spans with a parent, bytes
received and the sink's own CPU seconds as JSON. It runs as a process of its own so that what
it costs is not charged to the bridge under test; decoding is what lets a benchmark check that
the bridge exported every span it should have, and with the right parents.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["SinkStats", "app", "spawn"]

ROOT = Path(__file__).resolve().parents[2]
_EMPTY_ANSWER = ExportTraceServiceResponse().SerializeToString()


@dataclass
class SinkStats:
    """What the sink received since it started."""

    exports: int = 0
    spans: int = 0
    children: int = 0  # spans with a parent span id
    bytes: int = 0
    rejected: int = 0  # bodies that were not an ExportTraceServiceRequest


def count(body: bytes, stats: SinkStats) -> None:
    """Add one export's spans to ``stats``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    stats.exports += 1
    stats.bytes += len(body)
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            stats.spans += len(scope.spans)
            stats.children += sum(1 for span in scope.spans if span.parent_span_id)


def app() -> web.Application:
    stats = SinkStats()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        try:
            count(body, stats)
        except Exception:  # a malformed body: answered as a collector would, and counted
            stats.rejected += 1
            return web.Response(status=400)
        return web.Response(body=_EMPTY_ANSWER, content_type="application/x-protobuf")

    async def stats_json(_: web.Request) -> web.Response:
        return web.json_response({**asdict(stats), "cpu_seconds": time.process_time()})

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post("/v1/traces", traces)
    application.router.add_get("/__stats", stats_json)
    return application


def spawn() -> tuple[subprocess.Popen[str], int]:
    """Run the sink as a child process; returns (process, port)."""
    args = [sys.executable, "-m", "tests.perf.otlp_sink"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "READY":
        proc.kill()
        raise RuntimeError(f"otlp_sink did not start: {line!r}")
    return proc, int(line[1])


async def _serve(host: str, port: int) -> None:
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind((host, port))
    await web.SockSite(runner, sock).start()
    print(f"READY {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    ns = p.parse_args(argv)
    asyncio.run(_serve(ns.host, ns.port))


if __name__ == "__main__":
    main()
