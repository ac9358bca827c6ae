"""Minimal valid envelopes for any catalog operation, from the spec's types and patterns."""

from __future__ import annotations

import re._parser as sre_parse  # type: ignore[import-not-found]  # no stubs; stable since 3.11
from typing import Any

from bridge.twilio.catalog import Operation, Param

__all__ = ["minimal_envelope", "sample_for_pattern", "sample_value"]

_FORMATS: dict[str, Any] = {
    "phone-number": "+14155552671",
    "uri": "https://example.com/callback",
    "date-time": "2024-01-02T03:04:05Z",
    "date": "2024-01-02",
    "email": "someone@example.com",
    "iso-country-code": "US",
    "currency": "USD",
    "http-method": "POST",
}


def sample_for_pattern(pattern: str) -> str:
    """A short string matching ``pattern`` (enough of the regex language for Twilio's spec)."""
    return _emit(sre_parse.parse(pattern))


def _emit(parsed: Any) -> str:
    out = []
    for op, arg in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "IN":
            out.append(_first_in(arg))
        elif name == "ANY":
            out.append("a")
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            out.append(_emit(sub) * max(low, 1))
        elif name == "SUBPATTERN":
            out.append(_emit(arg[-1]))
        elif name == "BRANCH":
            out.append(_emit(arg[1][0]))
        elif name == "AT":
            continue
        else:
            raise ValueError(f"pattern element {name} not supported")
    return "".join(out)


def _first_in(items: Any) -> str:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return "0" if "DIGIT" in str(arg) else "a"
    raise ValueError("empty character class")


_BY_TYPE: dict[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "object": {}}


def sample_value(param: Param) -> Any:
    """A value for ``param`` that satisfies its type, enum, pattern and format."""
    if param.enum:
        value: Any = param.enum[0]
    elif param.pattern:
        value = sample_for_pattern(param.pattern)
    elif param.format in _FORMATS:
        value = _FORMATS[param.format]
    else:
        # For arrays, enum/pattern/format describe the elements, and so does ``items``.
        kind = param.items if param.type == "array" and param.items else param.type
        value = _BY_TYPE.get(kind, "sample")
    return [value] if param.type == "array" else value


def minimal_envelope(op: Operation, request_id: str) -> dict[str, Any]:
    """A basic-mode envelope with every required parameter of ``op`` and nothing else."""
    params = {p.name: sample_value(p) for p in op.params if p.location == "path"}
    query = {p.name: sample_value(p) for p in op.params if p.location == "query" and p.required}
    body = {p.name: sample_value(p) for p in op.params if p.location == "body" and p.required}
    envelope: dict[str, Any] = {
        "id": request_id,
        "mode": "basic",
        "api": op.api,
        "operation": op.operation,
    }
    if params:
        envelope["params"] = {k: v for k, v in params.items() if k != "AccountSid"}
    if query:
        envelope["query"] = query
    if body:
        envelope["body"] = body
    return envelope
