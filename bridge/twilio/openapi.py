"""Twilio's OpenAPI documents (twilio-oai ``twilio_*.json``) read into catalog entries. Pure.

One reader for both places that need it: the generator of the packaged catalog
(:mod:`bridge.tooling.catalog_gen`) and the specs an operator adds at start-up
(``BRIDGE_CATALOG__SPEC_DIR``, :meth:`bridge.twilio.catalog.Catalog.with_specs`).

What the specs say about parameters that are not plain scalars, and how it is recorded
(``style`` and ``prefix`` on a param; absent means "send the value as is"):

* Flattened maps are mostly already flat in the spec: hundreds of form-body properties are
  *named* with dots (``Notifications.NewMessage.Enabled``, ``Parameter1.Name``); they are
  ordinary scalars whose wire key contains a dot, so they need no style.
* One parameter is a true open map: ``AddOnsData`` (lookups v1, query) has
  ``format: prefixed-collapsible-map-AddOns``. Twilio's SDKs flatten it under the prefix
  named in the format, at every depth: ``{"a": {"b": 1}}`` → ``AddOns.a.b=1``. Recorded as
  ``style: "flatten"``, ``prefix: "AddOns"``.
* Form/query params of ``type: object`` (Sync ``Data``, Video ``VideoLayout``...) and the
  properties with an empty schema (Verify ``ChannelConfiguration``, Studio ``Parameters``...)
  are sent by the SDKs as JSON strings. Recorded as ``type: "object"``, ``style: "json"``;
  arrays of such elements (Verify ``Details.Fields``) get ``items: "object"``,
  ``style: "json"`` (each element JSON-encoded).
* Header parameters (``X-Twilio-Webhook-Enabled``, ``If-Match``...) are plain strings.

JSON-bodied operations send their body as JSON, so their params carry no style; only
top-level body properties are listed (for a ``oneOf`` body, those of every alternative, none
required). Operations that declare both ``application/json`` and ``application/scim+json``
are recorded with the last one, the SDKs' choice. For arrays, ``pattern``, ``enum`` and
``format`` describe the elements.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from bridge.twilio.encoding import FORM

__all__ = ["SpecError", "api_name", "operations"]

_METHODS = ("get", "post", "put", "patch", "delete")
_LOCATION_RANK = {"path": 0, "query": 1, "header": 2, "body": 3}
_SUMMARY_MAX = 120
_COLLAPSIBLE = "prefixed-collapsible-map-"
# Basic-mode envelopes address an operation by this name, and Basic auth carries the account's
# credentials: the host of every operation must be Twilio's.
_TWILIO_HOST = re.compile(r"^https://[a-z0-9-]+(\.[a-z0-9-]+)*\.twilio\.com$")

Json = dict[str, Any]


class SpecError(ValueError):
    """The document cannot be served: not OpenAPI 3, or something the catalog cannot represent."""


def api_name(file_name: str) -> str:
    """Map a spec file name to its api name: ``twilio_verify_v2.json`` → ``verify.v2``."""
    stem = file_name.removesuffix(".json").removeprefix("twilio_")
    head, sep, tail = stem.rpartition("_")
    return f"{head}.{tail}" if sep else stem


class _Spec:
    """One spec document, able to follow its local ``$ref``s."""

    def __init__(self, doc: Json) -> None:
        self.doc = doc

    def resolve(self, node: Any) -> Any:
        # Refs may chain (a param ref whose schema is an enum ref), so follow until concrete.
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise SpecError(f"external $ref not supported: {ref}")
            if ref in seen:
                raise SpecError(f"$ref loop at {ref}")
            seen.add(ref)
            target: Any = self.doc
            for part in ref[2:].split("/"):
                if not isinstance(target, dict) or part not in target:
                    raise SpecError(f"$ref {ref} points at nothing")
                target = target[part]
            node = target
        return node


def _summary(op: Json) -> str:
    text = str(op.get("summary") or op.get("description") or "").strip()
    line = text.splitlines()[0].strip() if text else ""
    if len(line) > _SUMMARY_MAX:
        line = line[: _SUMMARY_MAX - 1].rstrip() + "…"
    return line


def _type(schema: Json) -> str:
    """The schema's type; an empty schema is "anything" (the SDKs send JSON: ``object``), and
    of OpenAPI 3.1's list of types (``["string", "null"]``) the one that is not null."""
    kind = schema.get("type") or "object"
    if isinstance(kind, list):
        return next((str(k) for k in kind if k != "null"), "object")
    return str(kind)


def _param(
    spec: _Spec, name: str, location: str, schema: Any, required: bool, encoded: bool
) -> Json:
    """Describe one parameter; ``encoded`` is true when it travels as form/query text."""
    s = spec.resolve(schema) or {}
    kind = _type(s)
    items: str | None = None
    facets = s
    if kind == "array":
        facets = spec.resolve(s.get("items")) or {}
        items = _type(facets)
    out: Json = {"name": name, "in": location, "type": kind, "items": items, "required": required}
    for key in ("pattern", "enum", "format"):
        if key in facets:
            out[key] = facets[key]
    description = _summary({"description": s.get("description")})
    if description:
        out["description"] = description
    if encoded:
        fmt = s.get("format", "")
        if fmt.startswith(_COLLAPSIBLE):
            out["style"] = "flatten"
            out["prefix"] = fmt.removeprefix(_COLLAPSIBLE)
        elif kind == "object" or items == "object":
            out["style"] = "json"
    return out


def _declared(spec: _Spec, path_item: Json, op: Json) -> list[Json]:
    params = []
    for raw in [*path_item.get("parameters", []), *op.get("parameters", [])]:
        p = spec.resolve(raw)
        location, name = p.get("in"), p.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError("a parameter without a name")
        if location not in ("path", "query", "header"):
            raise SpecError(f"parameter {name!r}: 'in' {location!r} not supported")
        required = bool(p.get("required", location == "path"))
        description = p.get("description")
        schema = {**(spec.resolve(p.get("schema")) or {})}
        if description and not schema.get("description"):
            schema["description"] = description
        encoded = location != "header"
        params.append(_param(spec, name, location, schema, required, encoded))
    return params


def _body_properties(spec: _Spec, schema: Json) -> tuple[dict[str, Any], set[str]]:
    """The body's top-level properties and the required ones; a ``oneOf`` offers all of its
    alternatives' properties, none of them required (which one is needed depends on the
    alternative)."""
    alternatives = [spec.resolve(s) or {} for s in schema.get("oneOf") or schema.get("anyOf") or []]
    if alternatives:
        merged: dict[str, Any] = {}
        for alternative in alternatives:
            merged.update(alternative.get("properties", {}))
        return merged, set()
    return schema.get("properties", {}), set(schema.get("required", []))


def _operation_params(spec: _Spec, path_item: Json, op: Json) -> tuple[list[Json], str | None]:
    params = _declared(spec, path_item, op)
    content_type: str | None = None
    body = spec.resolve(op.get("requestBody"))
    if body:
        # Two IAM SCIM operations declare both application/json and application/scim+json;
        # Twilio's SDKs set each declared type in turn, so the last one is what goes out.
        content_type, media = list(body["content"].items())[-1]
        if content_type != FORM and not content_type.endswith("json"):
            raise SpecError(f"request body of type {content_type} not supported")
        schema = spec.resolve(media.get("schema")) or {}
        properties, required = _body_properties(spec, schema)
        for prop, sub in properties.items():
            params.append(
                _param(spec, prop, "body", sub, prop in required, encoded=content_type == FORM)
            )
    params.sort(key=lambda p: (_LOCATION_RANK[p["in"]], p["name"]))
    return params, content_type


def _host(doc: Json, path_item: Json) -> str:
    servers = path_item.get("servers") or doc.get("servers") or []
    hosts = {str(s["url"]).rstrip("/") for s in servers}
    if len(hosts) != 1:
        raise SpecError(f"expected exactly one server, found {sorted(hosts)}")
    host = hosts.pop()
    if not _TWILIO_HOST.match(host):
        raise SpecError(
            f"server {host} is not https on a twilio.com host; the bridge sends Twilio "
            "credentials to it"
        )
    return host


def _auth(doc: Json, op: Json) -> str:
    """``basic`` (Account SID + Auth Token or API key) when any of the operation's security
    alternatives is HTTP Basic; else ``oauth2`` (an OAuth 2.0 or bearer access token) or
    ``none`` (no security declared)."""
    schemes = doc.get("components", {}).get("securitySchemes", {})
    kinds = set()
    for choice in op.get("security", doc.get("security")) or []:
        for name in choice:
            scheme = schemes.get(name)
            if not isinstance(scheme, dict):
                raise SpecError(f"security scheme {name!r} is not declared")
            kind = scheme.get("type"), str(scheme.get("scheme", "")).lower()
            if kind == ("http", "basic"):
                kinds.add("basic")
            elif kind[0] == "oauth2" or kind == ("http", "bearer"):
                kinds.add("oauth2")
            else:
                raise SpecError(f"security scheme {name!r} ({kind[0]}) not supported")
    if not kinds:
        return "none"
    return "basic" if "basic" in kinds else "oauth2"


def _operation(api: str, doc: Json, spec: _Spec, path: str, method: str) -> Json:
    path_item = doc["paths"][path]
    op = path_item[method]
    if not isinstance(op.get("operationId"), str) or not op["operationId"]:
        raise SpecError("no operationId")
    params, content_type = _operation_params(spec, path_item, op)
    return {
        "api": api,
        "operation": op["operationId"],
        "method": method.upper(),
        "host": _host(doc, path_item),
        "path": path,
        "summary": _summary(op),
        "content_type": content_type,
        "auth": _auth(doc, op),
        "params": params,
    }


def operations(api: str, doc: Any) -> Iterator[Json]:
    """Every operation of one twilio-oai document, as catalog entries; ``SpecError`` names the
    method and path of what cannot be represented."""
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3."):
        raise SpecError("not an OpenAPI 3 document (no 'openapi: 3.x')")
    if not isinstance(doc.get("paths", {}), dict):
        raise SpecError("'paths' is not an object")
    spec = _Spec(doc)
    for path, path_item in doc.get("paths", {}).items():
        for method in _METHODS:
            if method not in path_item:
                continue
            try:
                yield _operation(api, doc, spec, path, method)
            except SpecError as exc:
                raise SpecError(f"{method.upper()} {path}: {exc}") from None
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise SpecError(
                    f"{method.upper()} {path}: malformed ({type(exc).__name__}: {exc})"
                ) from None
