"""Signed-webhook load generator, and a bare HTTP server to compare the bridge's ingest with.

    python -m tests.perf.webhook_load load http://127.0.0.1:8080 --requests 20000 \
        --concurrency 64 --token AUTH_TOKEN [--account AC…] [--family messages]
    python -m tests.perf.webhook_load bare --port 0        # prints READY <port>

``load`` first builds a pool of distinct inbound-SMS webhooks as Twilio sends them (the ~20
form parameters of a real one, a fresh ``MessageSid`` each and an ``I-Twilio-Idempotency-Token``
header), each signed by Twilio's own ``twilio.request_validator.RequestValidator`` for the URL
it is posted to; signing happens before the clock starts. Then C workers on one aiohttp session
(C keep-alive connections) post them back to back, each request once, and it prints one JSON
line: requests, answers by status, the window from the first request sent to the last answer,
accepted (200) per second, p50/p95/p99 answer times and its own CPU.

``bare`` serves the same route (``POST /webhooks/twilio/{family}``) with the bridge's own
``bridge.http.server.HttpServer`` (uvicorn in the process's loop) and a Starlette app that reads
the body and answers empty TwiML: the HTTP stack alone, no signature check, no Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from bridge.config import HttpSettings
from bridge.http.server import HttpServer

FORM = "application/x-www-form-urlencoded"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def inbound_sms(account: str, n: int) -> dict[str, str]:
    """The parameters of an inbound-SMS webhook, as Twilio sends them."""
    sid = f"SM{uuid.uuid4().hex}"
    return {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "SAN FRANCISCO",
        "FromZip": "94105",
        "SmsSid": sid,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": f"Hello from the load generator, message {n}",
        "FromCountry": "US",
        "To": "+14155550100",
        "MessagingServiceSid": "MG" + "5" * 32,
        "ToZip": "94105",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": account,
        "From": f"+1415555{n % 10000:04d}",
        "ApiVersion": "2010-04-01",
    }


def signed_pool(
    base: str, family: str, token: str, account: str, count: int
) -> list[tuple[bytes, dict[str, str]]]:
    """``count`` distinct (body, headers) pairs, signed for ``base``/webhooks/twilio/family."""
    validator = RequestValidator(token)
    url = f"{base}/webhooks/twilio/{family}"
    pool = []
    for n in range(count):
        params = inbound_sms(account, n)
        headers = {
            "content-type": FORM,
            "x-twilio-signature": validator.compute_signature(url, params),
            "i-twilio-idempotency-token": str(uuid.uuid4()),
        }
        pool.append((urlencode(params).encode(), headers))
    return pool


async def load(
    base: str, family: str, token: str, account: str, requests: int, concurrency: int
) -> dict[str, Any]:
    pool = signed_pool(base, family, token, account, requests)
    path = f"{base}/webhooks/twilio/{family}"
    statuses: Counter[int] = Counter()
    times: list[float] = []
    errors: Counter[str] = Counter()
    cpu0 = time.process_time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        todo = iter(pool)

        async def worker() -> None:
            for body, headers in todo:
                sent = time.perf_counter()
                try:
                    async with session.post(path, data=body, headers=headers) as answer:
                        await answer.read()
                        statuses[answer.status] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                times.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        window = time.perf_counter() - started
    times.sort()
    n = len(times)

    def pct(q: float) -> float:
        return times[min(n - 1, int(n * q))] * 1000 if n else float("nan")

    return {
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "window_s": window,
        "accepted_per_s": statuses[200] / window,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "cpu_s": time.process_time() - cpu0,
    }


async def bare(port: int) -> None:
    async def webhook(request: Request) -> Response:
        await request.body()
        return Response(EMPTY_TWIML, 200, media_type="text/xml; charset=utf-8")

    app = Starlette(routes=[Route("/webhooks/twilio/{family}", webhook, methods=["POST"])])
    server = HttpServer(app, HttpSettings(host="127.0.0.1", port=port), grace_s=1)
    await server.start()
    print(f"READY {server.port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("base", help="scheme://host:port the webhooks are posted (and signed) for")
    lp.add_argument("--family", default="messages")
    lp.add_argument("--token", required=True, help="the account's Auth Token")
    lp.add_argument("--account", default="AC" + "0" * 32)
    lp.add_argument("--requests", type=int, default=20_000)
    lp.add_argument("--concurrency", type=int, default=64)
    bp = sub.add_parser("bare")
    bp.add_argument("--port", type=int, default=0)
    ns = p.parse_args(argv)
    if ns.command == "load":
        result = asyncio.run(
            load(ns.base, ns.family, ns.token, ns.account, ns.requests, ns.concurrency)
        )
        print(json.dumps(result), flush=True)
    else:
        asyncio.run(bare(ns.port))


if __name__ == "__main__":
    main()
