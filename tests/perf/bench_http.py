"""HTTP client transport benchmark against tests/support/fast_twilio.py.

    .venv/bin/python tests/perf/bench_http.py            # full matrix, ~1.5 min
    .venv/bin/python tests/perf/bench_http.py --duration 1 --concurrency 64

Each case (client x concurrency x mock latency) runs in a fresh child process pinned to CPU 0
(the mock is pinned to CPU 1 when there are two or more CPUs), so every case starts cold and
`time.process_time()` is the client's CPU alone. The request is a Twilio CreateMessage look-
alike: POST of a small form body with a Basic auth header; the JSON answer is read and parsed
with orjson in every client. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script, too
from bridge.config import Credential, TwilioSettings  # noqa: E402
from bridge.twilio.accounts import Account  # noqa: E402
from bridge.twilio.calls import TwilioCall  # noqa: E402
from bridge.twilio.client import TwilioClient  # noqa: E402
from tests.helpers import ACCOUNT, AUTH_TOKEN  # noqa: E402
from tests.support.fast_twilio import spawn  # noqa: E402

PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
FORM = {"To": "+15005550006", "From": "+15005550001", "Body": "Your code is 123456"}
AUTH = (ACCOUNT, AUTH_TOKEN)
CLIENTS = {
    "httpx": "httpx AsyncClient, default transport, default Limits (100 conns / 20 keep-alive)",
    "httpx-pool": "httpx AsyncClient, default transport, Limits(max_connections=max_keepalive=C)",
    "httpx-aiohttp": "httpx AsyncClient + httpx_aiohttp.AiohttpTransport, TCPConnector(limit=C)",
    "aiohttp": "raw aiohttp ClientSession, TCPConnector(limit=C)",
    "bridge": "the bridge's own TwilioClient (its default transport, max_connections=C)",
}

Send = Callable[[], Awaitable[None]]


def _connector(concurrency: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30, ttl_dns_cache=300)


def _bridge_client(base: str, concurrency: int) -> TwilioClient:
    settings = TwilioSettings(base_url=base, max_connections=concurrency)
    return TwilioClient(settings)


def _httpx_send(client: httpx.AsyncClient) -> Send:
    async def send() -> None:
        r = await client.post(PATH, data=FORM)
        orjson.loads(r.content)
        assert r.status_code == 201, r.status_code

    return send


async def _run_case(kind: str, base: str, concurrency: int, duration: float) -> dict[str, Any]:
    timeout = 30.0
    close: Callable[[], Awaitable[None]]
    send: Send
    if kind == "aiohttp":
        session = aiohttp.ClientSession(
            base,
            connector=_connector(concurrency),
            auth=aiohttp.BasicAuth(*AUTH),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

        async def send() -> None:
            async with session.post(PATH, data=FORM) as r:
                orjson.loads(await r.read())
                assert r.status == 201, r.status

        close = session.close
    elif kind == "bridge":
        twilio = _bridge_client(base, concurrency)
        call = TwilioCall(
            method="POST",
            url=base + PATH,
            path=PATH,
            account=Account.from_settings(
                "default",
                Credential(account_sid=AUTH[0], auth_token=SecretStr(AUTH[1])),
                calls=False,
            ),
            headers=(("content-type", "application/x-www-form-urlencoded"),),
            content=urlencode(FORM).encode(),
            api="api.v2010",
            operation="CreateMessage",
        )

        async def send() -> None:
            result = await twilio.send(call)
            orjson.loads(result.content)
            assert result.status == 201, result.status

        close = twilio.aclose
    else:
        kwargs: dict[str, Any] = {}
        if kind == "httpx-pool":
            kwargs["limits"] = httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            )
        elif kind == "httpx-aiohttp":
            session = aiohttp.ClientSession(connector=_connector(concurrency))
            kwargs["transport"] = AiohttpTransport(client=session)
        client = httpx.AsyncClient(base_url=base, auth=AUTH, timeout=timeout, **kwargs)
        send, close = _httpx_send(client), client.aclose
    try:
        return await _drive(send, concurrency, duration)
    finally:
        await close()


async def _drive(send: Send, concurrency: int, duration: float) -> dict[str, Any]:
    """Closed loop: `concurrency` workers send back to back; the first 0.5 s is warm-up."""
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop = False

    async def worker() -> None:
        nonlocal errors
        while not stop:
            t = time.perf_counter()
            try:
                await send()
            except Exception:
                errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - t)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0.5)
    measuring = True
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(duration)
    measuring = False
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stop = True
    await asyncio.gather(*tasks)
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rps": n / wall,
        "p50_ms": latencies[n // 2] * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "cpu_ms_per_1k": cpu / n * 1e6 if n else float("nan"),
        "cpu_util": cpu / wall,
    }


def _child(ns: argparse.Namespace) -> None:
    if ns.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {ns.cpu})
    result = asyncio.run(_run_case(ns.one, ns.base, ns.concurrency[0], ns.duration))
    print(json.dumps(result))


def run_client(
    kind: str, base: str, concurrency: int, duration: float, cpu: int | None
) -> dict[str, Any]:
    """One case in a fresh child process, pinned to ``cpu`` (None: not pinned)."""
    args = [sys.executable, __file__, "--one", kind, "--base", base]
    args += ["--concurrency", str(concurrency), "--duration", str(duration)]
    args += ["--no-pin"] if cpu is None else ["--cpu", str(cpu)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return {"failed": True}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _mock_cpu(base: str) -> float:
    with httpx.Client(base_url=base) as c:
        cpu: float = c.get("/__stats").json()["cpu_seconds"]
        return cpu


def _bench(ns: argparse.Namespace) -> None:
    pin = ns.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    ns.pin = pin
    cases = [(lat, c) for lat in ns.latency_ms for c in ns.concurrency]
    cases += [(lat, c) for lat, c in ns.extra]
    header = f"{'latency':>7} {'conc':>4} {'client':<14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    header += f" {'CPU ms/1k':>9} {'cpu%':>5} {'err':>4} {'mock ms/1k':>10} {'vs aiohttp':>10}"
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}, pinned: {pin}")
    for kind in ns.clients:
        print(f"  {kind:<14} {CLIENTS[kind]}")
    print(header)
    mocks: dict[float, tuple[subprocess.Popen[str], str]] = {}
    try:
        for lat, conc in cases:
            if lat not in mocks:
                proc, port = spawn("--latency-ms", str(lat))
                if pin:
                    os.sched_setaffinity(proc.pid, {1})
                mocks[lat] = (proc, f"http://127.0.0.1:{port}")
            base = mocks[lat][1]
            rows: dict[str, dict[str, Any]] = {}
            for kind in ns.clients:
                best: dict[str, Any] = {}
                for _ in range(ns.repeat):
                    m0 = _mock_cpu(base)
                    r = run_client(kind, base, conc, ns.duration, 0 if ns.pin else None)
                    if r.get("requests"):
                        r["mock_ms_per_1k"] = (_mock_cpu(base) - m0) / r["requests"] * 1e6
                    if r.get("rps", 0) >= best.get("rps", 0):
                        best = r
                rows[kind] = best
            ref = rows.get("aiohttp", {}).get("rps")
            for kind, r in rows.items():
                if r.get("failed"):
                    print(f"{lat:>5.0f}ms {conc:>4} {kind:<14} FAILED")
                    continue
                ratio = f"{r['rps'] / ref:>9.2f}x" if ref else f"{'-':>10}"
                print(
                    f"{lat:>5.0f}ms {conc:>4} {kind:<14} {r['rps']:>8.0f} {r['p50_ms']:>8.2f}"
                    f" {r['p99_ms']:>8.2f} {r['cpu_ms_per_1k']:>9.0f} {r['cpu_util']:>5.0%}"
                    f" {r['errors']:>4} {r.get('mock_ms_per_1k', 0):>10.0f} {ratio}",
                    flush=True,
                )
    finally:
        for proc, _ in mocks.values():
            proc.terminate()
            proc.wait(10)
    print(f"load average after: {os.getloadavg()}")


def _pair(text: str) -> tuple[float, int]:
    lat, _, conc = text.partition(":")
    return float(lat), int(conc)


def main() -> None:
    p = argparse.ArgumentParser(description="HTTP client transport benchmark")
    p.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[4, 64, 256])
    p.add_argument("--latency-ms", nargs="+", type=float, default=[0.0])
    p.add_argument(
        "--extra",
        nargs="*",
        type=_pair,
        default=[(100.0, 256)],
        help="extra LATENCY_MS:CONCURRENCY cases (default 100:256)",
    )
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per case")
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the best is shown")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    p.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--one", choices=list(CLIENTS), help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.one:
        _child(ns)
    else:
        _bench(ns)


if __name__ == "__main__":
    main()
