"""``twilio-bridge catalog``: find operations, show one in full, and example envelopes.

Example values come from each parameter's enum, pattern, format and type, so that an example
envelope is one Twilio's spec accepts (the conformance test sends one per operation).
"""

from __future__ import annotations

import json
import re._parser as sre_parse  # type: ignore[import-not-found]  # no stubs; stable since 3.11
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from bridge.twilio.catalog import (
    AmbiguousOperationError,
    Catalog,
    Operation,
    Param,
    SpecDirError,
    UnknownOperationError,
)

__all__ = [
    "catalog_command",
    "describe",
    "example_envelope",
    "listing",
    "sample_for_pattern",
    "sample_value",
]

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


def example_envelope(op: Operation, request_id: str) -> dict[str, Any]:
    """A basic-mode envelope with every required parameter of ``op`` and nothing else
    (``AccountSid`` is left to default to the credential's account)."""
    params = {
        p.name: sample_value(p)
        for p in op.params
        if (p.location == "path" and p.name != "AccountSid")
        or (p.location == "header" and p.required)
    }
    query = {p.name: sample_value(p) for p in op.params if p.location == "query" and p.required}
    body = {p.name: sample_value(p) for p in op.params if p.location == "body" and p.required}
    envelope: dict[str, Any] = {
        "id": request_id,
        "mode": "basic",
        "api": op.api,
        "operation": op.operation,
    }
    if params:
        envelope["params"] = params
    if query:
        envelope["query"] = query
    if body:
        envelope["body"] = body
    return envelope


def _row(catalog: Catalog, op: Operation) -> dict[str, Any]:
    return {
        "api": op.api,
        "operation": op.operation,
        "method": op.method,
        "host": op.host,
        "path": op.path,
        "summary": op.summary,
        "auth": op.auth,
        "refused": op.refused,
        "source": catalog.source_of(op),
    }


def _type_of(p: Param) -> str:
    kind = f"array of {p.items}" if p.type == "array" else p.type
    return f"{kind} ({p.format})" if p.format else kind


def _param_row(p: Param) -> dict[str, Any]:
    return {
        "name": p.name,
        "in": "params" if p.location in ("path", "header") else p.location,
        "where": p.location,
        "type": _type_of(p),
        "required": p.required,
        "enum": list(p.enum) if p.enum else None,
        "pattern": p.pattern,
        "description": p.description,
    }


def describe(catalog: Catalog, op: Operation) -> dict[str, Any]:
    """Everything about one operation: where it goes, each parameter, an example envelope."""
    return {
        **_row(catalog, op),
        "content_type": op.content_type,
        "params": [_param_row(p) for p in op.params],
        "example": example_envelope(op, "my-request-1"),
    }


def _print_described(described: dict[str, Any], out: TextIO) -> None:
    d = described
    print(f"{d['operation']} ({d['api']}): {d['summary']}", file=out)
    print(f"  {d['method']} {d['host']}{d['path']}", file=out)
    print(f"  body: {d['content_type'] or 'none'}; from: {d['source']}", file=out)
    if d["refused"]:
        print(f"  refused by the bridge: {d['refused']}", file=out)
    print("\nparameters (envelope field, where on the wire, type, required):", file=out)
    for p in d["params"]:
        required = "required" if p["required"] else "optional"
        print(f"  {p['in']}.{p['name']}  [{p['where']}, {p['type']}, {required}]", file=out)
        for label in ("enum", "pattern", "description"):
            value = p[label]
            if value:
                shown = ", ".join(value) if isinstance(value, list) else value
                print(f"      {label}: {shown}", file=out)
    print("\nexample envelope (required parameters only):", file=out)
    print(json.dumps(d["example"], indent=2, ensure_ascii=False), file=out)


def listing(catalog: Catalog, ops: list[Operation]) -> str:
    """What the catalog holds, for the line after a listing: counts and what is refused."""
    refused = [op for op in ops if op.refused]
    text = (
        f"{len(ops)} of {len(catalog)} operations; {len(catalog.specs())} specs, "
        f"{len(catalog.apis())} apis with operations"
    )
    if not refused:
        return text
    reasons = Counter(op.refused for op in refused)
    parts = [
        f"{count} ({reason}): "
        + ", ".join(f"{op.api} {op.operation}" for op in refused if op.refused == reason)
        for reason, count in reasons.items()
    ]
    return f"{text}; refused: " + "; ".join(parts)


def _find(catalog: Catalog, words: list[str], api: str | None) -> Operation:
    """The operation ``words`` name exactly, else the best search match."""
    try:
        return catalog.resolve(" ".join(words), api)
    except UnknownOperationError as exc:
        found = [op for op in catalog.search(" ".join(words)) if api in (None, op.api)]
        if found:
            return found[0]
        raise exc from None


def catalog_command(
    words: list[str], api: str | None, as_json: bool, spec_dir: Path | None, show: bool
) -> int:
    """``twilio-bridge catalog``: list or search operations, or ``--describe`` one."""
    if show and not words:
        print(
            "twilio-bridge: --describe needs an operation (or words to find one)", file=sys.stderr
        )
        return 2
    try:
        catalog = Catalog.load(spec_dir)
    except SpecDirError as exc:
        print(f"twilio-bridge: {exc.file}: {exc.problem}", file=sys.stderr)
        return 2
    if show:
        try:
            described = describe(catalog, _find(catalog, words, api))
        except (UnknownOperationError, AmbiguousOperationError) as exc:
            print(f"twilio-bridge: {exc}", file=sys.stderr)
            return 1
        if as_json:
            print(json.dumps(described, indent=1, ensure_ascii=False))
        else:
            _print_described(described, sys.stdout)
        return 0
    ops = catalog.search(" ".join(words)) if words else list(catalog)
    ops = [op for op in ops if api in (None, op.api)]
    if as_json:
        print(json.dumps([_row(catalog, op) for op in ops], indent=1, ensure_ascii=False))
    else:
        for op in ops:
            source = f"  [{Path(catalog.source_of(op)).name}]" if spec_dir else ""
            print(f"{op.api:<22} {op.operation:<40} {op.method:<6} {op.path}{source}")
    print(listing(catalog, ops), file=sys.stderr)
    return 0
