"""Fuzzing the HTTP app's webhook endpoint in-process: form, JSON, garbage, huge, forged.

The contract under test (``bridge.inbound.webhooks.receiver``, ``bridge.app.http``): whatever
arrives, the answer is one of the documented statuses (200 400 403 404 405 413 415 503), never a 500
and never an exception out of the app; events go to Kafka only for a 2xx (or a 503, when Kafka did
not acknowledge them in time); a webhook validly signed by the official Twilio signer that carries
its family's fields is published as exactly one event (an Event Streams batch as one event per
CloudEvent); a missing or forged signature publishes nothing.

Kafka is a delivery that records what it is given (``tests.helpers.RecordingDelivery``).
"""

from __future__ import annotations

import hashlib
import os
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from bridge.app.http import create_app
from bridge.config import WEBHOOK_FAMILIES, WebhookSettings
from bridge.contract.events import EVENT_STREAMS, FAMILIES
from bridge.inbound.webhooks.receiver import WebhookReceiver
from bridge.twilio.accounts import Accounts
from tests.helpers import ACCOUNT, AUTH_TOKEN, CREDENTIALS, RecordingDelivery

SHARED_KEY_ID, SHARED_SECRET = "KS" + "1" * 32, "shared-secret-for-fuzzing"
ORIGIN = "http://testserver"
DOCUMENTED = {200, 400, 403, 404, 405, 413, 415, 503}
MAX_BODY = 16 * 1024
FORM = "application/x-www-form-urlencoded"
PROPERTY = settings(
    database=None,  # the suite leaves no files in the checkout
    max_examples=int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Config:
    """How the app under test is set up."""

    validate: bool = True
    acknowledge: bool = True
    max_record_bytes: int = 1 << 20

    def client(self, delivery: RecordingDelivery) -> httpx.AsyncClient:
        webhook = WebhookSettings(
            validate_signatures=self.validate,
            max_body_bytes=MAX_BODY,
            shared_keys={SHARED_KEY_ID: SecretStr(SHARED_SECRET)},
        )
        receiver = WebhookReceiver(webhook, Accounts(CREDENTIALS), delivery, self.max_record_bytes)
        app = create_app(receiver, webhook, lambda: {"started": True})
        return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=ORIGIN)


configs = st.builds(
    Config,
    validate=st.booleans() | st.just(True),
    acknowledge=st.booleans() | st.just(True),
    max_record_bytes=st.sampled_from([1 << 20, 1 << 20, 200]),
)


@dataclass(frozen=True, repr=False)
class Webhook:
    """One HTTP request, and what is known of its answer from how it was built."""

    kind: str
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]
    body: bytes | None = None  # None: streamed in chunks, without a content-length
    chunks: tuple[bytes, ...] = ()
    signed: bool = False  # signed by the official signer over what is sent
    # A well-formed webhook: the size of each event's data (its Kafka value), and the subject.
    sizes: tuple[int, ...] | None = None
    subject: str | None = None
    family: str = ""

    def __repr__(self) -> str:
        size = len(self.body) if self.body is not None else sum(map(len, self.chunks))
        shown = (self.body or b"".join(self.chunks))[:200]
        return (
            f"Webhook({self.kind!r}, {self.method} {self.target[:200]!r}, "
            f"headers={self.headers!r:.400}, {size} bytes: {shown!r})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


# --- well-formed webhooks, signed by the official signer -----------------------------------------

sids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
statuses = st.sampled_from(["queued", "sent", "delivered", "in-progress", "completed", "x y"])
names = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=12)
values = st.text(max_size=40)


class Params:
    """Form parameters as the official signer takes them (a MultiDict-like ``getall``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.pairs))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


def signature(url: str, pairs: list[tuple[str, str]], secret: str = AUTH_TOKEN, **kw: str) -> str:
    return str(RequestValidator(secret).compute_signature(url, Params(pairs), **kw))


PREFIXES = {"MessageSid": "SM", "CallSid": "CA", "RecordingSid": "RE", "ConferenceSid": "CF"}


def data_size(pairs: list[tuple[str, str]]) -> int:
    """The size of the event data for these form parameters: a repeated name makes a list."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    data = {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}
    return len(orjson.dumps(data))


@st.composite
def required_fields(draw: st.DrawFn, family: str) -> tuple[list[tuple[str, str]], str]:
    sid_param, template = FAMILIES[family]
    subject = PREFIXES[sid_param] + draw(sids)
    pairs = [("AccountSid", ACCOUNT), (sid_param, subject)]
    if "{" in template:
        pairs.append((template[template.index("{") + 1 : -1], draw(statuses)))
    return pairs, subject


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(names, values), max_size=3))
    return urlencode(pairs, quote_via=quote)


@st.composite
def signed_webhooks(draw: st.DrawFn) -> Webhook:
    """A family's webhook as Twilio sends it: form POST, GET, or JSON with bodySHA256."""
    family = draw(st.sampled_from(sorted(FAMILIES)))
    required, subject = draw(required_fields(family))
    extra = draw(st.lists(st.tuples(names, values), max_size=6))
    pairs = required + extra
    query = draw(query_strings())
    path = f"/webhooks/twilio/{family}"
    headers = {"i-twilio-idempotency-token": draw(names)} if draw(st.booleans()) else {}
    style = draw(st.sampled_from(["form", "form", "get", "json"]))
    shared = draw(st.booleans())
    secret, how = (SHARED_SECRET, {"algorithm": "HMAC_SHA256"}) if shared else (AUTH_TOKEN, {})
    if shared:
        settings_value = f"key={SHARED_KEY_ID},algorithm=HMAC_SHA256"
        headers["x-twilio-webhooks-signature-settings"] = settings_value
    if style == "get":
        target = f"{path}?{urlencode(pairs, quote_via=quote)}"
        headers["x-twilio-signature"] = signature(ORIGIN + target, [], secret, **how)
        body = b""
    elif style == "form":
        target = f"{path}?{query}" if query else path
        headers["x-twilio-signature"] = signature(ORIGIN + target, pairs, secret, **how)
        headers["content-type"] = draw(st.sampled_from([FORM, FORM + "; charset=utf-8"]))
        body = urlencode(pairs).encode()
    else:
        body = orjson.dumps(dict(pairs))
        pairs = list(dict(pairs).items())  # a JSON object keeps the last of a repeated name
        digest = hashlib.sha256(body).hexdigest()
        target = f"{path}?{query + '&' if query else ''}bodySHA256={digest}"
        headers["x-twilio-signature"] = signature(ORIGIN + target, [], secret, **how)
        headers["content-type"] = "application/json"
    method = "GET" if style == "get" else "POST"
    kind = f"signed {style} {family}"
    sizes = (data_size(pairs),)
    return Webhook(kind, method, target, headers, body, (), True, sizes, subject, family)


cloud_events = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": names,
        "source": st.just("/2010-04-01/Accounts/" + ACCOUNT),
        "type": st.just("com.twilio.messaging.message.delivered"),
        "data": st.fixed_dictionaries({"messageSid": names}),
    },
    optional={"subject": names, "time": names, "ext1": values},
)


@st.composite
def signed_event_streams(draw: st.DrawFn) -> Webhook:
    """An Event Streams delivery: one CloudEvent, or a batch, JSON with bodySHA256."""
    batch = draw(st.booleans())
    items = draw(st.lists(cloud_events, min_size=1, max_size=4)) if batch else [draw(cloud_events)]
    body = orjson.dumps(items if batch else items[0])
    target = f"/webhooks/twilio/{EVENT_STREAMS}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    headers = {
        "x-twilio-signature": signature(ORIGIN + target, []),
        "content-type": draw(st.sampled_from(["application/json", "application/cloudevents+json"])),
    }
    kind = f"signed event streams ({len(items)})"
    sizes = tuple(len(orjson.dumps(item["data"])) for item in items)
    return Webhook(kind, "POST", target, headers, body, (), True, sizes, None, EVENT_STREAMS)


# --- the same, spoiled --------------------------------------------------------------------------


@st.composite
def forged_webhooks(draw: st.DrawFn) -> Webhook:
    """A well-formed webhook whose signature is missing, wrong, or over other bytes."""
    good = draw(signed_webhooks() | signed_event_streams())
    headers = dict(good.headers)
    how = draw(st.sampled_from(["missing", "random", "wrong token", "tampered", "other url"]))
    target, body = good.target, good.body or b""
    if how == "missing":
        del headers["x-twilio-signature"]
    elif how == "random":
        headers["x-twilio-signature"] = draw(st.text(string.printable.strip(), max_size=40))
    elif how == "wrong token":
        headers.pop("x-twilio-webhooks-signature-settings", None)
        url = ORIGIN + target
        headers["x-twilio-signature"] = signature(url, [], "not-" + AUTH_TOKEN)
    elif how == "tampered":
        if good.method == "GET":
            target += "&Tampered=1"
        elif headers.get("content-type", "").startswith(FORM):
            body += b"&Tampered=1"
        else:
            body = body.replace(b"{", b'{"Tampered":1,', 1)
    else:
        target += ("&" if "?" in target else "?") + "Other=1"
    kind = f"{how} signature, {good.kind}"
    # Tampering changes the data, and so does another query for a GET.
    changed = how == "tampered" or (how == "other url" and good.method == "GET")
    sizes = None if changed else good.sizes
    return Webhook(
        kind, good.method, target, headers, body, (), False, sizes, good.subject, good.family
    )


# --- hostile and malformed ----------------------------------------------------------------------

content_types = st.sampled_from(
    [
        FORM,
        "application/json",
        "application/cloudevents-batch+json",
        "APPLICATION/JSON; charset=latin-1",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
        ";;",
        "application/x-www-form-urlencoded; charset=\x7f",
    ]
)
families = st.sampled_from(WEBHOOK_FAMILIES) | st.text(max_size=20)
methods = st.sampled_from(["GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])


def _deep(depth: int) -> bytes:
    return (
        b'{"AccountSid":"'
        + ACCOUNT.encode()
        + b'","MessageSid":"SM1","x":'
        + (b"[" * depth + b"]" * depth)
        + b"}"
    )


bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=8).map(
        lambda pairs: urlencode(pairs).encode()
    ),
    st.builds(
        lambda pairs: orjson.dumps(dict(pairs)),
        st.lists(st.tuples(st.sampled_from(["AccountSid", "MessageSid", "x"]), values), max_size=4),
    ),
    st.sampled_from([b"%", b"a=%zz", b"&&", b"=", b"\xff=\xfe", b"[]", b"null", b"{}", b"[{}]"]),
    st.integers(min_value=200, max_value=1100).map(_deep),
    st.integers(min_value=MAX_BODY - 2, max_value=MAX_BODY + 2).map(lambda n: b"a=" + b"b" * n),
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)


# Host headers that URL parsers trip on: the URL checked for the signature is built from it.
ODD_HOSTS = ["[::1", "[::1]:80", "[x]", "a:b:c", "testserver:99999", "", "x" * 300, "a b", "é"]
odd_hosts = st.sampled_from(ODD_HOSTS) | header_values


@st.composite
def odd_host_webhooks(draw: st.DrawFn) -> Webhook:
    """A signed webhook arriving with another Host header than the one it was signed for."""
    good = draw(signed_webhooks() | signed_event_streams())
    headers = {**good.headers, "host": draw(odd_hosts)}
    return Webhook("odd host", good.method, good.target, headers, good.body, family=good.family)


@st.composite
def hostile_requests(draw: st.DrawFn) -> Webhook:
    """Anything: method, family, content type, body, signature and Host all drawn."""
    family = draw(families)
    method = draw(methods)
    target = f"/webhooks/twilio/{quote(family, safe='')}"
    if draw(st.booleans()):
        target += "?" + draw(query_strings() | st.sampled_from(["bodySHA256=00", "%zz", "a&&b"]))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["content-type"] = draw(content_types | header_values)
    if draw(st.booleans()):
        headers["x-twilio-signature"] = draw(header_values)
    if draw(st.booleans()):
        headers["x-twilio-webhooks-signature-settings"] = draw(
            header_values | st.just(f"key={SHARED_KEY_ID},algorithm=HMAC_SHA512")
        )
    if draw(st.booleans()):
        headers["host"] = draw(odd_hosts)
    body = draw(bodies)
    if draw(st.booleans()) and method not in ("GET", "HEAD"):
        size = draw(st.integers(min_value=1, max_value=8))
        chunks = tuple(body[i : i + size] for i in range(0, len(body), size))
        return Webhook("streamed", method, target, headers, None, chunks, family=family)
    return Webhook("hostile", method, target, headers, body, family=family)


@st.composite
def signed_odd_bodies(draw: st.DrawFn) -> Webhook:
    """Validly signed but odd: deep JSON, non-object JSON, huge form, missing fields."""
    family = draw(st.sampled_from(WEBHOOK_FAMILIES))
    body = draw(bodies)
    content_type = draw(content_types)
    digest = hashlib.sha256(body).hexdigest()
    target = f"/webhooks/twilio/{family}?bodySHA256={digest}"
    headers = {"content-type": content_type, "x-twilio-signature": signature(ORIGIN + target, [])}
    return Webhook("signed odd body", "POST", target, headers, body, family=family)


requests = st.one_of(
    signed_webhooks(),
    signed_event_streams(),
    forged_webhooks(),
    odd_host_webhooks(),
    hostile_requests(),
    hostile_requests(),
    signed_odd_bodies(),
)


# --- the property -------------------------------------------------------------------------------


async def send(http: httpx.AsyncClient, webhook: Webhook) -> httpx.Response:
    content: bytes | AsyncIterator[bytes]
    if webhook.body is not None:
        content = webhook.body
    else:

        async def stream() -> AsyncIterator[bytes]:
            for chunk in webhook.chunks:
                yield chunk

        content = stream()
    # Bytes, so that any Latin-1 header value goes through as it is.
    headers = [(name.encode(), value.encode("latin-1")) for name, value in webhook.headers.items()]
    return await http.request(webhook.method, webhook.target, content=content, headers=headers)


@PROPERTY
@given(webhook=requests, config=configs)
async def test_every_webhook_gets_a_documented_answer_and_the_right_events(
    webhook: Webhook, config: Config
) -> None:
    note(f"{webhook!r}\n{config!r}")
    event(webhook.kind.split(",")[0].split(" (")[0])
    delivery = RecordingDelivery(config.acknowledge)
    async with config.client(delivery) as http:
        answer = await send(http, webhook)  # an exception out of the app fails the test
    event(f"status {answer.status_code}")
    assert answer.status_code in DOCUMENTED, (answer.status_code, answer.text[:300])
    published = delivery.events
    if answer.status_code not in (200, 503):
        assert published == [], f"{answer.status_code} but published {len(published)} events"
    else:
        assert published, f"{answer.status_code} without an event"
        assert answer.status_code == (200 if config.acknowledge else 503)
        assert {topic for topic, _ in published} == {f"twilio.events.{webhook.family}"}
    if webhook.sizes is None:
        return
    # A well-formed webhook: its answer is known.
    if webhook.signed or not config.validate:
        fits = all(size <= config.max_record_bytes for size in webhook.sizes)
        expected = (200 if config.acknowledge else 503) if fits else 413
        assert answer.status_code == expected, answer.text[:300]
        if fits:
            assert len(published) == len(webhook.sizes)
            assert [len(e.value()) for _, e in published] == list(webhook.sizes)
            if webhook.subject is not None:
                assert [e.subject for _, e in published] == [webhook.subject]
    else:
        assert answer.status_code == 403 and published == [], answer.text[:300]


@pytest.mark.parametrize("host", ODD_HOSTS)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_odd_host_header_is_refused_not_a_crash(host: str, method: str) -> None:
    delivery = RecordingDelivery(acknowledge=True)
    target = f"/webhooks/twilio/messages?AccountSid={ACCOUNT}&MessageSid=SM1"
    headers = [(b"host", host.encode("latin-1")), (b"content-type", FORM.encode())]
    async with Config().client(delivery) as http:
        answer = await http.request(method, target, content=b"a=b", headers=headers)
    assert answer.status_code in (400, 403), answer.text
    assert delivery.events == []


async def test_signer_and_receiver_agree_once_without_hypothesis() -> None:
    """The oracle's premise: what the official signer signs is accepted, the rest refused."""
    url = f"{ORIGIN}/webhooks/twilio/messages"
    pairs = [("AccountSid", ACCOUNT), ("MessageSid", "SM1"), ("Body", "hi")]
    signed = {"content-type": FORM, "x-twilio-signature": signature(url, pairs)}
    body = urlencode(pairs).encode()
    for headers, status in ((signed, 200), ({"content-type": FORM}, 403)):
        delivery = RecordingDelivery(acknowledge=True)
        async with Config().client(delivery) as http:
            answer = await http.post(url, content=body, headers=headers)
        assert answer.status_code == status
        assert len(delivery.events) == (1 if status == 200 else 0)
