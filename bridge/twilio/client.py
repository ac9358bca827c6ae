"""Send ``TwilioCall``s over pooled HTTP connections with each credential's Basic auth.

httpx is the API; the transport is chosen by setting because httpx's own transport collapses
under concurrency on these machines (design.md §4) while the aiohttp transport keeps up.
httpx and aiohttp exceptions are translated here into the bridge's error tree, so the rest of
the bridge never sees them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from bridge import __version__
from bridge.calls import TwilioCall
from bridge.errors import BridgeError, CallNotSent, CallTimeout, CallTransportError
from bridge.metrics import TWILIO_REQUEST_SECONDS, TWILIO_REQUESTS, status_class
from bridge.outcomes import HttpResult
from bridge.settings import Credential, TwilioSettings

__all__ = ["TwilioClient", "basic_auth_header"]

USER_AGENT = f"twilio-kafka-bridge/{__version__}"


def basic_auth_header(credential: Credential) -> str:
    """The ``Authorization`` value for a credential; computed once, never logged."""
    token = f"{credential.username}:{credential.password.get_secret_value()}"
    return "Basic " + base64.b64encode(token.encode()).decode()


def _never_sent(exc: BaseException) -> bool:
    """True when the failure happened before the request could reach Twilio."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return True
    # The aiohttp transport maps every connection error to ConnectTimeout, including a
    # server that hung up mid-response, so only its cause can tell a refused connect apart.
    return isinstance(exc, httpx.ConnectError | httpx.PoolTimeout) or (
        isinstance(exc, httpx.ConnectTimeout) and cause is None
    )


@contextmanager
def _translate(call: TwilioCall) -> Iterator[None]:
    where = f"{call.method} {call.path.split('?', 1)[0]}"
    try:
        yield
    except httpx.HTTPError as exc:
        if _never_sent(exc):
            raise CallNotSent(f"could not connect to Twilio for {where}") from None
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            raise CallTimeout(f"no answer from Twilio in time for {where}") from None
        # Exception type names only: messages can carry URLs, never worth the risk in a reply.
        cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
        raise CallTransportError(
            f"connection to Twilio failed during {where}: {type(exc).__name__}{cause}"
        ) from None


class TwilioClient:
    """An HTTP client for every Twilio host and credential."""

    def __init__(
        self,
        settings: TwilioSettings,
        credentials: Mapping[str, Credential],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections if settings.keepalive else 0,
            keepalive_expiry=settings.keepalive_expiry_s,
        )
        if transport is None and settings.transport == "aiohttp":
            transport = AiohttpTransport(limits=limits)
        self._http = httpx.AsyncClient(
            transport=transport,
            limits=limits,
            timeout=httpx.Timeout(
                settings.response_timeout_s,
                connect=settings.connect_timeout_s,
                pool=settings.response_timeout_s,
            ),
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
            follow_redirects=False,
        )
        self._auth = {name: basic_auth_header(cred) for name, cred in credentials.items()}

    async def send(self, call: TwilioCall) -> HttpResult:
        """Send one call and read the whole answer; raises the bridge's call errors."""
        headers = [*call.headers, ("authorization", self._auth[call.credential])]
        api, operation = call.api or "advanced", call.operation or "advanced"
        started = time.perf_counter()
        try:
            with _translate(call):
                response = await self._http.request(
                    call.method, call.url, content=call.content, headers=headers
                )
                content = await response.aread()
        except BridgeError:
            TWILIO_REQUESTS.labels(api, operation, call.method, "none").inc()
            raise
        TWILIO_REQUEST_SECONDS.labels(api, call.method).observe(time.perf_counter() - started)
        TWILIO_REQUESTS.labels(
            api, operation, call.method, status_class(response.status_code)
        ).inc()
        return HttpResult(
            status=response.status_code,
            headers=tuple(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw
            ),
            content=content,
            content_type=response.headers.get("content-type"),
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()
