"""Twilio's official OpenAPI specs (twilio-oai 2.6.7, the archive kept in the repository)
unpacked into the cache, and prepared for Prism.

Two changes for Prism, nothing else: array properties of form bodies get an explicit
``style: form, explode: true`` encoding and an inline schema (so Twilio's repeated keys
``MediaUrl=a&MediaUrl=b`` validate) and object properties become strings (Twilio's SDKs send
them as JSON strings, ``Data={"a": 1}``, which Prism cannot decode: it ignores
``encoding.contentType``), and
several specs are merged into one document whose paths start with ``/{domain}``, so one
Prism process on one port serves every chosen Twilio domain. The specs are the ones the
packaged catalog is generated from (:data:`bridge.tooling.catalog_gen.SPECS`), so Prism
checks every operation against the document it came from; a spec file of one's own (a path
instead of a name) is served as well.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.tooling.catalog_gen import SPECS, read_specs
from bridge.tooling.local.cache import cache_dir
from bridge.twilio.encoding import FORM

__all__ = [
    "MockSpec",
    "all_spec_names",
    "domain_of",
    "ensure_spec",
    "mock_spec",
    "patch_form_arrays",
    "patched_spec",
    "spec_name",
]

# Bump when the output of patching or merging changes, so stale cached copies are not reused.
FORMAT = "6"
DOMAINS = "x-twilio-domains"

Spec = dict[str, Any]


def _write_atomically(path: Path, text: str) -> None:
    # Write then rename: a reader (another test run) never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def ensure_spec() -> Path:
    """The kept twilio-oai ``json`` directory, unpacked into the cache on first use."""
    target = cache_dir() / SPECS.name.removesuffix(".tar.xz")
    if (target / "twilio_api_v2010.json").is_file():
        return target
    if not SPECS.is_file():
        raise FileNotFoundError(
            f"{SPECS} is missing: Twilio's specs are kept in the repository, not in the wheel; "
            "run the Twilio mock from a clone (pip install -e '.[demo]')"
        )
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".twilio-oai-"))
    try:
        for name, content in read_specs(SPECS).items():
            (tmp / name).write_bytes(content)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # else another process unpacked it first: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def spec_name(name: str) -> str:
    """``api_v2010``, ``twilio_api_v2010`` or ``twilio_api_v2010.json`` → the file name; a
    path to a spec file of one's own (containing ``/``) is kept as it is."""
    if "/" in name:
        return name
    name = name if name.startswith("twilio_") else f"twilio_{name}"
    return name if name.endswith(".json") else f"{name}.json"


def all_spec_names() -> list[str]:
    """Every spec file name of the kept archive (55 in 2.6.7)."""
    return sorted(path.name for path in ensure_spec().glob("twilio_*.json"))


def domain_of(spec: Spec) -> str:
    """First label of the spec's host: ``https://verify.twilio.com`` → ``verify``."""
    url: str = spec["servers"][0]["url"]
    return url.split("://", 1)[1].split(".", 1)[0]


def _resolve(spec: Spec, node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def patch_form_arrays(spec: Spec) -> Spec:
    """Declare how Twilio encodes form arrays (repeated keys) and objects (JSON strings)."""
    for item in spec["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            media = _resolve(spec, operation.get("requestBody", {})).get("content", {}).get(FORM)
            if media is None:
                continue
            properties = _resolve(spec, media.get("schema", {})).get("properties", {})
            for name, prop in properties.items():
                kind = _resolve(spec, prop).get("type")
                if kind == "array":
                    encoding = media.setdefault("encoding", {})
                    encoding.setdefault(name, {"style": "form", "explode": True})
                    # Prism decodes repeated keys into a list only for an inline array schema
                    # that is not nullable (a form has no null anyway).
                    inline = copy.deepcopy(_resolve(spec, prop))
                    inline.pop("nullable", None)
                    properties[name] = inline
                elif kind == "object":
                    properties[name] = {"type": "string", "contentMediaType": "application/json"}
    return spec


def _source(name: str) -> Path:
    return Path(name) if "/" in name else ensure_spec() / name


def patched_spec(name: str) -> Path:
    """A cached copy of one spec file with :func:`patch_form_arrays` applied."""
    name = spec_name(name)
    source = _source(name)
    # A file of one's own may change between runs: its copy is keyed by its content.
    key = hashlib.sha256(source.read_bytes()).hexdigest()[:16] + "-" if "/" in name else ""
    target = cache_dir() / f"twilio-oai-prism-{FORMAT}" / (key + Path(name).name)
    if not target.is_file():
        target.parent.mkdir(exist_ok=True)
        spec = json.loads(source.read_text())
        _write_atomically(target, json.dumps(patch_form_arrays(spec)))
    return target


def _prefix_refs(node: Any, prefix: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/"):
                section, _, rest = value.removeprefix("#/components/").partition("/")
                node[key] = f"#/components/{section}/{prefix}{rest}"
            else:
                _prefix_refs(value, prefix)
    elif isinstance(node, list):
        for value in node:
            _prefix_refs(value, prefix)


def _add_components(merged: Spec, spec: Spec, tag: str) -> None:
    for section, items in spec.get("components", {}).items():
        target = merged["components"].setdefault(section, {})
        for key, value in items.items():
            # Security requirements name schemes directly (no $ref): keep those names.
            if section != "securitySchemes":
                key = tag + key
            elif target.get(key, value) != value:
                raise ValueError(f"{tag}: security scheme {key!r} differs between specs")
            target[key] = value


def _add_paths(merged: Spec, spec: Spec, tag: str, path_prefix: str) -> None:
    for path, item in copy.deepcopy(spec["paths"]).items():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                # operationIds repeat across specs (127 of them); Prism wants them unique.
                operation["operationId"] = tag + operation["operationId"]
                # Top-level security would be lost in the merge: push it down.
                operation.setdefault("security", spec.get("security", []))
        merged["paths"][path_prefix + path] = item


@dataclass(frozen=True)
class MockSpec:
    """The document Prism serves, and the Twilio domains (first path segment) it covers."""

    path: Path
    domains: tuple[str, ...]


def mock_spec(names: Sequence[str], *, plain: bool = False) -> MockSpec:
    """One cached document with the patched specs' paths under ``/{domain}``.

    With ``plain``, paths are also served without the prefix (sensible for one spec only).
    """
    files = sorted({spec_name(name) for name in names})
    patched = [patched_spec(name) for name in files]
    key = hashlib.sha256(json.dumps([FORMAT, [p.name for p in patched], plain]).encode())
    target = cache_dir() / f"twilio-oai-prism-{FORMAT}" / f"mock-{key.hexdigest()[:16]}.json"
    if target.is_file():
        return MockSpec(target, tuple(json.loads(target.read_text())["info"][DOMAINS]))
    merged: Spec = {
        "openapi": "3.0.1",
        "info": {"title": "Twilio (twilio-oai) for Prism: " + ", ".join(files), "version": "1"},
        "paths": {},
        "components": {},
    }
    found: set[str] = set()
    for name, path in zip(files, patched, strict=True):
        spec = json.loads(path.read_text())
        tag = Path(name).name.removeprefix("twilio_").removesuffix(".json") + "."
        domain = domain_of(spec)
        found.add(domain)
        _prefix_refs(spec, tag)
        _add_components(merged, spec, tag)
        _add_paths(merged, spec, tag, "/" + domain)
        if plain:
            _add_paths(merged, spec, tag + "plain.", "")
    merged["info"][DOMAINS] = sorted(found)
    _write_atomically(target, json.dumps(merged))
    return MockSpec(target, tuple(sorted(found)))
