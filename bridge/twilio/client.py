"""Send ``TwilioCall``s over pooled HTTP connections with their account's Basic auth.

Two transports, chosen by ``BRIDGE_TWILIO__TRANSPORT``: ``aiohttp`` (the default) calls aiohttp's
``ClientSession`` directly, and ``httpx`` uses httpx's ``AsyncClient`` with its own transport (whose
connection pool collapses under concurrency: an eighth of aiohttp's requests/s or less at 64 in
flight, README "Dependencies and why"; kept for tests, which inject an ``httpx.MockTransport``, and
as a fallback). aiohttp is called directly rather than through httpx (``httpx-aiohttp``): building
httpx's request and response models cost more CPU than aiohttp spent sending, twice the client's CPU
per call (tests/perf/README.md). Both send the same request: the URL exactly as httpx would (its
percent-encoding, no re-quoting), the same headers, no cookies, no redirects, no retries but
aiohttp's own single retry of an idempotent request on a stale keep-alive connection.

Each transport's exceptions are translated here into the bridge's error tree, so the rest of
the bridge never sees them: ``CallNotSent`` only when the request surely never left (no
connection could be had), ``CallTimeout`` when the answer did not come in time, and
``CallTransportError`` for every other failure of the connection.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from functools import lru_cache

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bridge import __version__
from bridge.config import TwilioSettings
from bridge.contract.errors import BridgeError, CallNotSent, CallTimeout, CallTransportError
from bridge.observability.metrics import (
    TWILIO_REQUEST_SECONDS,
    TWILIO_REQUESTS,
    labelled,
    status_class,
)
from bridge.observability.tracing import TRACE_HEADERS, AttributeValue, tracer
from bridge.twilio.calls import TwilioCall
from bridge.twilio.responses import HttpResult, twilio_code

__all__ = ["TwilioClient", "wire_url"]

USER_AGENT = f"twilio-kafka-bridge/{__version__}"
# What httpx sends by default besides these, so both transports send the same headers.
_DEFAULT_HEADERS = {
    "user-agent": USER_AGENT,
    "accept": "application/json",
    "accept-encoding": "gzip, deflate",
}
# A URL of these characters only, with every '%' starting an escape and no '.' segment, is
# what httpx would send unchanged; anything else goes through httpx's own normalisation.
_AS_IS = re.compile(r"^https?://[a-z0-9.:\[\]-]+(/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)?$")
_AS_IS_QUERY = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*$")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def wire_url(url: str) -> URL:
    """``url`` as httpx would put it on the wire (percent-encoded, ``.`` segments resolved),
    for aiohttp to send unchanged (``encoded=True``: yarl would otherwise re-quote it,
    decoding ``%2F`` and ``%41`` or turning spaces into ``+``)."""
    # Most calls of a stream share their URL (CreateMessage: the account's Messages.json).
    return _cached_wire_url(url) if len(url) <= _CACHED_URL_LENGTH else _wire_url(url)


def _wire_url(url: str) -> URL:
    plain = _ESCAPE.sub("", url)
    base, _, query = plain.partition("?")
    if _AS_IS.match(base) and _AS_IS_QUERY.match(query) and "/." not in base:
        return URL(url, encoded=True)
    return URL(str(httpx.URL(url)), encoded=True)


_CACHED_URL_LENGTH = 512
_cached_wire_url = lru_cache(maxsize=1024)(_wire_url)


def _where(call: TwilioCall) -> str:
    return f"{call.method} {call.path.split('?', 1)[0]}"


def _failed(call: TwilioCall, exc: BaseException) -> CallTransportError:
    # Exception type names only: messages can carry URLs, never worth the risk in a reply.
    cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
    return CallTransportError(
        f"connection to Twilio failed during {_where(call)}: {type(exc).__name__}{cause}"
    )


class _AiohttpTransport:
    """aiohttp's ``ClientSession``, created on first use (it wants a running loop)."""

    def __init__(self, settings: TwilioSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str | None], tuple[URL | None, aiohttp.BasicAuth | None]]
        self._proxies = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            # Waiting for a pooled connection and connecting: nothing was sent yet.
            connect=settings.response_timeout_s,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.response_timeout_s,
        )

    def _open(self) -> aiohttp.ClientSession:
        settings = self._settings
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections,
            limit_per_host=0,
            force_close=not settings.keepalive,
            keepalive_timeout=settings.keepalive_expiry_s if settings.keepalive else None,
            # The CA bundle httpx would use (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
            ssl=httpx.create_ssl_context(trust_env=True),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Instead of aiohttp's own User-Agent, Accept and Accept-Encoding. (A call with a
            # body always has its Content-Type: aiohttp's default is never used.)
            headers=_DEFAULT_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            # aiohttp's trust_env looks the proxy and ~/.netrc up again for every request, in a
            # thread: the proxy is looked up once per origin instead (see _proxy).
            trust_env=False,
            auto_decompress=True,
        )
        return self._session

    def _proxy(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """HTTP(S)_PROXY / NO_PROXY from the environment for ``url``, as httpx honours them."""
        key = (url.scheme, url.host)
        found = self._proxies.get(key)
        if found is None:
            try:
                found = get_env_proxy_for_url(url)
            except LookupError:
                found = (None, None)
            self._proxies[key] = found
        return found

    async def __call__(
        self, call: TwilioCall, headers: list[tuple[str, str]]
    ) -> tuple[int, tuple[tuple[str, str], ...], bytes, str | None]:
        session = self._session or self._open()
        url = wire_url(call.url)
        proxy, proxy_auth = self._proxy(url)
        try:
            async with session.request(
                call.method,
                url,
                data=call.content or None,
                headers=headers,
                allow_redirects=False,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as response:
                content = await response.read()
                status = response.status
                raw = response.raw_headers
                content_type = response.headers.get("content-type")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            # No connection could be had (refused, DNS, TLS, proxy, pool or connect timeout):
            # aiohttp raises these before writing a byte of the request.
            raise CallNotSent(f"could not connect to Twilio for {_where(call)}") from None
        except TimeoutError:  # SocketTimeoutError: no (whole) answer within sock_read
            raise CallTimeout(f"no answer from Twilio in time for {_where(call)}") from None
        except aiohttp.InvalidURL:
            raise  # a bug in building the call, not a network failure: the reply says internal
        except aiohttp.ClientError as exc:
            raise _failed(call, exc) from None
        headers_out = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)
        return status, headers_out, content, content_type

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _never_sent(exc: httpx.HTTPError) -> bool:
    """True when httpx failed before the request could reach Twilio."""
    return isinstance(exc, httpx.ConnectError | httpx.PoolTimeout | httpx.ConnectTimeout)


class _HttpxTransport:
    """httpx's ``AsyncClient``, with its own transport or an injected one (tests)."""

    def __init__(
        self, settings: TwilioSettings, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections if settings.keepalive else 0,
            keepalive_expiry=settings.keepalive_expiry_s,
        )
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

    async def __call__(
        self, call: TwilioCall, headers: list[tuple[str, str]]
    ) -> tuple[int, tuple[tuple[str, str], ...], bytes, str | None]:
        try:
            response = await self._http.request(
                call.method, call.url, content=call.content, headers=headers
            )
            content = await response.aread()
        except httpx.HTTPError as exc:
            if _never_sent(exc):
                raise CallNotSent(f"could not connect to Twilio for {_where(call)}") from None
            if isinstance(exc, httpx.TimeoutException):
                raise CallTimeout(f"no answer from Twilio in time for {_where(call)}") from None
            raise _failed(call, exc) from None
        raw = response.headers.raw
        headers_out = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)
        return response.status_code, headers_out, content, response.headers.get("content-type")

    async def aclose(self) -> None:
        await self._http.aclose()


def _span_attributes(
    call: TwilioCall, template: str, attempt: int
) -> dict[str, AttributeValue | None]:
    url = wire_url(call.url)
    return {
        "http.request.method": call.method,
        "url.template": template,
        "url.scheme": url.scheme,
        "server.address": url.host,
        "server.port": url.port,
        "twilio.api": call.api,
        "twilio.operation": call.operation,
        "twilio.attempt": attempt,
        "http.request.resend_count": attempt - 1 if attempt > 1 else None,
    }


class TwilioClient:
    """An HTTP client for every Twilio host and credential."""

    def __init__(
        self,
        settings: TwilioSettings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` (an httpx transport, for tests) implies the httpx client."""
        self._transport: _AiohttpTransport | _HttpxTransport
        if transport is None and settings.transport == "aiohttp":
            self._transport = _AiohttpTransport(settings)
        else:
            self._transport = _HttpxTransport(settings, transport)
        self.in_flight = 0  # requests sent and not answered, for a gauge

    async def send(self, call: TwilioCall, attempt: int = 1) -> HttpResult:
        """Send one call (its ``attempt``-th time) and read the whole answer; raises the
        bridge's call errors. With tracing on, each attempt is an HTTP client span whose
        context goes to Twilio in ``traceparent``."""
        spans = tracer()
        if not spans.enabled:
            return await self._send(call, call.headers)
        template = call.url_template
        # HTTP client spans are named '{method} {url.template}' (semantic conventions).
        name = f"{call.method} {template}"
        with spans.client(name, _span_attributes(call, template, attempt)) as span:
            # The span's context replaces any the envelope forwarded: one traceparent only.
            kept = [(k, v) for k, v in call.headers if k.lower() not in TRACE_HEADERS]
            result = await self._send(call, (*kept, *span.http_headers().items()))
            span.set("http.response.status_code", result.status)
            if result.status >= 400:
                span.fail(str(result.status))
                span.set("twilio.error_code", twilio_code(result))
            return result

    async def _send(self, call: TwilioCall, headers: Iterable[tuple[str, str]]) -> HttpResult:
        api, operation = call.api or "advanced", call.operation or "advanced"
        started = time.perf_counter()
        self.in_flight += 1
        try:
            status, headers_out, content, content_type = await self._transport(
                call, [*headers, ("authorization", call.account.auth)]
            )
        except BridgeError:
            labelled(TWILIO_REQUESTS, api, operation, call.method, "none").inc()
            raise
        finally:
            self.in_flight -= 1
        elapsed = time.perf_counter() - started
        labelled(TWILIO_REQUEST_SECONDS, api, call.method).observe(elapsed)
        labelled(TWILIO_REQUESTS, api, operation, call.method, status_class(status)).inc()
        return HttpResult(
            status=status, headers=headers_out, content=content, content_type=content_type
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._transport.aclose()
