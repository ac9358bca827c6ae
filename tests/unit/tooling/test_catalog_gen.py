"""The catalog generator: reproducible from the archive kept in the repository."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from bridge.tooling import catalog_gen
from bridge.twilio.catalog import Catalog
from bridge.twilio.openapi import SpecError

PACKAGED = catalog_gen.DEFAULT_OUT

TINY_SPEC = {
    "openapi": "3.0.1",
    "servers": [{"url": "https://demo.twilio.com/"}],
    "components": {
        "schemas": {"color": {"type": "string", "enum": ["red", "blue"]}},
        "parameters": {"sid": {"name": "Sid", "in": "path", "schema": {"type": "string"}}},
    },
    "paths": {
        "/v1/Things/{Sid}": {
            "post": {
                "operationId": "UpdateThing",
                "description": "Update a thing\nsecond line",
                "parameters": [{"$ref": "#/components/parameters/sid"}],
                "requestBody": {
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "required": ["Color"],
                                "properties": {
                                    "Color": {"$ref": "#/components/schemas/color"},
                                    "Data": {"description": "any json"},
                                },
                            }
                        }
                    }
                },
            },
            "delete": {"operationId": "DeleteThing", "summary": "x" * 300},
        }
    },
}


def _check_tiny(built: Catalog) -> None:
    update = built.resolve("UpdateThing")
    assert (update.api, update.host, update.summary) == (
        "demo.v1",
        "https://demo.twilio.com",
        "Update a thing",
    )
    sid, color, data = update.params
    assert (sid.name, sid.location, sid.required) == ("Sid", "path", True)
    assert (color.required, color.enum, color.style) == (True, ("red", "blue"), None)
    assert (data.type, data.style, data.required) == ("object", "json", False)
    assert data.description == "any json"
    delete = built.resolve("DeleteThing")
    assert delete.content_type is None and len(delete.summary) == 120


def test_generator_on_a_tiny_spec_directory(tmp_path: Path) -> None:
    (tmp_path / "twilio_demo_v1.json").write_text(json.dumps(TINY_SPEC))
    (tmp_path / "other.json").write_text("not read")
    out = tmp_path / "out" / "catalog.json"
    assert catalog_gen.main([str(tmp_path), str(out)]) == 0
    _check_tiny(Catalog.from_json(out.read_bytes()))
    doc = json.loads(out.read_bytes())
    assert (doc["source"], doc["specs"]) == (tmp_path.name, ["twilio_demo_v1.json"])
    assert doc["_generated"].endswith("python -m bridge.tooling.catalog_gen SPECS")


def test_generator_reads_a_tar_xz_of_specs(tmp_path: Path) -> None:
    archive = tmp_path / "specs.tar.xz"
    content = json.dumps(TINY_SPEC).encode()
    with tarfile.open(archive, "w:xz") as tar:
        member = tarfile.TarInfo("json/twilio_demo_v1.json")
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content))
        tar.addfile(tarfile.TarInfo("json/README.md"), io.BytesIO(b""))
    assert list(catalog_gen.read_specs(archive)) == ["twilio_demo_v1.json"]
    _check_tiny(Catalog.from_json(catalog_gen.render(catalog_gen.generate(archive))))


def test_generator_refuses_an_empty_dir_and_wrong_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        catalog_gen.generate(tmp_path)
    assert catalog_gen.main(["a", "b", "c"]) == 2
    assert catalog_gen.main(["--help"]) == 2


def test_regenerating_from_the_kept_archive_matches_the_packaged_file(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    assert catalog_gen.write(out_path=out) == 1447
    assert out.read_bytes() == PACKAGED.read_bytes()


def test_the_archive_keeps_its_licence_and_origin() -> None:
    folder = catalog_gen.SPECS.parent
    assert "MIT License" in (folder / "LICENSE").read_text()
    readme = (folder / "README.md").read_text()
    assert "d50069b44ea8cd23141385bdb6db48f16ff75bb5" in readme
    assert catalog_gen.SOURCE.endswith("(d50069b44ea8cd23141385bdb6db48f16ff75bb5)")


def test_a_spec_it_cannot_represent_is_named(tmp_path: Path) -> None:
    spec = {**TINY_SPEC, "servers": [{"url": "https://a.twilio.com"}, {"url": "https://b.x"}]}
    (tmp_path / "twilio_a_v1.json").write_text(json.dumps(spec))
    with pytest.raises(SpecError, match=r"^twilio_a_v1.json: POST /v1/Things/\{Sid\}: expected"):
        catalog_gen.generate(tmp_path)
