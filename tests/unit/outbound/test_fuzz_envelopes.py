"""Fuzzing ``Processor.process`` with envelopes: valid, almost valid and hostile.

The contract under test (``bridge.outbound.processor``): ``process`` never raises and never
stalls, and for every record gives exactly

- a reply when, and only when, the payload is a JSON object whose ``id`` is a string of 1 to
  256 characters, carrying that id (``ok`` or ``error``);
- an error record when, and only when, there is no reply or the reply is an error: the same
  id and error as the reply, where it came from, and what a replay needs (the JSON object as
  ``request``, or else the payload's bytes in base64 as ``raw``).

Beyond the contract: nothing an envelope holds is the bridge's fault (error kind ``internal``),
both records validate against the published JSON Schemas, and neither outgrows its input by
more than a bounded factor (they must fit on the same Kafka topics).

Payloads are built knowing what they are (a JSON object, or not JSON at all) rather than by
asking a second parser; see ``Case``. Twilio is an ``httpx.MockTransport`` answering at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from bridge.contract.envelopes import MAX_DEPTH
from bridge.kafka.records import Record
from bridge.outbound.processor import Outcome
from bridge.twilio.catalog import Catalog, Operation
from bridge.twilio.retry import RetryPolicy
from tests.helpers import SCHEMAS, outbound_processor

TOPIC, PARTITION = "twilio.requests", 5

REPLY_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "reply.schema.json").read_text()))
ERROR_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "error-record.schema.json").read_text()))
# "Never stalls": every record, however hostile, is answered within this.
PER_RECORD_S = 5.0
# Retries without waiting; an envelope may still ask for (bounded, tiny) waits of its own.
POLICY = RetryPolicy(max_attempts=2, base_delay_s=0, max_delay_s=0)
# No example database: the suite must not leave files in the checkout. More examples for a
# longer hunt: BRIDGE_FUZZ_EXAMPLES=5000 pytest tests/unit/outbound/test_fuzz_envelopes.py
PROPERTY = settings(
    database=None,
    max_examples=int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MIB = 1 << 20


# What the bridge may add to a request's weight: its own fields, an error message (cut at 4 KiB),
# up to 50 names a list, some warnings, the mock's small answer.
OVERHEAD = 64 * 1024


# --- what a payload is ---------------------------------------------------------------------------


class _NotJson:
    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Any = _NotJson()


@dataclass(frozen=True, repr=False)
class Case:
    """A payload and, known from how it was built, what the bridge must make of it."""

    family: str
    raw: bytes | None
    document: Any  # the JSON object the payload is, or NOT_JSON (not an object, not JSON)
    valid: bool = False  # a valid envelope: with Twilio answering 2xx, the reply is ok
    too_deep: bool = False  # an object nested too deeply to echo: replayed from its bytes

    def __repr__(self) -> str:
        # Short, and flat: the document may be nested too deeply for any pretty-printer.
        raw = repr(self.raw[:300]) if self.raw is not None else "None"
        size = len(self.raw) if self.raw is not None else 0
        return f"Case({self.family!r}, {size} bytes: {raw}, reply_id={self.reply_id!r:.80})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's pretty-printer
        printer.text(repr(self))

    def size_bound(self) -> int:
        """The most a reply or error record may weigh, serialised: what it echoes, and more.

        The error record keeps the request re-encoded (``1e9`` is ``1000000000.0`` then), or
        the bytes in base64; a reply echoes no more than the request's ``metadata``.
        """
        if isinstance(self.document, dict) and not self.too_deep:
            echoed = len(json.dumps(self.document, ensure_ascii=False).encode())
        else:
            echoed = (len(self.raw or b"") + 2) // 3 * 4
        return echoed + OVERHEAD

    @property
    def reply_id(self) -> str | None:
        """The id the reply must carry; None when there must be no reply."""
        if not isinstance(self.document, dict):
            return None
        found = self.document.get("id")
        return found if isinstance(found, str) and 1 <= len(found) <= 256 else None


def dumps(document: Any, ascii_only: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ascii_only).encode()


def json_case(family: str, document: Any, ascii_only: bool = True, valid: bool = False) -> Case:
    """A payload that is the JSON text of ``document``."""
    is_object = isinstance(document, dict)
    return Case(family, dumps(document, ascii_only), document if is_object else NOT_JSON, valid)


# --- JSON values and valid envelopes -------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(min_size=1, max_size=40) | st.text(min_size=256, max_size=256)
names = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=1
)
header_names = st.sampled_from(["X-Trace-Id", "Twilio-Request-Id", "Authorization", "Host", "x-é"])
header_selection = st.none() | st.just("*") | st.lists(header_names, max_size=3) | st.just("A|B")


def _callable(op: Operation) -> bool:
    return op.auth != "oauth2"


OPERATIONS = [op for op in Catalog.load() if _callable(op)]


def _value_for(type_: str, items: str | None) -> st.SearchStrategy[Any]:
    scalars: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(min_size=1, max_size=30),
        "integer": st.integers(min_value=-(2**31), max_value=2**31),
        "number": st.floats(allow_nan=False, allow_infinity=False, width=32),
        "boolean": st.booleans(),
        "object": st.dictionaries(st.text(max_size=8), leaves, max_size=3),
    }
    if type_ == "array":
        return st.lists(scalars.get(items or "string", scalars["string"]), min_size=1, max_size=3)
    return scalars.get(type_, scalars["string"])


@st.composite
def options(draw: st.DrawFn) -> dict[str, Any]:
    """The envelope fields both modes share, each present or not, all valid."""
    chosen: dict[str, st.SearchStrategy[Any]] = {
        "query": st.dictionaries(names, leaves, max_size=3),
        "credential": st.just("default"),
        "response_format": st.sampled_from(["json", "xml", "csv"]),
        "request_headers": header_selection,
        "response_headers": header_selection,
        "follow_pages": st.booleans(),
        "max_pages": st.integers(min_value=1, max_value=3),
        "strict": st.none() | st.booleans(),
        "metadata": st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        "retry": st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "max_attempts": st.integers(min_value=1, max_value=3),
                "base_delay_s": st.floats(min_value=0, max_value=0.005),
                "max_delay_s": st.floats(min_value=0, max_value=0.005),
                "exponential": st.booleans(),
                "retry_all_errors": st.booleans(),
            },
        ),
        "filter_nulls": st.none() | st.booleans(),
    }
    keys = draw(st.sets(st.sampled_from(sorted(chosen))))
    return {key: draw(chosen[key]) for key in sorted(keys)}


@st.composite
def basic_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(OPERATIONS))
    params = {
        p.name: draw(st.text(min_size=1, max_size=20) | st.integers(0, 10**6))
        for p in op.params_in("path")
        if p.name != "AccountSid" or draw(st.booleans())
    }
    required = {
        where: {
            p.name: draw(_value_for(p.type, p.items)) for p in op.params_in(where) if p.required
        }
        for where in ("query", "body")
    }
    envelope: dict[str, Any] = {"id": draw(ids), "mode": "basic", "api": op.api}
    envelope |= {"operation": op.operation, **draw(options())}
    # Strict mode refuses what the spec does not know: only the spec's own names then.
    if envelope.get("strict"):
        envelope["query"] = {}
    envelope["query"] = {**envelope.get("query", {}), **required["query"]}
    envelope |= {"params": params, "body": required["body"]}
    return envelope


PATHS = st.lists(names, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@st.composite
def advanced_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "get", "Post"]))
    envelope: dict[str, Any] = {"id": draw(ids), "mode": "advanced", "method": method}
    envelope["path"] = draw(PATHS)
    body: st.SearchStrategy[Any] = (
        st.none() | st.dictionaries(names, leaves, max_size=3) | st.just("To=%2B1&Body=hi")
    )
    optional: dict[str, st.SearchStrategy[Any]] = {"body": body, "send_body": st.booleans()}
    envelope |= draw(st.fixed_dictionaries({}, optional=optional))
    return envelope | draw(options())


envelopes = basic_envelopes() | advanced_envelopes()


@st.composite
def valid_cases(draw: st.DrawFn) -> Case:
    envelope = draw(envelopes)
    return json_case("valid", envelope, ascii_only=draw(st.booleans()), valid=True)


# --- almost valid: one thing wrong ---------------------------------------------------------------

# What URL parsers trip on, for 'path' and 'next_page_uri'.
tricky_uris = st.sampled_from(
    [
        "//[::1",
        "http://[x/",
        "https://[::1/",
        "https://api.twilio.com:99999/x",
        "https://api.twilio.com/a?b#c",
        "https://evil.com\\@api.twilio.com/",
        "//evil.com/x",
        "/a/../b",
        "/a%2F..%2Fb",
        "/\x00",
        "/ä/😀",
        "/" + "a" * 70_000,
    ]
) | st.text(alphabet="/:[]@?#%.\\ ahx0\x00é", max_size=20)
wrong_ids = st.sampled_from(["", "x" * 257]) | json_values.filter(lambda v: not isinstance(v, str))


@st.composite
def almost_valid_cases(draw: st.DrawFn) -> Case:
    envelope = draw(envelopes)
    how = draw(st.sampled_from(["remove", "replace", "add", "id", "mode", "nested"]))
    key = draw(st.sampled_from(sorted(envelope)))
    if how == "remove":
        del envelope[key]
    elif how == "replace":
        envelope[key] = draw(json_values)
    elif how == "add":
        envelope[draw(st.text(max_size=12))] = draw(json_values)
    elif how == "id":
        envelope["id"] = draw(wrong_ids)
    elif how == "mode":
        envelope["mode"] = draw(st.sampled_from(["BASIC", "Advanced", "", "raw"]) | json_values)
    else:
        inner = {k: v for k, v in envelope.items() if isinstance(v, dict)}
        if inner:
            target = draw(st.sampled_from(sorted(inner)))
            envelope[target] = {**inner[target], draw(st.text(max_size=12)): draw(json_values)}
    return json_case(f"almost valid ({how} {key!r})", envelope, ascii_only=draw(st.booleans()))


@st.composite
def uri_cases(draw: st.DrawFn) -> Case:
    """An advanced path, or a page to fetch, that URL parsers trip on."""
    envelope = draw(advanced_envelopes() if draw(st.booleans()) else envelopes)
    key = "path" if envelope["mode"] == "advanced" and draw(st.booleans()) else "next_page_uri"
    envelope[key] = draw(tricky_uris)
    return json_case(f"tricky {key}", envelope, ascii_only=draw(st.booleans()))


# --- hostile ------------------------------------------------------------------------------------

MARK = "\x01MARK\x01"
MARK_TEXT = json.dumps(MARK).encode()  # the marker as it appears in JSON text, quotes included


# Bytes that spoil JSON text, in place of a value.
NOT_JSON_VALUES: dict[str, bytes] = {
    "raw NUL in a string": b'"a\x00b"',
    "raw control character": b'"\x1f"',
    "NUL between tokens": b"\x001",
    "invalid UTF-8": b'"\xff\xfe"',
    "overlong UTF-8": b'"\xc0\x80"',
    "UTF-8-encoded surrogate": b'"\xed\xa0\x80"',
    "truncated UTF-8": b'"\xe2\x82"',
    "lone high surrogate": b'"\\ud800"',
    "lone low surrogate": b'"\\udc00x"',
    "surrogates reversed": b'"\\ude00\\ud83d"',
    "1e309": b"1e309",
    "-1e309": b"-1e309",
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "single quotes": b"'x'",
    "bad escape": b'"\\x41"',
}
# Odd but valid JSON values, and what they stand for.
ODD_VALUES: dict[str, tuple[bytes, Any]] = {
    "escaped NUL": (b'"a\\u0000b"', "a\x00b"),
    "surrogate pair": (b'"\\ud83d\\ude00"', "\U0001f600"),
    "1e308": (b"1e308", 1e308),
    "underflow": (b"1e-400", 0.0),
    "negative zero": (b"-0.0", -0.0),
    "i64 max": (b"9223372036854775807", 2**63 - 1),
    "BMP noncharacter": (b'"\\uffff"', "\uffff"),
}
INJECTIONS = sorted(NOT_JSON_VALUES) + sorted(ODD_VALUES)


def injected(envelope: dict[str, Any], name: str, valid: bool) -> Case:
    """``envelope`` with ``metadata.note`` swapped, in its text, for an injection."""
    envelope = {**envelope, "metadata": {"note": MARK}}
    text = dumps(envelope, ascii_only=True)
    if name in NOT_JSON_VALUES:
        return Case(f"injected {name}", text.replace(MARK_TEXT, NOT_JSON_VALUES[name]), NOT_JSON)
    replacement, value = ODD_VALUES[name]
    envelope["metadata"] = {"note": value}
    return Case(f"injected {name}", text.replace(MARK_TEXT, replacement), envelope, valid=valid)


@st.composite
def injected_cases(draw: st.DrawFn) -> Case:
    return injected(draw(envelopes), draw(st.sampled_from(INJECTIONS)), valid=True)


def _nested(depth: int, as_list: bool) -> tuple[str, Any]:
    """JSON text nested ``depth`` levels, and its value, built without recursion."""
    value: Any = 1
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    if as_list:
        return "[" * depth + "1" + "]" * depth, value
    return '{"a":' * depth + "1" + "}" * depth, value


@st.composite
def deep_cases(draw: st.DrawFn) -> Case:
    """Nesting under a field: around the envelope limit, 1000+ (still JSON to the parser,
    whose limit is 1024 levels), and past the parser's limit."""
    envelope = draw(envelopes)
    depth = draw(
        st.integers(MAX_DEPTH - 4, MAX_DEPTH + 4)
        | st.integers(1000, 1020)
        | st.integers(1030, 5000)
    )
    field = draw(st.sampled_from(["metadata", "body", "query", "bogus"]))
    text, value = _nested(depth, as_list=draw(st.booleans()))
    envelope[field] = MARK
    raw = dumps(envelope, ascii_only=True).replace(MARK_TEXT, text.encode())
    family = f"nested {depth} under {field}"
    if depth > 1020:
        return Case(family, raw, NOT_JSON)
    envelope[field] = value
    # The envelope itself is the first level.
    return Case(family, raw, envelope, too_deep=1 + depth > MAX_DEPTH)


@st.composite
def huge_texts(draw: st.DrawFn) -> str:
    """One character repeated into up to a mebibyte of JSON text (escapes count)."""
    char = draw(st.characters())
    width = len(json.dumps(char)) - 2  # 1 for 'x', 6 for NUL, 12 for an astral character
    # The limits of id (256), operation (200), path (4096) and URL (65536), and a mebibyte.
    sizes = st.sampled_from([200, 201, 255, 256, 257, 4096, 4097, 65_536, 65_537, MIB // width])
    count = draw(sizes | st.integers(min_value=0, max_value=MIB // width))
    return char * count + draw(st.text(max_size=5))


huge_text = huge_texts()


@st.composite
def huge_cases(draw: st.DrawFn) -> Case:
    """Up to a mebibyte in one field, or one key, or many keys."""
    envelope = draw(envelopes)
    where = draw(st.sampled_from(["id", "path", "operation", "credential", "api", "field", "key"]))
    if where == "key":
        envelope[draw(huge_text)] = 1
    elif where == "field":
        target = draw(st.sampled_from(["metadata", "body", "query", "params"]))
        many = draw(st.sampled_from([0, 100, 5_000, 50_000]) | st.integers(0, 50_000))
        envelope[target] = {**{str(n): [] for n in range(many)}, "Body": draw(huge_text)}
    else:
        envelope[where] = draw(huge_text)
    return json_case(f"huge {where}", envelope, ascii_only=draw(st.booleans()))


@st.composite
def duplicate_key_cases(draw: st.DrawFn) -> Case:
    """A key given twice: the last one counts, as in JSON.parse and Python's json."""
    envelope = draw(envelopes)
    other = draw(ids | wrong_ids)
    inner = dumps(envelope, ascii_only=True)[1:]
    decoy = b'{"id":' + dumps(other, ascii_only=True) + b","
    if draw(st.booleans()):  # the decoy first, so the envelope's own id wins
        return Case("duplicate id, first", decoy + inner, envelope)
    late = inner[:-1] + b',"id":' + dumps(other, ascii_only=True) + b"}"
    return Case("duplicate id, last", b"{" + late, {**envelope, "id": other})


@st.composite
def broken_text_cases(draw: st.DrawFn) -> Case:
    """Valid JSON text spoiled: cut short, followed by more, or behind a byte order mark."""
    text = dumps(draw(envelopes), ascii_only=draw(st.booleans()))
    how = draw(st.sampled_from(["truncated", "trailing", "bom", "two documents"]))
    if how == "truncated":
        text = text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    elif how == "trailing":
        text += draw(st.sampled_from([b"x", b",", b"}", b"\x00", b"]"]))
    elif how == "bom":
        text = b"\xef\xbb\xbf" + text
    else:
        text += b"\n" + text
    return Case(how, text, NOT_JSON)


not_objects = json_values.filter(lambda v: not isinstance(v, dict))


def _from_bytes(raw: bytes) -> Case:
    """Random bytes: JSON only by a rare chance, which Python's json decides."""
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse)
    except (UnicodeDecodeError, ValueError):
        document = NOT_JSON
    return Case("random bytes", raw, document if isinstance(document, dict) else NOT_JSON)


def _refuse(name: str) -> None:
    raise ValueError(name)


cases: st.SearchStrategy[Case] = st.one_of(
    valid_cases(),
    valid_cases(),
    almost_valid_cases(),
    almost_valid_cases(),
    injected_cases(),
    injected_cases(),
    uri_cases(),
    deep_cases(),
    deep_cases(),
    huge_cases(),
    duplicate_key_cases(),
    broken_text_cases(),
    not_objects.map(lambda value: json_case("not an object", value)),
    st.binary(max_size=64).map(_from_bytes),
    st.sampled_from([None, b"", b" ", b"null", b"{}", b"[]", b'""']).map(
        lambda raw: Case("edge", raw, {} if raw == b"{}" else NOT_JSON)
    ),
)


# --- Twilio -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How the mock Twilio answers every request of one example."""

    status: int
    failure: type[httpx.RequestError] | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.status < 400


plans = st.builds(
    Plan,
    st.sampled_from([200, 201, 204, 400, 401, 404, 429, 500, 503]),
    st.sampled_from([None, None, None, httpx.ConnectError, httpx.ReadTimeout]),
)


def twilio(plan: Plan) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        request.read()
        if plan.failure is not None:
            raise plan.failure("simulated", request=request)
        if plan.status == 204:
            return httpx.Response(204)
        if plan.status >= 400:
            error = {"code": 20000 + plan.status, "message": "simulated", "status": plan.status}
            return httpx.Response(plan.status, json=error)
        # A list page, with one more page after the first (for follow_pages).
        more = None if "Page" in request.url.params else f"{request.url.path}?Page=1"
        page = {"messages": [{"sid": "SM1", "body": None}], "next_page_uri": more, "page": 0}
        return httpx.Response(plan.status, json=page, headers={"Twilio-Request-Id": "RQ1"})

    return answer


record_keys = st.none() | st.binary(max_size=16)
record_headers = st.lists(
    st.tuples(header_names | st.text(max_size=8), st.binary(max_size=16)), max_size=4
).map(tuple)


# --- the property -------------------------------------------------------------------------------


def same_json(left: Any, right: Any) -> bool:
    """Deep equality without recursion (nesting reaches 1000 levels), floats by value."""
    stack = [(left, right)]
    while stack:
        a, b = stack.pop()
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                return False
            stack += [(a[k], b[k]) for k in a]
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return False
            stack += zip(a, b, strict=True)
        elif isinstance(a, dict | list) or isinstance(b, dict | list):
            return False
        elif type(a) is not type(b) or a != b:
            return False
    return True


def check_outcome(case: Case, plan: Plan, record: Record, outcome: Outcome) -> None:
    reply, error = outcome.reply, outcome.error
    expected_id = case.reply_id
    # Exactly one reply per payload with a usable id, carrying it; none otherwise.
    if expected_id is None:
        assert reply is None, f"a reply to a payload without a usable id: {reply}"
    else:
        assert reply is not None, "no reply to a payload with an id"
        assert reply.id == expected_id
    # An error record exactly for the failures.
    failed = reply is None or reply.status == "error"
    assert (error is not None) == failed, (reply, error)
    if reply is not None:
        assert (reply.error is None) == (reply.status == "ok")
        if case.valid and plan.ok:
            assert reply.status == "ok", f"a valid envelope failed: {reply.error}"
    if error is None:
        return
    assert error.error.kind != "internal", f"the payload hit a bug: {error.error.message}"
    assert error.id == expected_id
    if reply is not None:
        assert error.error == reply.error
    source = error.source
    assert (source.topic, source.partition, source.offset) == (TOPIC, PARTITION, record.offset)
    assert source.key == (base64.b64encode(record.key).decode() if record.key is not None else None)
    assert source.timestamp_ms == record.timestamp_ms
    # What a replay needs: the request as JSON when it was an object, else its very bytes.
    if isinstance(case.document, dict) and not case.too_deep:
        assert error.raw is None
        assert error.request is not None and same_json(error.request, case.document)
    else:
        assert error.request is None
        assert reply is None or reply.status == "error"
        expected_raw = base64.b64encode(case.raw).decode() if case.raw is not None else None
        assert error.raw == expected_raw


def check_serialised(case: Case, outcome: Outcome) -> None:
    """Both records as the service publishes them: schema-valid and of bounded size."""
    for part, schema in ((outcome.reply, REPLY_SCHEMA), (outcome.error, ERROR_SCHEMA)):
        if part is None:
            continue
        text = part.model_dump_json().encode()
        bound = case.size_bound()
        assert len(text) <= bound, f"{type(part).__name__} of {len(text)} bytes, over {bound}"
        errors = [e.message[:200] for e in schema.iter_errors(orjson.loads(text))]
        assert not errors, errors


@PROPERTY
@given(
    case=cases,
    plan=plans,
    key=record_keys,
    headers=record_headers,
    offset=st.integers(min_value=0, max_value=2**62),
    timestamp=st.none() | st.integers(min_value=0, max_value=2**45),
)
async def test_every_payload_gets_exactly_the_outcome_it_should(
    case: Case,
    plan: Plan,
    key: bytes | None,
    headers: tuple[tuple[str, bytes], ...],
    offset: int,
    timestamp: int | None,
) -> None:
    note(f"{case!r}\n{plan!r}")
    event(case.family.split(" ")[0])
    event(f"payload of {len(case.raw or b'').bit_length()} bits' magnitude")
    record = Record(TOPIC, PARTITION, offset, key, case.raw, headers, timestamp)
    processor = outbound_processor(twilio(plan), POLICY)
    outcome = await asyncio.wait_for(processor.process(record), PER_RECORD_S)
    check_outcome(case, plan, record, outcome)
    check_serialised(case, outcome)


SMS: dict[str, Any] = {
    "id": "order-1",
    "mode": "basic",
    "operation": "CreateMessage",
    "body": {"To": "+15005550006", "From": "+15005550001", "Body": "hi"},
}


@pytest.mark.parametrize("name", INJECTIONS)
@pytest.mark.parametrize("plan", [Plan(201), Plan(503)], ids=["2xx", "5xx"])
async def test_each_injection_once_for_sure(name: str, plan: Plan) -> None:
    case = injected(SMS, name, valid=True)
    record = Record(TOPIC, PARTITION, 9, b"k", case.raw, (), None)
    processor = outbound_processor(twilio(plan), POLICY)
    outcome = await asyncio.wait_for(processor.process(record), PER_RECORD_S)
    check_outcome(case, plan, record, outcome)
    check_serialised(case, outcome)
    assert (outcome.reply is None) == (name in NOT_JSON_VALUES)


AMPLIFIERS: dict[str, dict[str, Any]] = {
    "50k bad params": {**SMS, "params": {str(n): [] for n in range(50_000)}},
    "50k unknown fields": {**SMS, **{f"x{n}": 0 for n in range(50_000)}},
    "50k unknown body params": {
        **SMS,
        "body": {**SMS["body"], **{str(n): 0 for n in range(50_000)}},
    },
    "a mebibyte-long key": {**SMS, "k" * MIB: 1},
    "a mebibyte-long credential": {**SMS, "credential": "c" * MIB},
    "a mebibyte-long api": {**SMS, "api": "a" * MIB},
    "a mebibyte-long operation": {**SMS, "operation": "o" * MIB},
}


@pytest.mark.parametrize("name", sorted(AMPLIFIERS))
async def test_what_amplifies_errors_stays_within_bounds(name: str) -> None:
    case = json_case(name, AMPLIFIERS[name])
    record = Record(TOPIC, PARTITION, 9, None, case.raw, (), None)
    processor = outbound_processor(twilio(Plan(201)), POLICY)
    outcome = await asyncio.wait_for(processor.process(record), PER_RECORD_S)
    check_outcome(case, Plan(201), record, outcome)
    check_serialised(case, outcome)


# --- the oracle itself --------------------------------------------------------------------------


def test_same_json_tells_apart_what_it_must() -> None:
    deep_a, deep_b = _nested(1500, False)[1], _nested(1500, True)[1]
    assert same_json(deep_a, _nested(1500, False)[1])
    assert not same_json(deep_a, deep_b)
    assert not same_json({"a": 1}, {"a": 1.0})
    assert not same_json([1, 2], [1])
    assert not same_json({"a": None}, {"b": None})


def test_case_reply_ids_follow_the_envelope_rules() -> None:
    assert Case("t", b"", {"id": "x"}).reply_id == "x"
    assert Case("t", b"", {"id": "x" * 256}).reply_id == "x" * 256
    assert Case("t", b"", {"id": "x" * 257}).reply_id is None
    assert Case("t", b"", {"id": ""}).reply_id is None
    assert Case("t", b"", {"id": 7}).reply_id is None
    assert Case("t", b"", NOT_JSON).reply_id is None
