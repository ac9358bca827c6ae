"""Turn a request envelope into a Twilio HTTP call: resolve, validate, encode. Pure, no I/O.

Basic envelopes are resolved against the catalog generated from Twilio's OpenAPI spec;
advanced ones are checked so that nothing but a relative path on a Twilio host is called.
Every problem of an envelope is collected and reported at once as ``RequestInvalid``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

from bridge.config import TwilioSettings
from bridge.contract.envelopes import AdvancedRequest, BasicRequest
from bridge.contract.errors import RequestInvalid, UnknownCredential, UnknownOperation
from bridge.twilio.accounts import Account, Accounts
from bridge.twilio.catalog import AmbiguousOperationError, Catalog, Operation, UnknownOperationError
from bridge.twilio.encoding import FORM, encode_form, format_scalar, parse_form, to_json
from bridge.twilio.headers import FORBIDDEN_REQUEST_HEADERS, select_headers

__all__ = ["CallBuilder", "TwilioCall", "origin_for", "path_names", "url_template"]

_DEFAULT_HOST = "https://api.twilio.com"
_TEMPLATE_FIELD = re.compile(r"\{(\w+)\}")
# Control characters, whitespace and backslashes have no place in a Twilio path and are the
# usual tools for smuggling another host past a URL parser.
_BAD_PATH_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_TWILIO_HOST = re.compile(r"^[a-z0-9.-]+\.twilio\.com$")
# httpx refuses a longer URL (an InvalidURL that is no HTTPError): refuse the envelope instead.
_MAX_URL_LENGTH = 65_536
# What a header may be on the wire (httpx encodes values as ASCII): the rest is not forwarded.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# Unknown parameters are warned about one by one up to this many, then counted.
_MAX_WARNED = 20
_MAX_NAME_SHOWN = 100
_MAX_ORIGINS = 256


@dataclass(frozen=True, slots=True)
class TwilioCall:
    """One HTTP request to Twilio, ready to send."""

    method: str
    url: str
    path: str
    # Resolved when the call is built: a deleted or changed instance does not affect it.
    account: Account = field(repr=False, compare=False)
    headers: tuple[tuple[str, str], ...] = ()
    content: bytes | None = None
    api: str | None = None
    operation: str | None = None
    warnings: tuple[str, ...] = ()
    sender: str | None = None
    # The path as the spec writes it ('/2010-04-01/Accounts/{AccountSid}/Messages.json'),
    # for a basic call.
    template: str | None = None
    # For an advanced call: the segments Twilio's paths are made of, which its template keeps.
    names: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def url_template(self) -> str:
        """What a span may show of the URL: the spec's template for a basic call, an advanced
        call's path with its values taken out."""
        return self.template or url_template(self.path, self.names)


# A Twilio SID: two letters, 32 hex digits.
_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}(\.json)?$")


def path_names(catalog: Catalog) -> frozenset[str]:
    """The fixed segments of the catalog's paths (``2010-04-01``, ``Accounts``,
    ``Messages.json``): every other segment of a Twilio path is a value."""
    return frozenset(
        segment for op in catalog for segment in op.path.split("/") if "{" not in segment
    )


def url_template(path: str, names: frozenset[str]) -> str:
    """``path`` without its query and with every value in it (a SID, a phone number, a name)
    replaced by a placeholder (``url.template`` in a span): only the segments in ``names``
    (``path_names``) are kept, so a value that merely looks like one (an identity ``Alice``)
    never shows."""
    segments = path.split("?", 1)[0].split("/")
    out = []
    for segment in segments:
        if not segment or segment in names:
            out.append(segment)
        elif _SID.match(segment):
            out.append("{Sid}.json" if segment.endswith(".json") else "{Sid}")
        else:
            out.append("{id}.json" if segment.endswith(".json") else "{id}")
    return "/".join(out)


def origin_for(host: str, settings: TwilioSettings) -> str:
    """The scheme and host to call for a Twilio host, after base-URL, region and edge rules."""
    domain = urlsplit(host).hostname or "api.twilio.com"
    product = domain.split(".", 1)[0]
    if settings.base_url:
        return settings.base_url.replace("{domain}", product)
    if settings.region or settings.edge:
        parts = [product, settings.edge, settings.region or "us1"]
        return "https://" + ".".join(p for p in parts if p) + ".twilio.com"
    return f"https://{domain}"


def _sender(body: Mapping[str, Any]) -> str | None:
    """Who a message or call goes out as, for per-sender pacing; Twilio prefers the service."""
    sender = body.get("MessagingServiceSid") or body.get("From")
    return str(sender) if sender is not None and not isinstance(sender, list) else None


def _join(path: str, query: str) -> str:
    if not query:
        return path
    return f"{path}&{query}" if "?" in path else f"{path}?{query}"


@dataclass(frozen=True, slots=True)
class _OpSpec:
    """What building a call needs from an operation's spec, worked out once per operation."""

    names_in_path: tuple[str, ...]
    # (location, names of its required params, names of all its params), query then body
    locations: tuple[tuple[str, tuple[str, ...], frozenset[str]], ...]
    flatten: dict[str, str]  # param name -> prefix, for prefixed-collapsible maps
    # Header params of the spec, given in ``params``: lower-cased name -> the spec's spelling.
    headers: dict[str, str]
    required_headers: tuple[str, ...]

    @classmethod
    def of(cls, op: Operation) -> _OpSpec:
        locations = []
        for where in ("query", "body"):
            params = op.params_in(where)
            required = tuple(p.name for p in params if p.required)
            locations.append((where, required, frozenset(p.name for p in params)))
        headers = op.params_in("header")
        return cls(
            names_in_path=tuple(_TEMPLATE_FIELD.findall(op.path)),
            locations=tuple(locations),
            flatten={p.name: p.prefix for p in op.params if p.style == "flatten" and p.prefix},
            headers={p.name.lower(): p.name for p in headers},
            required_headers=tuple(p.name for p in headers if p.required),
        )


# Operation -> its spec, by identity: the catalog's operations live as long as the process,
# and hashing an Operation would hash every one of its parameters on each lookup.
_SPECS: dict[int, tuple[Operation, _OpSpec]] = {}


def _spec(op: Operation) -> _OpSpec:
    found = _SPECS.get(id(op))
    if found is None or found[0] is not op:
        found = _SPECS[id(op)] = (op, _OpSpec.of(op))
    return found[1]


def _mismatches(
    spec: _OpSpec, request: BasicRequest, path_values: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Required parameters missing (name -> where it belongs) and parameters the spec does not
    know (name -> where it was given), each in the order of the spec and the request."""
    missing: dict[str, str] = {}
    unknown: dict[str, str] = {}
    names_in_path = spec.names_in_path
    for name in names_in_path:
        if not path_values.get(name):
            missing[name] = "params"
    if spec.required_headers:
        given_headers = {name.lower() for name in request.params}
        for name in spec.required_headers:
            if name.lower() not in given_headers:
                missing[name] = "params"
    for name in request.params:
        if name not in names_in_path and name.lower() not in spec.headers:
            unknown[name] = "params"
    for (where, required, known), given in zip(
        spec.locations, (request.query, request.body), strict=True
    ):
        for name in required:
            if given.get(name) is None:
                missing[name] = where
        for name in given:
            if name not in known:
                unknown[name] = where
    return missing, unknown


def _param_headers(spec: _OpSpec, params: Mapping[str, str | bool | int]) -> list[tuple[str, str]]:
    """The spec's header parameters given in ``params``, as (spec's name, value) to send;
    ``RequestInvalid`` for one the bridge sets itself or a value no header can carry."""
    sent: list[tuple[str, str]] = []
    if not spec.headers:  # most operations: nothing to look for
        return sent
    for given, value in params.items():
        name = spec.headers.get(given.lower())
        if name is None:
            continue
        text = format_scalar(value)
        if name.lower() in FORBIDDEN_REQUEST_HEADERS:
            raise RequestInvalid(
                f"params.{name}: set by the bridge, never taken from an envelope",
                invalid=[given],
            )
        if not _sendable(name, text):
            raise RequestInvalid(f"params.{name}: not a valid HTTP header value", invalid=[given])
        sent.append((name, text))
    return sent


def _with_headers(
    forwarded: tuple[tuple[str, str], ...], params: list[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """Forwarded record headers, where a header parameter of the envelope replaces its name."""
    if not params:
        return forwarded
    named = {name.lower() for name, _ in params}
    return (*(h for h in forwarded if h[0].lower() not in named), *params)


def _check_basic(
    op: Operation, request: BasicRequest, path_values: Mapping[str, str], strict: bool
) -> list[str]:
    """Warnings for ``request`` against ``op``; raises ``RequestInvalid`` naming every problem.

    ``missing`` and ``invalid`` hold bare parameter names as the spec spells them (``To``);
    the message says where each one belongs.
    """
    missing, unknown = _mismatches(_spec(op), request, path_values)
    invalid = unknown if strict else {}
    if missing or invalid:
        parts = []
        if missing:
            parts.append("missing required parameters: " + _listing(missing))
        if invalid:
            parts.append("not parameters of this operation in the spec: " + _listing(invalid))
        raise RequestInvalid(
            f"{op.operation}: " + "; ".join(parts), missing=list(missing), invalid=list(invalid)
        )
    ignored = {"params"} if op.content_type else {"params", "body"}
    warnings = [
        f"{where}.{_shown(name)}: not in the spec of {op.operation}, "
        + ("ignored" if where in ignored else "sent anyway")
        for name, where in list(unknown.items())[:_MAX_WARNED]
    ]
    if len(unknown) > _MAX_WARNED:
        warnings.append(f"{len(unknown) - _MAX_WARNED} more parameters not in the spec")
    return warnings


def _listing(names: Mapping[str, str]) -> str:
    return ", ".join(f"{name} ({where})" for name, where in names.items())


def _basic_body(op: Operation, request: BasicRequest, flatten: Mapping[str, str]) -> bytes | None:
    """The encoded body: form or JSON as the spec says; empty (``{}`` for JSON) for a bare POST."""
    # Without a body in the spec, _check_basic has already warned about every field given.
    if op.content_type is None or not (request.body or op.method in ("POST", "PUT", "PATCH")):
        return None
    if op.is_json:
        return to_json(request.body).encode()
    return encode_form(request.body, flatten).encode()


def _unencodable(field: str, exc: ValueError) -> RequestInvalid:
    return RequestInvalid(f"{field} cannot be encoded: {exc}", invalid=[field])


def _shown(name: str) -> str:
    """A name from the envelope as it may appear in a warning: a long one is cut."""
    return name if len(name) <= _MAX_NAME_SHOWN else name[:_MAX_NAME_SHOWN] + "…"


def _sendable(name: str, value: str) -> bool:
    return bool(_HEADER_NAME.match(name) and _HEADER_VALUE.match(value))


def _split(uri: str, field: str) -> SplitResult:
    try:
        return urlsplit(uri)
    except ValueError:  # such as "Invalid IPv6 URL" for '//[x'
        raise _not_relative(field) from None


def _not_relative(field: str) -> RequestInvalid:
    return RequestInvalid(
        f"{field} must be a relative path on the Twilio host, such as "
        "'/2010-04-01/Accounts/AC…/Messages.json'",
        invalid=[field],
    )


@dataclass(frozen=True, slots=True)
class _Body:
    """An advanced envelope's body as it goes out: bytes, sender, and why nothing was sent."""

    content: bytes | None = None
    sender: str | None = None
    warnings: tuple[str, ...] = ()


def _advanced_body(request: AdvancedRequest) -> _Body:
    """The form body of an advanced envelope: a string sent as given once it parses as form
    data, or an object encoded; GET and DELETE send none unless ``send_body`` is true."""
    sends_body = request.method in ("POST", "PUT", "PATCH") or request.send_body
    if not sends_body:
        if request.body is None:
            return _Body()
        return _Body(
            warnings=(f"body not sent: {request.method} sends none unless send_body is true",)
        )
    if isinstance(request.body, str):
        try:
            sender = _sender(dict(parse_form(request.body)))
        except ValueError:
            raise RequestInvalid(
                "body is not form-encoded data (name=value&...)", invalid=["body"]
            ) from None
        return _Body(request.body.encode(), sender)
    try:
        content = encode_form(request.body or {}).encode()
    except ValueError as exc:
        raise _unencodable("body", exc) from None
    return _Body(content, _sender(request.body or {}))


class CallBuilder:
    """Builds ``TwilioCall``s from envelopes, given the catalog, accounts and settings."""

    def __init__(
        self,
        catalog: Catalog,
        accounts: Accounts,
        settings: TwilioSettings,
        *,
        strict: bool = False,
    ) -> None:
        self._catalog = catalog
        self._accounts = accounts
        self._settings = settings
        self._strict = strict
        self._api_hosts = {op.api: op.host for op in catalog}
        self._names = path_names(catalog)
        self._origins: dict[str, str] = {}  # Twilio host -> origin_for(host)

    def _origin(self, host: str, account: Account) -> str:
        if account.twilio is not None:
            return origin_for(host, account.twilio)
        origin = self._origins.get(host)
        if origin is None:
            origin = origin_for(host, self._settings)
            # The catalog's few dozen hosts; a page URI may name any *.twilio.com host.
            if len(self._origins) < _MAX_ORIGINS:
                self._origins[host] = origin
        return origin

    def build(
        self,
        request: BasicRequest | AdvancedRequest,
        record_headers: Iterable[tuple[str, str]] = (),
    ) -> TwilioCall:
        """The call for ``request``; raises ``RequestInvalid`` naming every problem."""
        account = self._accounts.get(request.credential)
        if account is None:
            raise UnknownCredential(self._accounts.why_unknown(request.credential))
        selected = select_headers(
            record_headers, request.request_headers, FORBIDDEN_REQUEST_HEADERS
        ).items()
        headers = tuple((name, value) for name, value in selected if _sendable(name, value))
        dropped = tuple(
            f"record header {_shown(name)!r} not forwarded: not a valid HTTP header"
            for name, value in selected
            if not _sendable(name, value)
        )
        if isinstance(request, BasicRequest):
            call = self._basic(request, account, headers)
        else:
            call = self._advanced(request, account, headers)
        if len(call.url) > _MAX_URL_LENGTH:
            raise RequestInvalid(
                f"the URL would be {len(call.url)} characters long, over the "
                f"{_MAX_URL_LENGTH} that can be sent: query, params or next_page_uri too long"
            )
        return replace(call, warnings=(*call.warnings, *dropped)) if dropped else call

    def _resolve(self, request: BasicRequest) -> Operation:
        try:
            return self._catalog.resolve(request.operation, request.api)
        except UnknownOperationError as exc:
            raise UnknownOperation(exc.name, exc.api, list(exc.suggestions)) from None
        except AmbiguousOperationError as exc:
            raise RequestInvalid(
                f"operation '{exc.name}' exists in several apis; set 'api' to one of: "
                + ", ".join(exc.candidates),
                invalid=["api"],
            ) from None

    def _basic(
        self,
        request: BasicRequest,
        account: Account,
        headers: tuple[tuple[str, str], ...],
    ) -> TwilioCall:
        op = self._resolve(request)
        if op.refused is not None:
            raise RequestInvalid(f"{op.operation} ({op.api}) {op.refused}", invalid=["operation"])
        spec = _spec(op)
        path_values = {k: format_scalar(v) for k, v in request.params.items()}
        path_values.setdefault("AccountSid", account.account_sid)
        warnings = _check_basic(op, request, path_values, self._strict_for(request))
        headers = _with_headers(headers, _param_headers(spec, request.params))
        path = _TEMPLATE_FIELD.sub(lambda m: quote(path_values[m.group(1)], safe=""), op.path)
        try:
            path = _join(path, encode_form(request.query, spec.flatten))
        except ValueError as exc:
            raise _unencodable("query", exc) from None
        try:
            content = _basic_body(op, request, spec.flatten)
        except ValueError as exc:
            raise _unencodable("body", exc) from None
        host = op.host
        if request.next_page_uri:
            page_host, path = self._page(request.next_page_uri)
            host = page_host or host
            content = None
        if content is not None and op.content_type:
            headers = (*headers, ("content-type", op.content_type))
        return TwilioCall(
            method=op.method,
            url=self._origin(host, account) + path,
            path=path,
            account=account,
            headers=headers,
            content=content,
            api=op.api,
            operation=op.operation,
            warnings=tuple(warnings),
            sender=_sender(request.body) if content is not None else None,
            template=op.path,
        )

    def _strict_for(self, request: BasicRequest) -> bool:
        return self._strict if request.strict is None else request.strict

    def _advanced(
        self, request: AdvancedRequest, account: Account, headers: tuple[tuple[str, str], ...]
    ) -> TwilioCall:
        page_host, path = (
            self._page(request.next_page_uri)
            if request.next_page_uri
            else (None, self._check_path(request.path, "path"))
        )
        host = page_host or _DEFAULT_HOST
        if request.api is not None:
            host_for_api = self._api_hosts.get(request.api)
            if host_for_api is None:
                raise RequestInvalid(
                    f"unknown api '{request.api}'; known: {', '.join(sorted(self._api_hosts))}",
                    invalid=["api"],
                )
            host = host_for_api
        try:
            path = _join(path, encode_form(request.query))
        except ValueError as exc:
            raise _unencodable("query", exc) from None
        body = _advanced_body(request)
        return TwilioCall(
            method=request.method,
            url=self._origin(host, account) + path,
            path=path,
            account=account,
            headers=headers + ((("content-type", FORM),) if body.content is not None else ()),
            content=body.content,
            api=request.api,
            warnings=body.warnings,
            sender=body.sender,
            names=self._names,
        )

    def _page(self, uri: str) -> tuple[str | None, str]:
        """A page URI from a previous reply: (its Twilio host if absolute, its checked path)."""
        parts = _split(uri, "next_page_uri")
        if parts.scheme or parts.netloc:
            if parts.scheme != "https" or not _TWILIO_HOST.match(parts.hostname or ""):
                raise RequestInvalid(
                    "next_page_uri must be relative or on a twilio.com host",
                    invalid=["next_page_uri"],
                )
            path = self._check_path(_join(parts.path, parts.query), "next_page_uri")
            return f"https://{parts.hostname}", path
        return None, self._check_path(uri, "next_page_uri")

    @staticmethod
    def _check_path(path: str, field: str) -> str:
        parts = _split(path, field)
        if (
            not path.startswith("/")
            or path.startswith("//")
            or parts.scheme
            or parts.netloc
            or "@" in parts.path
            or _BAD_PATH_CHARS.search(path)
            or ".." in parts.path.split("/")
        ):
            raise _not_relative(field)
        return path
