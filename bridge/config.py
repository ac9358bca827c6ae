"""All configuration, read once at start-up from ``BRIDGE_*`` variables and a secrets directory.

Nesting uses ``__`` (``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``). Secrets may also come from files in
``BRIDGE_SECRETS_DIR`` (a Kubernetes Secret volume), one file per setting named like the
variable without the prefix, e.g. ``credentials__default__auth_token``. Nothing else in the
package reads the environment; each component is handed its own slice.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as PydanticSettingsError

from bridge.contract.envelopes import MaxAttempts, RetryDelay
from bridge.contract.events import EVENT_STREAMS, FAMILIES
from bridge.contract.twiml import (
    DEFAULT_FALLBACKS,
    TWIML_FAMILIES,
    TwimlFamily,
    TwimlInvalid,
    check_twiml,
)

__all__ = [
    "CREDENTIAL_NAME",
    "API_KEY_SID_PATTERN",
    "SID_PATTERN",
    "SendDefaults",
    "AdminSettings",
    "CatalogSettings",
    "Credential",
    "IdempotencySettings",
    "HttpSettings",
    "KafkaSettings",
    "PollerSettings",
    "ProcessingSettings",
    "RateLimitSettings",
    "Settings",
    "SettingsError",
    "TrackingSettings",
    "TwilioSettings",
    "TwimlSettings",
    "WEBHOOK_FAMILIES",
    "WebhookSettings",
    "absolute_url",
    "credential_problem",
    "encryption_key",
    "family_keys",
    "https_url",
    "load_settings",
]

ENV_PREFIX = "BRIDGE_"
SID_PATTERN = r"^AC[0-9a-fA-F]{32}$"
API_KEY_SID_PATTERN = r"^SK[0-9a-fA-F]{32}$"
# Credential and instance names: what an envelope's "credential" may say.
CREDENTIAL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _split_csv(value: Any) -> Any:
    """Accept 'a,b' as well as a JSON list for list settings given as one variable."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def absolute_url(value: str | None) -> str | None:
    """An absolute http(s) URL without its trailing slash."""
    if value is not None and not re.match(r"^https?://[^/]+", value):
        raise ValueError("must be an absolute http(s) URL")
    return value.rstrip("/") if value else value


def https_url(value: str | None) -> str | None:
    """An absolute https URL (a callback Twilio calls), as given."""
    if value is not None and not re.match(r"^https://[^/\s]+\S*$", value):
        raise ValueError("must be an absolute https URL")
    return value


# A default sender: a phone number in E.164, a channel address (whatsapp:+…, messenger:…), or
# an alphanumeric sender ID; a Messaging Service by its SID.
E164_PATTERN = r"^(\+[1-9][0-9]{1,14}|[a-z]+:\S{1,200}|[A-Za-z0-9 ]{1,11})$"
MESSAGING_SERVICE_SID_PATTERN = r"^MG[0-9a-fA-F]{32}$"


class SendDefaults(BaseModel):
    """An account's defaults for what it sends (a credential's or an instance's entries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_from: str | None = Field(
        default=None,
        pattern=E164_PATTERN,
        description="From of CreateMessage when the envelope gives neither From nor "
        "MessagingServiceSid.",
    )
    default_messaging_service_sid: str | None = Field(
        default=None,
        pattern=MESSAGING_SERVICE_SID_PATTERN,
        description="MessagingServiceSid of CreateMessage when the envelope gives neither "
        "From nor MessagingServiceSid (over default_from when both are set).",
    )
    track: bool | None = Field(
        default=None, description="Default of the envelope's track for this account."
    )
    status_callback: str | None = Field(
        default=None,
        description="StatusCallback of CreateMessage and CreateCall when the envelope has "
        "none and does not track: the account's own callback endpoint (https).",
    )

    _check_callback = field_validator("status_callback")(https_url)

    @classmethod
    def of(cls, source: SendDefaults) -> SendDefaults:
        """Just the defaults of ``source`` (a credential, an instance's configuration)."""
        return cls.model_validate(source.model_dump(include=set(cls.model_fields)))


TopicList = Annotated[list[str], NoDecode]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """Broker connection, topics and delivery guarantees."""

    bootstrap_servers: str = "localhost:9092"
    request_topics: TopicList = Field(default_factory=lambda: ["twilio.requests"], min_length=1)
    reply_topic: str = "twilio.replies"
    error_topic: str = "twilio.errors"
    group_id: str = "twilio-bridge"
    client_id: str = "twilio-bridge"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # Real Kafka supports it and it prevents duplicate replies on producer retries; Tansu's
    # memory engine does not, so it must be switchable.
    idempotent_producer: bool = True
    acks: Literal["all", "1"] = "all"
    max_request_size: int = Field(default=1_048_576, ge=1024)
    # aiokafka wakes every waiting send for each batch it completes: at its 16 KB default
    # that is ~17 wake-ups per reply at 256 in flight, and the bridge ran at half the speed.
    batch_size: int = Field(default=524_288, ge=16_384)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    commit_interval_s: float = Field(default=1.0, gt=0)
    session_timeout_ms: int = Field(default=45_000, ge=1000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    # Kafka answers a fetch as soon as a record arrives; Tansu holds a fetch that found nothing
    # for about half of this whatever arrives meanwhile (measured: paced p99 395 -> 77 ms at 10).
    fetch_max_wait_ms: int = Field(default=500, ge=0, le=30_000)

    _split = field_validator("request_topics", mode="before")(_split_csv)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        protocol = self.security_protocol
        sasl = ("sasl_mechanism", "sasl_username", "sasl_password")
        tls = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if protocol.startswith("SASL"):
            missing = [f"kafka.{name}" for name in sasl if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{protocol} needs {', '.join(missing)}")
        # A setting the protocol would silently ignore is a mistake worth stopping for.
        uses = ((sasl, protocol.startswith("SASL")), (tls, protocol.endswith("SSL")))
        unused = [
            f"kafka.{name}"
            for names, used in uses
            for name in names
            if not used and getattr(self, name) is not None
        ]
        if unused:
            raise ValueError(f"{', '.join(unused)} set, but {protocol} does not use them")
        if self.idempotent_producer and self.acks != "all":
            raise ValueError("an idempotent producer needs kafka.acks=all (or turn it off)")
        return self


class TwilioSettings(_Section):
    """Where and how Twilio is called."""

    base_url: str | None = Field(
        default=None,
        description="One base URL for every Twilio domain (mocks, sandboxes); may contain "
        "'{domain}', replaced by the first label of the Twilio host (api, verify, ...).",
    )
    region: str | None = None
    edge: str | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    response_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    keepalive: bool = True
    # Below the common 5 s server idle timeout (Node's default among them): a connection the
    # server may be closing right now is never reused, so a POST is never lost in that race.
    keepalive_expiry_s: float = Field(default=4.0, gt=0)
    transport: Literal["aiohttp", "httpx"] = "aiohttp"

    _check_base_url = field_validator("base_url")(absolute_url)


def credential_problem(
    *, has_token: bool, key_sid: bool, key_secret: bool
) -> tuple[str, str] | None:
    """(the missing field, why) when these are not an Auth Token or a whole API key."""
    if not (has_token or key_sid or key_secret):
        return "auth_token", "needs auth_token, or api_key_sid and api_key_secret"
    if key_sid and not key_secret:
        return "api_key_secret", "api_key_sid and api_key_secret go together"
    if key_secret and not key_sid:
        return "api_key_sid", "api_key_sid and api_key_secret go together"
    return None


class Credential(SendDefaults):
    """A Twilio account, with an Auth Token or an API key, and its defaults for sends."""

    account_sid: str = Field(pattern=SID_PATTERN)
    auth_token: SecretStr | None = None
    api_key_sid: str | None = Field(default=None, pattern=API_KEY_SID_PATTERN)
    api_key_secret: SecretStr | None = None
    poll: bool = Field(default=False, description="Poll this account's Messages for events.")

    @model_validator(mode="after")
    def _one_kind(self) -> Credential:
        problem = credential_problem(
            has_token=self.auth_token is not None,
            key_sid=self.api_key_sid is not None,
            key_secret=self.api_key_secret is not None,
        )
        if problem is not None:
            raise ValueError(problem[1])
        return self

    @property
    def username(self) -> str:
        """The HTTP Basic user name Twilio expects."""
        return self.api_key_sid or self.account_sid

    @property
    def password(self) -> SecretStr:
        """The HTTP Basic password (never logged)."""
        secret = self.api_key_secret or self.auth_token
        assert secret is not None  # guaranteed by _one_kind
        return secret


class ProcessingSettings(_Section):
    """Concurrency, shutdown and strictness of outbound processing."""

    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    shutdown_grace_s: float = Field(default=25.0, ge=0)
    strict_params: bool = False
    filter_nulls: bool = False


class RetrySettings(_Section):
    """Default retry policy for Twilio calls; envelopes may override within the same bounds."""

    max_attempts: MaxAttempts = 3
    base_delay_s: RetryDelay = 0.5
    max_delay_s: RetryDelay = 30.0
    exponential: bool = True
    retry_all_errors: bool = False


class RateLimitSettings(_Section):
    """Pacing and concurrency per credential (per replica); 0 turns a limit off."""

    requests_per_second: float = Field(default=0, ge=0)
    burst: int = Field(default=1, ge=1)
    per_sender_per_second: float = Field(
        default=0,
        ge=0,
        description="Pace for each From / MessagingServiceSid of a credential (carrier MPS).",
    )
    per_sender_burst: int = Field(default=1, ge=1)
    # Twilio's default account concurrency is 100: more in flight only earns 429s.
    max_concurrent: int = Field(default=100, ge=0)
    account_concurrency: int = Field(
        default=100,
        ge=0,
        description="The account's concurrency limit at Twilio, which Twilio-Concurrent-Requests "
        "is compared with; 0 ignores that header.",
    )


class HttpSettings(_Section):
    """The HTTP app (webhooks, metrics, probes)."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    # Kubernetes removes a pod from its Service a few seconds after the pod is told to stop:
    # webhooks arriving meanwhile are still answered, so Twilio never meets a closed port.
    drain_delay_s: float = Field(
        default=5.0,
        ge=0,
        description="After SIGTERM, keep answering webhooks this long (readiness already "
        "false) before the HTTP app stops.",
    )


# The webhook families (``/webhooks/twilio/{family}``), as the event mapping defines them; each
# is published to its own topic.
WEBHOOK_FAMILIES = (*FAMILIES, EVENT_STREAMS)


def family_keys(value: Any) -> Any:
    """Accept ``message_status`` (as environment variable names spell it) for ``message-status``."""
    if not isinstance(value, dict):
        return value
    out = {str(k).lower().replace("_", "-"): v for k, v in value.items()}
    unknown = sorted(set(out) - set(WEBHOOK_FAMILIES))
    if unknown:
        raise ValueError(f"unknown webhook families {unknown}; known: {list(WEBHOOK_FAMILIES)}")
    return out


class WebhookSettings(_Section):
    """Inbound webhooks: where Twilio calls, how they are checked, where events go."""

    public_url: str | None = Field(
        default=None,
        description="The base URL Twilio calls (scheme, host, optional path prefix), for "
        "signature checks behind an ingress; the request's path and query are appended.",
    )
    trust_proxy: bool = False
    validate_signatures: bool = True
    shared_keys: dict[str, SecretStr] = Field(default_factory=dict)
    topic_prefix: str = "twilio.events."
    topics: dict[str, str] = Field(default_factory=dict)
    twiml: dict[str, str] = Field(default_factory=dict)
    # Twilio gives up on a webhook after 15 s: answer 503 before that, so it may retry.
    ack_timeout_s: float = Field(default=10.0, gt=0, lt=15)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    dedupe_window_s: float = Field(default=3600.0, ge=0)
    dedupe_topic: str = "twilio.events.dedupe"

    _families = field_validator("topics", "twiml", mode="before")(family_keys)

    _check_public_url = field_validator("public_url")(absolute_url)

    def topic_for(self, family: str) -> str:
        """The Kafka topic of a webhook family."""
        return self.topics.get(family) or self.topic_prefix + family


class TwimlSettings(_Section):
    """``BRIDGE_TWIML__*``: voice and message webhooks answered with TwiML from a Kafka service
    (``bridge.inbound.twiml``) instead of the static ``BRIDGE_WEBHOOK__TWIML__*``."""

    families: Annotated[list[TwimlFamily], NoDecode] = Field(
        default_factory=list,
        description="The webhook families whose answer a service gives on the TwiML topic.",
    )
    topic: str = "twilio.twiml"
    # Twilio gives up on a webhook after 15 s; the wait counts from the webhook's arrival.
    timeout_s: float = Field(default=8.0, gt=0, lt=15)
    fallback: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_FALLBACKS))
    max_bytes: int = Field(default=65_536, ge=1024, le=524_288)

    _split = field_validator("families", mode="before")(_split_csv)

    @field_validator("fallback", mode="before")
    @classmethod
    def _every_family_has_one(cls, value: Any) -> Any:
        """The given fallbacks over the defaults: setting one family's keeps the other's."""
        if not isinstance(value, dict):
            return value
        given = {str(k).lower(): v for k, v in value.items()}
        unknown = sorted(set(given) - set(TWIML_FAMILIES))
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {list(TWIML_FAMILIES)}")
        return {**DEFAULT_FALLBACKS, **given}

    @model_validator(mode="after")
    def _fallbacks_are_twiml(self) -> TwimlSettings:
        for family, document in sorted(self.fallback.items()):
            try:
                check_twiml(document.encode(), self.max_bytes)
            except TwimlInvalid as exc:
                raise ValueError(f"twiml.fallback.{family} is not usable TwiML: {exc}") from None
        return self


class PollerSettings(_Section):
    """The message poller, for accounts that cannot receive webhooks (credentials with poll)."""

    refresh_interval_s: float = Field(default=15.0, ge=1)
    calls: bool = False
    # Statuses change for a while after sending; look this far back before the watermark.
    lookback_s: float = Field(default=900.0, ge=0)
    page_size: int = Field(default=1000, ge=1, le=1000)
    max_pages: int = Field(default=50, ge=1)
    start_at: datetime | None = Field(
        default=None, description="Where a credential's first poll starts (default: now)."
    )
    state_topic: str = "twilio.poller.state"
    partitions: int = Field(default=12, ge=1)


class IdempotencySettings(_Section):
    """``BRIDGE_DEDUPE__*``: outbound idempotency. A request that changes something at Twilio
    is sent once per id and window (``bridge.outbound.idempotency``); not the webhooks'
    ``BRIDGE_WEBHOOK__DEDUPE_*``, which recognise Twilio's redeliveries."""

    window_s: float = Field(
        default=86_400.0,
        ge=0,
        description="How long a request id is remembered; 0 turns outbound idempotency off.",
    )
    topic: str = Field(
        default="twilio.requests.outcomes",
        description="Where a request id is recorded before its send: read whole by every replica.",
    )
    answers_topic: str = Field(
        default="twilio.requests.answers",
        description="Where the first reply of each id is recorded: a replica reads the "
        "partitions of the request partitions it owns.",
    )
    partitions: int = Field(
        default=12,
        ge=1,
        description="Partitions of both topics when the bridge creates them: the request "
        "topics' partition count (request partition p records in partition p modulo this).",
    )
    on_unknown_outcome: Literal["error", "resend"] = Field(
        default="error",
        description="A request that was being sent when a bridge process died: answer "
        "kind unknown_outcome (at most once), or send it again (at least once).",
    )


class TrackingSettings(_Section):
    """``BRIDGE_TRACKING__*``: delivery tracking of sends with ``track`` (``bridge.tracking``)."""

    default: bool = Field(default=False, description="Default of the envelope's track.")
    topic: str = Field(default="twilio.deliveries", description="Where delivery records go.")
    state_topic: str = Field(
        default="twilio.deliveries.state",
        description="Internal: tracked sends not yet final, and the callbacks for them.",
    )
    partitions: int = Field(default=12, ge=1)
    reconcile_after_s: float = Field(
        default=600.0,
        gt=0,
        description="Fetch a tracked send from Twilio when it has no final status this long "
        "after it was sent.",
    )
    give_up_after_s: float = Field(
        default=259_200.0,
        gt=0,
        description="End a tracked send with status expired when it has no final status this "
        "long after it was sent.",
    )

    @model_validator(mode="after")
    def _gives_up_after_reconciling(self) -> TrackingSettings:
        if self.give_up_after_s <= self.reconcile_after_s:
            raise ValueError("tracking.give_up_after_s must be over tracking.reconcile_after_s")
        return self


class AdminSettings(_Section):
    """The instances API: Twilio accounts added at runtime, kept in a compacted Kafka topic."""

    enabled: bool = Field(
        default=False,
        description="Serve /instances and use the instances kept in the instances topic.",
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token of the instances API (at least 16 characters)."
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="32 random bytes, base64: seals the instances' secrets in the topic. The "
        "same on every replica (a mounted Secret).",
    )
    topic: str = "twilio.instances"
    audit_topic: str = "twilio.instances.audit"
    write_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a change may take to be acknowledged and read back.",
    )

    @model_validator(mode="after")
    def _needs_secrets(self) -> AdminSettings:
        if not self.enabled:
            return self
        problems = []
        if self.token is None or len(self.token.get_secret_value()) < 16:
            problems.append("admin.token (at least 16 characters)")
        if self.encryption_key is None:
            problems.append("admin.encryption_key")
        else:
            try:
                encryption_key(self.encryption_key)
            except ValueError as exc:
                problems.append(f"admin.encryption_key ({exc})")
        if problems:
            raise ValueError(f"admin.enabled needs {', '.join(problems)}")
        return self


class CatalogSettings(_Section):
    """Twilio specs added to the built-in operation catalog at start-up."""

    spec_dir: Path | None = Field(
        default=None,
        description="A directory of twilio-oai JSON specs (twilio_<api>_<version>.json) read at "
        "start-up: each adds its operations, or replaces the built-in spec of the same name.",
    )


def encryption_key(value: SecretStr) -> bytes:
    """The 32-byte key from its base64 text; the message never shows the value."""
    try:
        key = base64.b64decode(value.get_secret_value().strip(), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("not base64 (make one with: openssl rand -base64 32)") from None
    if len(key) != 32:
        raise ValueError(f"must decode to 32 bytes, not {len(key)}")
    return key


class Settings(BaseSettings):
    """The one settings root."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        secrets_prefix="",
        secrets_dir_missing="error",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    credentials: dict[str, Credential] = Field(default_factory=dict)
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    twiml: TwimlSettings = Field(default_factory=TwimlSettings)
    poller: PollerSettings = Field(default_factory=PollerSettings)
    dedupe: IdempotencySettings = Field(default_factory=IdempotencySettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="JSON lines for log collectors, or text for a terminal."
    )
    log_show_pii: bool = Field(
        default=False,
        description="Show phone numbers and message bodies in logs (tokens stay masked).",
    )

    @model_validator(mode="after")
    def _poller_needs_the_seen_window(self) -> Settings:
        if any(c.poll for c in self.credentials.values()):
            needed = self.poller.lookback_s + self.poller.refresh_interval_s
            if self.webhook.dedupe_window_s < needed:
                raise ValueError(
                    "webhook.dedupe_window_s must cover poller.lookback_s + refresh_interval_s "
                    f"({needed:.0f} s), or the poller would publish a state twice"
                )
        return self

    @model_validator(mode="after")
    def _tracking_needs_a_public_url(self) -> Settings:
        if self.tracking.default and self.webhook.public_url is None:
            raise ValueError("tracking.default needs webhook.public_url: the URL Twilio calls back")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over mounted files, so an operator can override one secret by hand.
        return (init_settings, env_settings, NestedSecretsSettingsSource(file_secret_settings))


class SettingsError(Exception):
    """Start-up configuration is invalid; the message names every bad setting, never a value."""


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def load_settings() -> Settings:
    """Build the settings root from the environment and secrets dir, or raise SettingsError."""
    secrets_dir = os.environ.get(ENV_PREFIX + "SECRETS_DIR")
    try:
        return Settings(_secrets_dir=secrets_dir)
    except PydanticSettingsError as exc:
        raise SettingsError(f"invalid configuration:\n  {ENV_PREFIX}SECRETS_DIR: {exc}") from None
    except ValidationError as exc:
        problems = [
            f"  {_env_name(err['loc']) if err['loc'] else '(settings)'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise SettingsError("invalid configuration:\n" + "\n".join(problems)) from None
