"""A cheap, fault-injecting local stand-in for the Twilio REST API.

Run it as its own process so its CPU does not count against the code under test::

    python tests/support/fast_twilio.py --port 0 --latency-ms 100 --error-rate 0.01 \
        --rate-429 0.01 --retry-after 1 --reset-rate 0.01 --account-limit 100 \
        --slow-rate 0.01 --slow-ms 2000 --bodies 100

It prints ``READY <port>`` once listening. Every path answers: POST → 201, DELETE → 204,
anything else → 200, with a small Twilio-like JSON body and a fresh ``SM…`` sid, after
``--latency-ms`` (a timer, never blocking), or, for a share ``--slow-rate`` of requests, after
``--slow-ms``. By rate it instead answers 500 or 503 (half each, Twilio errors 20500 and
20503), 429 (20429, ``Retry-After`` unless ``--retry-after`` is negative) or resets the
connection without answering.

Like Twilio, every answer carries ``Twilio-Concurrent-Requests``: the requests in flight when
it arrived, plus ``--others`` held by the account's other clients. With ``--account-limit`` a
request arriving over that many in flight is answered 429 (20429) at once.

With ``--post-status 503`` every POST is answered 503 (Twilio error 20503) instead, as in an
outage that refuses new messages; ``POST /__config?post_status=0`` (any field of ``Config``)
changes the configuration of the running mock, so a test can make it recover; ``fetch_status``
is the status a GET of one resource answers (default ``queued``).

``GET /__stats`` returns request counts (total, by method, by ``"METHOD /path"``, by
``I-Request-Id`` and ``X-Test-Id`` header, faults injected), the last ``--bodies`` POST bodies
(100 by default; as they arrived, before any answer), the last 100 ``traceparent`` headers, the
peak in flight, the first and last arrival time (seconds) of each ``X-Test-Id`` and the mock's
CPU seconds; ``POST /__reset`` zeroes the counts. Those three paths are never delayed, faulted
or counted.

It is a plain ``asyncio.Protocol`` with a minimal HTTP/1.1 parser: keep-alive,
``Content-Length`` bodies, ``Connection: close``; requests on one connection are answered in
order. No chunked request bodies (answered 411), no TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["Config", "main", "serve", "spawn"]

REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request"}
REASONS |= {411: "Length Required", 429: "Too Many Requests", 500: "Internal Server Error"}
REASONS |= {503: "Service Unavailable"}
MAX_HEAD = 64 * 1024
SID_PREFIX = f"{random.getrandbits(32):08x}"  # sids stay fresh across mock restarts


@dataclass
class Config:
    latency: float = 0.0  # seconds
    error_rate: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1  # negative: no Retry-After header
    reset_rate: float = 0.0
    account_limit: int = 0  # 0: no concurrency limit
    others: int = 0  # requests the account's other clients keep in flight
    post_status: int = 0  # answer every POST with this status (500 or 503); 0: as usual
    fetch_status: str = "queued"  # the status a GET of one resource answers
    slow_rate: float = 0.0  # share of requests answered after ``slow`` instead of ``latency``
    slow: float = 0.0  # seconds

    def update(self, query: str) -> None:
        """Set fields from a query string (``post_status=0&latency=0.1``), cast to their type."""
        for name, value in parse_qsl(query):
            if name in self.__dataclass_fields__:
                setattr(self, name, type(getattr(self, name))(value))


@dataclass
class Stats:
    keep: int = 100  # POST bodies kept (--bodies): bounded, the mock runs for hours in soaks
    total: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    by_request_id: Counter[str] = field(default_factory=Counter)
    by_test_id: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    sids: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    bodies: deque[str] = field(init=False)  # the last ``keep`` POST bodies
    traceparents: deque[str] = field(default_factory=lambda: deque(maxlen=100))  # last sent

    def __post_init__(self) -> None:
        self.bodies = deque(maxlen=self.keep)

    def reset(self) -> None:
        in_flight = self.in_flight
        self.__dict__.update(Stats(self.keep).__dict__)
        self.in_flight = in_flight  # requests still being answered

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_method": self.by_method,
            "by_route": self.by_route,
            "by_request_id": self.by_request_id,
            "by_test_id": self.by_test_id,
            "faults": self.faults,
            "arrivals": self.arrivals,
            "peak_in_flight": self.peak_in_flight,
            "bodies": list(self.bodies),
            "traceparents": list(self.traceparents),
            "cpu_seconds": time.process_time(),  # of the whole mock process, never reset
        }


def _error(code: int, status: int, message: str) -> bytes:
    info = f"https://www.twilio.com/docs/errors/{code}"
    doc = {"code": code, "message": message, "more_info": info, "status": status}
    return json.dumps(doc).encode()


SERVER_ERRORS = {
    500: _error(20500, 500, "An internal server error has occurred"),
    503: _error(20503, 503, "Service Unavailable"),
}
ERROR_429 = _error(20429, 429, "Too Many Requests")


class MockProtocol(asyncio.Protocol):
    def __init__(self, config: Config, stats: Stats) -> None:
        self.config, self.stats = config, stats
        self.buf = b""
        self.busy = False  # a delayed answer is pending; later requests wait in buf
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._send(400, b"", close=True)
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self._send(400, b"", close=True)
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                self._send(411, b"", close=True)
                return
            size = headers.get("content-length", "0")
            if not size.isdigit():
                self._send(400, b"", close=True)
                return
            stop = end + 4 + int(size)
            if len(self.buf) < stop:
                return
            if parts[0] == "POST":
                self.stats.bodies.append(self.buf[end + 4 : stop].decode(errors="replace"))
            self.buf = self.buf[stop:]
            conn = headers.get("connection", "").lower()
            close = conn == "close" or (parts[2] == "HTTP/1.0" and conn != "keep-alive")
            self._handle(parts[0], parts[1], headers, close)

    def _handle(self, method: str, target: str, headers: dict[str, str], close: bool) -> None:
        path = target.partition("?")[0]
        stats = self.stats
        if path == "/__stats":
            self._send(200, json.dumps(stats.as_json()).encode(), close)
            return
        if path == "/__reset":
            stats.reset()
            self._send(200, b'{"ok": true}', close)
            return
        if path == "/__config":
            self.config.update(target.partition("?")[2])
            self._send(200, b'{"ok": true}', close)
            return
        stats.total += 1
        stats.by_method[method] += 1
        stats.by_route[f"{method} {path}"] += 1
        if "i-request-id" in headers:
            stats.by_request_id[headers["i-request-id"]] += 1
        if "traceparent" in headers:
            stats.traceparents.append(headers["traceparent"])
        if "x-test-id" in headers:
            test_id = headers["x-test-id"]
            stats.by_test_id[test_id] += 1
            now = time.monotonic()
            stats.arrivals.setdefault(test_id, [now, now])[1] = now
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        account = stats.in_flight + self.config.others
        concurrent = f"Twilio-Concurrent-Requests: {account}\r\n"
        if self.config.account_limit and account > self.config.account_limit:
            stats.faults["429 over the account limit"] += 1
            stats.in_flight -= 1
            self._send(429, ERROR_429, close, concurrent)
        elif (delay := self._delay()) > 0:
            self.busy = True
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self._answer, method, path, close, concurrent)
        else:
            self._answer(method, path, close, concurrent)

    def _delay(self) -> float:
        if self.config.slow_rate and random.random() < self.config.slow_rate:
            self.stats.faults["slow"] += 1
            return self.config.slow
        return self.config.latency

    def _answer(self, method: str, path: str, close: bool, concurrent: str) -> None:
        cfg, stats = self.config, self.stats
        stats.in_flight -= 1
        r = random.random()
        if r < cfg.reset_rate:
            stats.faults["reset"] += 1
            self.busy = False
            self._reset()
            return
        r -= cfg.reset_rate
        if method == "POST" and cfg.post_status:
            stats.faults[f"{cfg.post_status} for POST"] += 1
            self._send(cfg.post_status, SERVER_ERRORS[cfg.post_status], close, concurrent)
        elif r < cfg.error_rate:
            status = 500 if r < cfg.error_rate / 2 else 503
            stats.faults[str(status)] += 1
            self._send(status, SERVER_ERRORS[status], close, concurrent)
        elif r - cfg.error_rate < cfg.rate_429:
            stats.faults["429"] += 1
            extra = f"Retry-After: {cfg.retry_after}\r\n" if cfg.retry_after >= 0 else ""
            self._send(429, ERROR_429, close, concurrent + extra)
        elif method == "DELETE":
            self._send(204, b"", close, concurrent)
        else:
            stats.sids += 1
            body = _resource(path, stats.sids, cfg.fetch_status if method == "GET" else "queued")
            self._send(201 if method == "POST" else 200, body, close, concurrent)
        if self.busy:
            self.busy = False
            self._drain()

    def _send(self, status: int, body: bytes, close: bool, extra: str = "") -> None:
        if self.transport is None:
            return
        head = (
            f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            f"Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n{extra}"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if close:
            self.transport.close()
            self.transport = None

    def _reset(self) -> None:
        """Drop the connection with a TCP RST, answering nothing."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
        self.transport = None


def _resource(path: str, n: int, status: str = "queued") -> bytes:
    segments = path.split("/")
    account = segments[3] if len(segments) > 3 and segments[2] == "Accounts" else "AC" + "0" * 32
    named = segments[-1].removesuffix(".json")
    # A fetch of one resource (…/Messages/SM….json) answers with that SID.
    sid = named if len(named) == 34 and named[:2] in ("SM", "CA") else f"SM{SID_PREFIX}{n:024x}"
    uri = path.removesuffix(".json") + f"/{sid}.json" if path.endswith("s.json") else path
    doc: dict[str, str | None] = {"sid": sid, "account_sid": account, "status": status}
    doc["api_version"] = "2010-04-01"
    doc |= {"num_segments": "1", "error_code": None, "error_message": None, "uri": uri}
    return json.dumps(doc).encode()


async def serve(
    config: Config, host: str = "127.0.0.1", port: int = 0, bodies: int = 100
) -> asyncio.Server:
    """Start the mock in the running loop, keeping the last ``bodies`` POST bodies; the bound
    port is server.sockets[0]."""
    stats = Stats(bodies)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: MockProtocol(config, stats), host, port, backlog=1024)


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    """Run this file as a child process with CLI ``args``; returns (process, port)."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "READY":
        proc.kill()
        raise RuntimeError(f"fast_twilio did not start: {line!r}")
    return proc, int(line[1])


async def _main(ns: argparse.Namespace) -> None:
    # By name: Config gains fields, and a positional list would shift silently.
    config = Config(
        latency=ns.latency_ms / 1000,
        error_rate=ns.error_rate,
        rate_429=ns.rate_429,
        retry_after=ns.retry_after,
        reset_rate=ns.reset_rate,
        account_limit=ns.account_limit,
        others=ns.others,
        post_status=ns.post_status,
        slow_rate=ns.slow_rate,
        slow=ns.slow_ms / 1000,
    )
    server = await serve(config, ns.host, ns.port, ns.bodies)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0, help="share answered 500/503")
    p.add_argument("--rate-429", type=float, default=0.0, help="share answered 429")
    p.add_argument("--retry-after", type=int, default=1, help="seconds; negative: no header")
    p.add_argument("--reset-rate", type=float, default=0.0, help="share reset unanswered")
    p.add_argument("--account-limit", type=int, default=0, help="429 past this many in flight")
    p.add_argument("--others", type=int, default=0, help="in flight from other clients")
    p.add_argument("--post-status", type=int, default=0, choices=(0, *SERVER_ERRORS))
    p.add_argument("--slow-rate", type=float, default=0.0, help="share answered after --slow-ms")
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--bodies", type=int, default=100, help="POST bodies kept for /__stats")
    p.add_argument("--seed", type=int, default=None)
    ns = p.parse_args(argv)
    random.seed(ns.seed)
    asyncio.run(_main(ns))


if __name__ == "__main__":
    main()
