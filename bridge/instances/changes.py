"""What each instances API call would change, decided before anything is written. Pure.

Each function takes the request's document and the instance as it stands, and returns either
the new state (``Change``) or why not (``Refusal``, with an HTTP status and every problem).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.contract.envelopes import utc_timestamp
from bridge.instances.model import (
    Instance,
    InstanceSpec,
    Problem,
    masked,
    merge_patch,
    validate_spec,
)
from bridge.instances.records import Action

__all__ = ["Change", "Rules", "Refusal", "create", "delete", "patch", "replace"]

_STAMPS = ("revision", "created_at", "updated_at")  # read-only: the store sets them


@dataclass(frozen=True, slots=True)
class Rules:
    """What the bridge's own settings demand of every instance."""

    is_static: Callable[[str], bool]
    default_refresh_interval_s: float  # the poller's
    max_refresh_interval_s: float  # beyond it the poller's seen-ids window would not cover


@dataclass(frozen=True, slots=True)
class Change:
    """A change to write: the instance before and after (``None`` = absent)."""

    action: Action
    name: str
    before: Instance | None
    after: Instance | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a change is refused: HTTP status, error kind, message, and each problem."""

    status: int
    kind: str
    message: str
    problems: list[Problem] = field(default_factory=list)


def create(document: Any, current: Instance | None, rules: Rules) -> Change | Refusal:
    """``POST /instances``: a new instance; refused when the name is taken."""
    spec = _checked(document, None, rules)
    if isinstance(spec, Refusal):
        return spec
    if current is not None:
        return Refusal(409, "conflict", f"instance '{spec.name}' exists; PUT or PATCH changes it")
    return Change("created", spec.name, None, _stamped(spec, None))


def replace(
    name: str, document: Any, current: Instance | None, rules: Rules, if_match: str | None
) -> Change | Refusal:
    """``PUT /instances/{name}``: the whole instance, created when absent.

    What GET returned may be PUT back: its read-only stamps are ignored (If-Match, not the
    body's ``revision``, is the precondition)."""
    if isinstance(document, dict):
        document = {"name": name, **{k: v for k, v in document.items() if k not in _STAMPS}}
    refused = _precondition(current, if_match) or _same_name(name, document)
    if refused is not None:
        return refused
    spec = _checked(document, current, rules)
    if isinstance(spec, Refusal):
        return spec
    return Change(
        "created" if current is None else "updated", name, current, _stamped(spec, current)
    )


def patch(
    name: str, document: Any, current: Instance | None, rules: Rules, if_match: str | None
) -> Change | Refusal:
    """``PATCH /instances/{name}``: a JSON Merge Patch (RFC 7396) of the masked instance."""
    if current is None:
        return _not_found(name)
    if not isinstance(document, dict):
        return Refusal(400, "validation", "a merge patch is a JSON object")
    refused = _precondition(current, if_match) or _same_name(name, document)
    if refused is not None:
        return refused
    base = masked(current)
    for stamp in _STAMPS:
        base.pop(stamp)
    spec = _checked(merge_patch(base, document), current, rules)
    if isinstance(spec, Refusal):
        return spec
    return Change("updated", name, current, _stamped(spec, current))


def delete(name: str, current: Instance | None, if_match: str | None) -> Change | Refusal:
    """``DELETE /instances/{name}``."""
    if current is None:
        return _not_found(name)
    return _precondition(current, if_match) or Change("deleted", name, current, None)


def _checked(document: Any, current: Instance | None, rules: Rules) -> InstanceSpec | Refusal:
    result = validate_spec(document, current)
    problems = result if isinstance(result, list) else _rule_problems(result, rules)
    if problems:
        listed = "; ".join(f"{p.field}: {p.message}" for p in problems)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        return Refusal(400, "validation", f"{count}: {listed}", problems)
    assert isinstance(result, InstanceSpec)
    if rules.is_static(result.name):
        return Refusal(409, "conflict", f"'{result.name}' is a credential from the settings")
    return result


def _rule_problems(spec: InstanceSpec, rules: Rules) -> list[Problem]:
    events = spec.configuration.events
    interval = events.refresh_interval_s or rules.default_refresh_interval_s
    if events.mechanism == "polling" and interval > rules.max_refresh_interval_s:
        return [
            Problem(
                "configuration.events.refresh_interval_s",
                f"{interval:.0f} s is over {rules.max_refresh_interval_s:.0f} s: the webhook "
                "dedupe window must cover poller.lookback_s + the interval",
            )
        ]
    return []


def _stamped(spec: InstanceSpec, current: Instance | None) -> Instance:
    now = utc_timestamp()
    return Instance(
        **dict(spec),
        revision=current.revision + 1 if current is not None else 1,
        created_at=current.created_at if current is not None else now,
        updated_at=now,
    )


def _precondition(current: Instance | None, if_match: str | None) -> Refusal | None:
    """``If-Match``: the revision (ETag) the client last read, to refuse lost updates."""
    if if_match is None or (if_match.strip() == "*" and current is not None):
        return None
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if current is None or str(current.revision) not in tags:
        found = f"revision {current.revision}" if current is not None else "no instance"
        return Refusal(412, "precondition_failed", f"If-Match does not match ({found})")
    return None


def _same_name(name: str, document: Any) -> Refusal | None:
    if isinstance(document, dict) and document.get("name", name) != name:
        return Refusal(
            400,
            "validation",
            "the name in the body differs from the one in the path",
            [Problem("name", "differs from the path")],
        )
    return None


def _not_found(name: str) -> Refusal:
    return Refusal(404, "not_found", f"no instance '{name}'")
