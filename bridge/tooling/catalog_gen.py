"""Generate ``bridge/data/catalog.json`` from Twilio's official OpenAPI specs.

Run ``python -m bridge.tooling.catalog_gen SPEC_DIR [OUT]`` where ``SPEC_DIR`` holds the
``twilio_*.json`` files of ``@twilio-alpha/mcp@0.7.0`` (``package/twilio-oai/spec/json/``).

What the specs say about parameters that are not plain scalars, and how it is recorded
(``style`` and ``prefix`` on a param; absent means "send the value as is"):

* Flattened maps are mostly already flat in the spec: 392 distinct form-body properties
  are *named* with dots (``Notifications.NewMessage.Enabled``, ``Webhooks.OnMessageSend.Url``,
  ``Parameter1.Name`` ... ``Parameter99.Value`` in the 2010 API, ``ChannelData.To`` in one
  query). They are ordinary scalars whose wire key contains a dot, so they need no style.
* One parameter is a true open map: ``AddOnsData`` (lookups v1, query) has
  ``format: prefixed-collapsible-map-AddOns``. Twilio's SDKs flatten it under the prefix
  named in the format, not under the param's name: ``{"a": {"b": 1}}`` → ``AddOns.a.b=1``.
  Recorded as ``style: "flatten"``, ``prefix: "AddOns"``.
* Form/query params of ``type: object`` (Sync ``Data``, Video ``VideoLayout``...) and the 43
  properties with an empty schema (Verify ``ChannelConfiguration``, Studio ``Parameters``,
  Notify ``Apn``...) are sent by the SDKs as JSON strings (``serialize.object``). Recorded
  as ``type: "object"``, ``style: "json"``; arrays of such elements (Verify
  ``Details.Fields``) get ``items: "object"``, ``style: "json"`` (each element JSON-encoded).
* ``x-twilio`` carries only ``pii``, ``ignoreFormat`` and SDK class hints: nothing about
  encoding. No parameter uses OpenAPI ``style``; four scalar query params (assistants v1)
  say ``explode: false``, which changes nothing for single values.

JSON-bodied operations (34: 32 ``application/json``, plus ``CreateOrganizationUser`` and
``UpdateOrganizationUser`` that declare both JSON types and are recorded as
``application/scim+json``, the SDKs' choice) send their body as JSON, so their params carry
no style. Only top-level body properties are listed. For arrays, ``pattern``, ``enum`` and
``format`` describe the elements.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.twilio.encoding import FORM

__all__ = ["SOURCE", "api_name", "generate", "main", "render", "write"]

SOURCE = "@twilio-alpha/mcp@0.7.0"
DEFAULT_OUT = Path(__file__).parents[1] / "data" / "catalog.json"

_METHODS = ("get", "post", "put", "patch", "delete")
_LOCATION_RANK = {"path": 0, "query": 1, "header": 2, "body": 3}
_SUMMARY_MAX = 120
_COLLAPSIBLE = "prefixed-collapsible-map-"

Json = dict[str, Any]


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
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"external $ref not supported: {ref}")
            target: Any = self.doc
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node


def _summary(op: Json) -> str:
    text = (op.get("summary") or op.get("description") or "").strip()
    line = text.splitlines()[0].strip() if text else ""
    if len(line) > _SUMMARY_MAX:
        line = line[: _SUMMARY_MAX - 1].rstrip() + "…"
    return line


def _param(
    spec: _Spec, name: str, location: str, schema: Any, required: bool, encoded: bool
) -> Json:
    """Describe one parameter; ``encoded`` is true when it travels as form/query text."""
    s = spec.resolve(schema) or {}
    kind = s.get("type") or "object"  # an empty schema is "anything": the SDKs send JSON
    items: str | None = None
    facets = s
    if kind == "array":
        facets = spec.resolve(s.get("items")) or {}
        items = facets.get("type") or "object"
    out: Json = {"name": name, "in": location, "type": kind, "items": items, "required": required}
    for key in ("pattern", "enum", "format"):
        if key in facets:
            out[key] = facets[key]
    if encoded:
        fmt = s.get("format", "")
        if fmt.startswith(_COLLAPSIBLE):
            out["style"] = "flatten"
            out["prefix"] = fmt.removeprefix(_COLLAPSIBLE)
        elif kind == "object" or items == "object":
            out["style"] = "json"
    return out


def _operation_params(spec: _Spec, path_item: Json, op: Json) -> tuple[list[Json], str | None]:
    params: list[Json] = []
    declared = [*path_item.get("parameters", []), *op.get("parameters", [])]
    for raw in declared:
        p = spec.resolve(raw)
        location = p["in"]
        params.append(
            _param(
                spec,
                p["name"],
                location,
                p.get("schema"),
                bool(p.get("required", location == "path")),
                encoded=location != "header",
            )
        )
    content_type: str | None = None
    body = spec.resolve(op.get("requestBody"))
    if body:
        # Two IAM SCIM operations declare both application/json and application/scim+json;
        # Twilio's SDKs set each declared type in turn, so the last one is what goes out.
        content_type, media = list(body["content"].items())[-1]
        schema = spec.resolve(media.get("schema")) or {}
        required = set(schema.get("required", []))
        for prop, sub in schema.get("properties", {}).items():
            params.append(
                _param(spec, prop, "body", sub, prop in required, encoded=content_type == FORM)
            )
    params.sort(key=lambda p: (_LOCATION_RANK[p["in"]], p["name"]))
    return params, content_type


def _host(doc: Json, path_item: Json, where: str) -> str:
    servers = path_item.get("servers") or doc.get("servers") or []
    hosts = {str(s["url"]).rstrip("/") for s in servers}
    if len(hosts) != 1:
        raise ValueError(f"{where}: expected exactly one server, found {sorted(hosts)}")
    return hosts.pop()


def _auth(doc: Json, op: Json) -> str:
    """``basic`` (Account SID + Auth Token or API key), ``oauth2`` or ``none``."""
    schemes = doc.get("components", {}).get("securitySchemes", {})
    kinds = {
        schemes[name]["type"]
        for choice in op.get("security", doc.get("security")) or []
        for name in choice
    }
    if not kinds:
        return "none"
    if kinds == {"http"}:
        return "basic"
    if kinds == {"oauth2"}:
        return "oauth2"
    raise ValueError(f"{op['operationId']}: unsupported security schemes {sorted(kinds)}")


def _operations(api: str, doc: Json) -> Iterator[Json]:
    spec = _Spec(doc)
    for path, path_item in doc.get("paths", {}).items():
        host = _host(doc, path_item, f"{api} {path}")
        for method in _METHODS:
            op = path_item.get(method)
            if op is None:
                continue
            params, content_type = _operation_params(spec, path_item, op)
            yield {
                "api": api,
                "operation": op["operationId"],
                "method": method.upper(),
                "host": host,
                "path": path,
                "summary": _summary(op),
                "content_type": content_type,
                "auth": _auth(doc, op),
                "params": params,
            }


def generate(spec_dir: Path) -> Json:
    """Build the catalog document from every ``twilio_*.json`` in ``spec_dir``."""
    files = sorted(spec_dir.glob("twilio_*.json"))
    if not files:
        raise FileNotFoundError(f"no twilio_*.json files in {spec_dir}")
    operations: list[Json] = []
    for file in files:
        doc = json.loads(file.read_text(encoding="utf-8"))
        operations.extend(_operations(api_name(file.name), doc))
    operations.sort(key=lambda o: (o["api"], o["operation"], o["method"], o["path"]))
    return {
        "_generated": (
            "Generated from Twilio's OpenAPI specs; do not edit. "
            "Regenerate with: python -m bridge.tooling.catalog_gen SPEC_DIR"
        ),
        "source": SOURCE,
        "operations": operations,
    }


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render(catalog: Mapping[str, Any]) -> str:
    """Serialise compactly, one operation per line so diffs stay readable."""
    head = ",".join(f"{_dumps(k)}:{_dumps(v)}" for k, v in catalog.items() if k != "operations")
    ops = ",\n".join(_dumps(op) for op in catalog["operations"])
    return f'{{{head},"operations":[\n{ops}\n]}}\n'


def write(spec_dir: Path, out_path: Path = DEFAULT_OUT) -> int:
    """Generate the catalog and write it to ``out_path``; return the operation count."""
    catalog = generate(spec_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render(catalog), encoding="utf-8")
    return len(catalog["operations"])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m bridge.tooling.catalog_gen SPEC_DIR [OUT]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2 or args[0] in ("-h", "--help"):
        print(__doc__.splitlines()[2] if __doc__ else "", file=sys.stderr)
        return 2
    out = Path(args[1]) if len(args) == 2 else DEFAULT_OUT
    count = write(Path(args[0]), out)
    print(f"wrote {count} operations to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
