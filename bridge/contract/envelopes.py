"""Wire models of the public contract: request envelopes, replies and error records.

These are the trust boundary for Kafka payloads; ``schemas/`` is generated from them
(``twilio-bridge schemas``) and a test fails when the committed files drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from bridge.contract.errors import ErrorDetail, ErrorKind, RequestInvalid

__all__ = [
    "AdvancedRequest",
    "BasicRequest",
    "EnvelopeRejected",
    "ErrorInfo",
    "ErrorRecord",
    "Reply",
    "MaxAttempts",
    "RequestEnvelope",
    "RetryDelay",
    "RetryOptions",
    "SourceRef",
    "error_info",
    "parse_request",
    "request_adapter",
    "utc_timestamp",
]

Id = Annotated[str, Field(min_length=1, max_length=256, description="Unique per logical request.")]
HeaderSelection = Annotated[
    list[str] | str | None,
    Field(description="Header names as a list, a pipe-separated string ('A|B') or '*' for all."),
]
HttpMethod = Annotated[
    Literal["GET", "POST", "PUT", "PATCH", "DELETE"],
    BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
]

MaxAttempts = Annotated[int, Field(ge=1, le=10, description="Attempts in all, the first included.")]
RetryDelay = Annotated[float, Field(ge=0, le=300, description="Seconds.")]


class RetryOptions(BaseModel):
    """Per-envelope overrides of the retry settings; unset fields keep the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: MaxAttempts | None = None
    base_delay_s: RetryDelay | None = None
    max_delay_s: RetryDelay | None = None
    exponential: bool | None = None
    retry_all_errors: bool | None = Field(
        default=None,
        description="Also retry POST/PUT/PATCH after 5xx, timeouts and broken connections, and "
        "every 4xx: may repeat a side effect such as an SMS.",
    )


class _RequestBase(BaseModel):
    """Fields shared by both modes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    api: str | None = Field(
        default=None, description="Spec name such as 'api.v2010' or 'verify.v2'."
    )
    query: dict[str, Any] = Field(default_factory=dict, description="Query string parameters.")
    credential: str = Field(default="default", description="Name of a configured credential.")
    response_format: Literal["json", "xml", "csv"] = "json"
    request_headers: HeaderSelection = Field(
        default=None, description="Which Kafka record headers to forward to Twilio."
    )
    response_headers: HeaderSelection = Field(
        default=None, description="Which Twilio response headers to keep in the reply."
    )
    next_page_uri: str | None = Field(default=None, description="Fetch this page of a list.")
    follow_pages: bool = False
    max_pages: int | None = Field(default=None, ge=1, le=1000)
    strict: bool | None = Field(
        default=None, description="Refuse body parameters the spec does not know."
    )
    metadata: dict[str, Any] | None = Field(default=None, description="Echoed in the reply.")
    retry: RetryOptions | None = None
    filter_nulls: bool | None = Field(
        default=None, description="Remove null fields from the reply body (default: setting)."
    )
    track: bool | None = Field(
        default=None,
        description="Track the delivery of a CreateMessage / CreateCall (or an advanced POST "
        "to Messages.json / Calls.json): its statuses go to the deliveries topic, keyed like "
        "this request (default: the account's, else BRIDGE_TRACKING__DEFAULT).",
    )


class BasicRequest(_RequestBase):
    """A Twilio operation by its operationId in Twilio's OpenAPI spec."""

    mode: Literal["basic"]
    operation: str = Field(min_length=1, max_length=200)
    params: dict[str, str | bool | int] = Field(
        default_factory=dict,
        description="Path parameters, and the spec's header parameters by name "
        "(X-Twilio-Webhook-Enabled, If-Match, ...).",
    )
    body: dict[str, Any] = Field(default_factory=dict)


class AdvancedRequest(_RequestBase):
    """Any Twilio endpoint by method and relative path."""

    mode: Literal["advanced"]
    method: HttpMethod
    path: str = Field(min_length=1, max_length=4096, description="Relative, e.g. '/2010-04-01/…'.")
    body: str | dict[str, Any] | None = Field(
        default=None, description="Form-encoded string (sent as given) or an object."
    )
    send_body: bool = Field(default=False, description="Send a body with GET or DELETE.")


RequestEnvelope = Annotated[BasicRequest | AdvancedRequest, Field(discriminator="mode")]
request_adapter: TypeAdapter[BasicRequest | AdvancedRequest] = TypeAdapter(RequestEnvelope)


class ErrorInfo(BaseModel):
    """Why a request failed."""

    kind: ErrorKind
    message: str
    http_status: int | None = None
    twilio_code: int | None = None
    more_info: str | None = None
    retryable: bool = False
    missing: list[str] = Field(default_factory=list)
    invalid: list[str] = Field(default_factory=list)


# Deepest nesting of objects and arrays accepted in an envelope, the envelope itself included.
MAX_DEPTH = 100
# Bounds on what an error echoes of its input, so that a hostile envelope (a hundred thousand
# bad keys, a megabyte-long name) cannot make its reply and error record too large for Kafka.
_MAX_ERROR_MESSAGE = 4096
_MAX_ERROR_NAMES = 50
_MAX_ERROR_NAME = 256


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters in all)"


def _names(names: tuple[str, ...]) -> list[str]:
    """The first names only: the message says how long the whole was."""
    return [_cut(name, _MAX_ERROR_NAME) for name in names[:_MAX_ERROR_NAMES]]


def utc_timestamp(when: datetime | None = None) -> str:
    """``when`` (default: now) as RFC 3339 UTC with milliseconds, as records carry it."""
    moment = datetime.now(UTC) if when is None else when.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_info(detail: ErrorDetail) -> ErrorInfo:
    """The wire form of an error detail, its message and lists cut to bounded sizes."""
    return ErrorInfo(
        kind=detail.kind,
        message=_cut(detail.message, _MAX_ERROR_MESSAGE),
        http_status=detail.http_status,
        twilio_code=detail.twilio_code,
        more_info=detail.more_info,
        retryable=detail.retryable,
        missing=_names(detail.missing),
        invalid=_names(detail.invalid),
    )


class Reply(BaseModel):
    """Exactly one per parsed request, on the reply topic, keyed like the request."""

    id: str
    status: Literal["ok", "error"]
    http_status: int | None = None
    api: str | None = None
    operation: str | None = None
    method: str | None = None
    path: str | None = None
    body: Any = None
    content_type: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    pages: int = 0
    next_page_uri: str | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    wait_ms: float = Field(
        default=0.0,
        description="Time spent waiting for the rate limits and concurrency cap, "
        "included in duration_ms.",
    )
    metadata: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    warnings: list[str] = Field(default_factory=list)


class SourceRef(BaseModel):
    """Where the record that failed is, for operators and replay: the request; for a webhook
    answered with the fallback TwiML, the answer that could not be used or the event that got
    none."""

    topic: str
    partition: int
    offset: int
    key: str | None = Field(default=None, description="The record key, base64.")
    timestamp_ms: int | None = None


class ErrorRecord(BaseModel):
    """Every failure, on the error topic, with what is needed to replay it."""

    id: str | None = None
    error: ErrorInfo
    source: SourceRef
    request: dict[str, Any] | None = Field(
        default=None, description="The original request, when it was JSON."
    )
    raw: str | None = Field(
        default=None, description="The original bytes, base64, when they were not JSON."
    )
    time: str = Field(description="When the failure was recorded, RFC 3339 UTC.")


class EnvelopeRejected(RequestInvalid):
    """A payload that is not a valid request envelope; ``request_id`` is set when one was read."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        document: dict[str, Any] | None = None,
        missing: list[str] | None = None,
        invalid: list[str] | None = None,
    ) -> None:
        super().__init__(message, missing=missing or [], invalid=invalid or [])
        self.request_id = request_id
        self.document = document


def _field(loc: tuple[int | str, ...]) -> str:
    # Discriminated unions prefix locations with the tag ('basic', 'operation').
    parts = loc[1:] if loc and loc[0] in ("basic", "advanced") else loc
    return ".".join(str(p) for p in parts) or "mode"


def _usable_id(document: dict[str, Any]) -> str | None:
    raw_id = document.get("id")
    return raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= 256 else None


def _too_deep(document: dict[str, Any]) -> bool:
    """True when objects and arrays nest more than ``MAX_DEPTH`` levels (the top one counts)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack += [(child, depth + 1) for child in children if isinstance(child, dict | list)]
    return False


def parse_request(raw: bytes | None) -> BasicRequest | AdvancedRequest:
    """Parse and validate one Kafka payload; raise ``EnvelopeRejected`` naming every problem."""
    if raw is None:
        raise EnvelopeRejected("null payload (a tombstone): expected a JSON request envelope")
    if not raw:
        raise EnvelopeRejected("empty payload: expected a JSON request envelope")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeRejected(f"payload is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EnvelopeRejected(f"payload is JSON {type(document).__name__}, not an object")
    # Nesting needs an opening bracket per level: most envelopes cannot be too deep at all,
    # and counting bytes in C is cheaper than walking the document.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _too_deep(document):
        # Echoed in a reply or kept in an error record, it could not be serialised again
        # (pydantic stops at 255 levels): refuse it, and let the error record keep the bytes.
        raise EnvelopeRejected(
            f"payload nested more than {MAX_DEPTH} levels deep", request_id=_usable_id(document)
        )
    try:
        return request_adapter.validate_python(document)
    except ValidationError as exc:
        missing: list[str] = []
        invalid: list[str] = []
        for err in exc.errors(include_url=False, include_input=False):
            name = _field(err["loc"])
            if err["type"] in ("missing", "union_tag_not_found"):
                missing.append(name)
            else:
                invalid.append(f"{name}: {err['msg']}")
        request_id = _usable_id(document)
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + invalid
        raise EnvelopeRejected(
            "invalid request envelope: " + "; ".join(parts),
            request_id=request_id,
            document=document,
            missing=missing,
            invalid=invalid,
        ) from None
