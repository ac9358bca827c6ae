"""Instances: Twilio accounts added at runtime, their validation and their masked views. Pure.

An instance is what Cloud Elements / SAP Open Connectors call a connector instance: a name,
a configuration (credentials, where to call, defaults for retries and rate limits, how events
are received) and tags. Every problem of a configuration is found at once, and secrets never
leave in a view: they come back as ``MASK``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bridge.config import (
    API_KEY_SID_PATTERN,
    CREDENTIAL_NAME,
    SID_PATTERN,
    RateLimitSettings,
    RetrySettings,
    SendDefaults,
    absolute_url,
    credential_problem,
    family_keys,
)

__all__ = [
    "MASK",
    "SECRET_FIELDS",
    "Instance",
    "InstanceConfiguration",
    "InstanceEvents",
    "InstanceSpec",
    "Problem",
    "changed_fields",
    "masked",
    "merge_patch",
    "validate_spec",
]

MASK = "********"
SECRET_FIELDS = ("auth_token", "api_key_secret")
_MAX_TAGS = 50
Resource = Literal["messages", "calls"]


def _messages() -> list[Resource]:
    return ["messages"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstanceEvents(_Strict):
    """How the instance's events reach Kafka: Twilio's webhooks, or the bridge polling."""

    enabled: bool = Field(default=True, description="Publish this account's events at all.")
    mechanism: Literal["webhook", "polling"] = "webhook"
    refresh_interval_s: float | None = Field(
        default=None, ge=1, le=86_400, description="Polling period (default: the poller's)."
    )
    resources: list[Resource] = Field(default_factory=_messages, min_length=1, max_length=2)
    topics: dict[str, Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]] = Field(
        default_factory=dict, description="Event topic per family, over the bridge's defaults."
    )

    _families = field_validator("topics", mode="before")(family_keys)

    @field_validator("resources")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("resources repeat")
        return value


class InstanceConfiguration(SendDefaults):
    """One Twilio account: credentials, where it is called, its defaults (sends included:
    ``SendDefaults``) and its events."""

    account_sid: str = Field(pattern=SID_PATTERN)
    auth_token: SecretStr | None = Field(default=None, min_length=1, max_length=256)
    api_key_sid: str | None = Field(default=None, pattern=API_KEY_SID_PATTERN)
    api_key_secret: SecretStr | None = Field(default=None, min_length=1, max_length=256)
    base_url: str | None = None
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}[0-9]$")
    edge: str | None = Field(default=None, pattern=r"^[a-z]{3,20}$")
    filter_nulls: bool | None = None
    retry: RetrySettings | None = None
    rate_limit: RateLimitSettings | None = None
    events: InstanceEvents = Field(default_factory=InstanceEvents)

    _check_base_url = field_validator("base_url")(absolute_url)

    @field_validator("auth_token", "api_key_secret")
    @classmethod
    def _not_the_mask(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == MASK:
            raise ValueError(
                f"'{MASK}' keeps a stored secret of the same account and key; send the secret"
            )
        return value

    def secrets(self) -> dict[str, str]:
        """The secret fields that are set, in clear (for sealing only)."""
        values = {name: getattr(self, name) for name in SECRET_FIELDS}
        return {k: v.get_secret_value() for k, v in values.items() if v is not None}


class InstanceSpec(_Strict):
    """What a client sends: ``POST /instances`` and ``PUT /instances/{name}`` bodies."""

    name: str = Field(pattern=CREDENTIAL_NAME, description="What envelopes' credential names.")
    configuration: InstanceConfiguration
    tags: list[str] = Field(default_factory=list, max_length=_MAX_TAGS)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if any(not 1 <= len(tag) <= 64 for tag in value):
            raise ValueError("each tag has 1 to 64 characters")
        return value


class Instance(InstanceSpec):
    """A stored instance: the spec and its history."""

    revision: int = Field(ge=1)
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Problem:
    """One missing or invalid entry, by its dotted field name; never its value."""

    field: str
    message: str
    missing: bool = False


def validate_spec(document: Any, stored: Instance | None = None) -> InstanceSpec | list[Problem]:
    """The spec in ``document``, or every problem in it at once.

    A secret sent as ``MASK`` keeps ``stored``'s value, so what GET returned can be PUT back.
    """
    if isinstance(document, dict) and stored is not None:
        document = _keep_masked(document, stored)
    try:
        spec = InstanceSpec.model_validate(document)
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors(include_input=False, include_url=False)]
        configuration = document.get("configuration") if isinstance(document, dict) else None
        if isinstance(configuration, dict):
            problems += _credential_problems(configuration)
        return _unique(problems)
    problems = _credential_problems(spec.configuration.model_dump())
    return problems or spec


def _credential_problems(configuration: Mapping[str, Any]) -> list[Problem]:
    """Auth Token or API key, and an API key whole: checked even when other fields fail."""
    problem = credential_problem(
        has_token=configuration.get("auth_token") is not None,
        key_sid=configuration.get("api_key_sid") is not None,
        key_secret=configuration.get("api_key_secret") is not None,
    )
    if problem is None:
        return []
    field, message = problem
    return [Problem(f"configuration.{field}", message, missing=True)]


def _problem(error: Mapping[str, Any]) -> Problem:
    field = ".".join(str(part) for part in error["loc"]) or "(body)"
    if error["type"] == "missing":
        return Problem(field, "required", missing=True)
    if error["type"] == "extra_forbidden":
        return Problem(field, "not a known entry")
    return Problem(field, str(error["msg"]).removeprefix("Value error, "))


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.field, p.message) not in seen:
            seen.add((p.field, p.message))
            out.append(p)
    return out


def _keep_masked(document: dict[str, Any], stored: Instance) -> dict[str, Any]:
    """``MASK`` replaced by the stored secret, as long as it belongs to the same identity."""
    configuration = document.get("configuration")
    if not isinstance(configuration, dict):
        return document
    kept = dict(configuration)
    old = stored.configuration
    # A secret goes with its account and key: a new identity needs its own secret.
    owners = {"auth_token": ("account_sid",), "api_key_secret": ("account_sid", "api_key_sid")}
    for name in SECRET_FIELDS:
        same = all(kept.get(field) == getattr(old, field) for field in owners[name])
        secret: SecretStr | None = getattr(old, name)
        if kept.get(name) == MASK and same and secret is not None:
            kept[name] = secret.get_secret_value()
    return {**document, "configuration": kept}


def masked(instance: Instance | InstanceSpec) -> dict[str, Any]:
    """The instance as JSON, every secret that is set replaced by ``MASK``."""
    document = instance.model_dump(mode="json", exclude_none=True)
    configuration = document["configuration"]
    for name in SECRET_FIELDS:
        if name in configuration:
            configuration[name] = MASK
    return document


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: objects merge, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def changed_fields(before: InstanceSpec | None, after: InstanceSpec | None) -> list[str]:
    """Dotted names of the entries that differ, secrets included, values never (for audits)."""
    return _differences(_comparable(before), _comparable(after))


def _comparable(spec: InstanceSpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    document = spec.model_dump(mode="json", include={"name", "configuration", "tags"})
    # A digest stands in for each secret so a changed token shows up as changed.
    for name, value in spec.configuration.secrets().items():
        document["configuration"][name] = hashlib.sha256(value.encode()).hexdigest()
    return document


def _differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{key}.{name}" for name in _differences(old, new)]
        elif old != new:
            out.append(key)
    return out
