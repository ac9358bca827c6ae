"""The README's configuration table names every setting, and only settings that exist."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from bridge.config import ENV_PREFIX, Settings
from tests.helpers import ROOT

README = ROOT / "README.md"
NAME = "<NAME>"


def _model_of(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _settings() -> tuple[set[str], set[str]]:
    """Every variable name, and the prefixes of free-keyed maps (``..__SHARED_KEYS__``)."""
    names, maps = {ENV_PREFIX + "SECRETS_DIR"}, set()
    for field, info in Settings.model_fields.items():
        top = ENV_PREFIX + field.upper()
        section = _model_of(info.annotation)
        if typing.get_origin(info.annotation) is dict:
            value = _model_of(typing.get_args(info.annotation)[1])
            assert value is not None, field
            names |= {f"{top}__{NAME}__{sub.upper()}" for sub in value.model_fields}
        elif section is not None:
            for sub, sub_info in section.model_fields.items():
                name = f"{top}__{sub.upper()}"
                if typing.get_origin(sub_info.annotation) is dict:
                    maps.add(name + "__")
                else:
                    names.add(name)
        else:
            names.add(top)
    return names, maps


def _documented() -> set[str]:
    """Names in the first cell of the configuration table's rows; ``__X`` extends the first."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    found = set()
    for line in section.splitlines():
        if not line.startswith("| `BRIDGE_"):
            continue
        cell = line.split("|")[1]
        first, *more = re.findall(r"`([^`]+)`", cell)
        found.add(first)
        stem = first.rsplit("__", 1)[0]
        found |= {stem + extra for extra in more if extra.startswith("__")}
    return found


def test_every_setting_is_in_the_configuration_table() -> None:
    names, maps = _settings()
    documented = _documented()
    missing = sorted(names - documented)
    assert not missing, f"README configuration table lacks {missing}"
    for prefix in maps:
        assert any(d.startswith(prefix) for d in documented), prefix


def test_the_configuration_table_names_no_setting_that_does_not_exist() -> None:
    names, maps = _settings()
    stale = sorted(
        d for d in _documented() if d not in names and not any(d.startswith(p) for p in maps)
    )
    assert not stale, f"README documents settings that do not exist: {stale}"
