"""Generate ``bridge/data/catalog.json`` from Twilio's official OpenAPI specs.

Run ``python -m bridge.tooling.catalog_gen [SPECS [OUT]]`` where SPECS is a directory of
``twilio_*.json`` files or a ``.tar.xz`` of them; the default is the archive kept in the
repository, ``bridge/tooling/twilio-oai/spec-json-2.6.7.tar.xz`` (twilio/twilio-oai 2.6.7,
MIT licence beside it; it feeds this generator and the tests, and is not part of the wheel).

The generated file is what the bridge loads at start-up: one JSON parse instead of reading
55 OpenAPI documents. How each document becomes catalog entries is :mod:`bridge.twilio.openapi`
(shared with the specs an operator adds at run time).
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.twilio.openapi import SpecError, api_name, operations

__all__ = ["DEFAULT_OUT", "SOURCE", "SPECS", "generate", "main", "read_specs", "render", "write"]

SPECS = Path(__file__).parent / "twilio-oai" / "spec-json-2.6.7.tar.xz"
SOURCE = "twilio/twilio-oai 2.6.7 (d50069b44ea8cd23141385bdb6db48f16ff75bb5)"
DEFAULT_OUT = Path(__file__).parents[1] / "data" / "catalog.json"
_COMMAND = "python -m bridge.tooling.catalog_gen"

Json = dict[str, Any]


def read_specs(specs: Path) -> dict[str, bytes]:
    """File name → content of every ``twilio_*.json`` in a directory or a ``.tar.xz``."""
    if specs.is_dir():
        found = {path.name: path.read_bytes() for path in specs.glob("twilio_*.json")}
    else:
        found = {}
        with tarfile.open(specs, "r:*") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None and name.startswith("twilio_") and name.endswith(".json"):
                    found[name] = extracted.read()
    if not found:
        raise FileNotFoundError(f"no twilio_*.json files in {specs}")
    return dict(sorted(found.items()))


def generate(specs: Path, source: str | None = None) -> Json:
    """The catalog document of every ``twilio_*.json`` in ``specs`` (directory or archive)."""
    files = read_specs(specs)
    entries: list[Json] = []
    for name, content in files.items():
        try:
            entries.extend(operations(api_name(name), json.loads(content)))
        except SpecError as exc:
            raise SpecError(f"{name}: {exc}") from None
    entries.sort(key=lambda o: (o["api"], o["operation"], o["method"], o["path"]))
    default = specs.resolve() == SPECS.resolve()
    return {
        "_generated": (
            "Generated from Twilio's OpenAPI specs; do not edit. Regenerate with: "
            + (_COMMAND if default else f"{_COMMAND} SPECS")
        ),
        "source": source or (SOURCE if default else specs.name),
        "specs": list(files),
        "operations": entries,
    }


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render(catalog: Mapping[str, Any]) -> str:
    """Serialise compactly, one operation per line so diffs stay readable."""
    head = ",".join(f"{_dumps(k)}:{_dumps(v)}" for k, v in catalog.items() if k != "operations")
    ops = ",\n".join(_dumps(op) for op in catalog["operations"])
    return f'{{{head},"operations":[\n{ops}\n]}}\n'


def write(specs: Path = SPECS, out_path: Path = DEFAULT_OUT) -> int:
    """Generate the catalog and write it to ``out_path``; return the operation count."""
    catalog = generate(specs)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render(catalog), encoding="utf-8")
    return len(catalog["operations"])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m bridge.tooling.catalog_gen [SPECS [OUT]]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 2 or (args and args[0] in ("-h", "--help")):
        print(__doc__.splitlines()[2] if __doc__ else "", file=sys.stderr)
        return 2
    specs = Path(args[0]) if args else SPECS
    out = Path(args[1]) if len(args) == 2 else DEFAULT_OUT
    count = write(specs, out)
    print(f"wrote {count} operations to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
