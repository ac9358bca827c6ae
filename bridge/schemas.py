"""JSON Schemas (draft 2020-12) of every envelope, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bridge.envelopes import ErrorRecord, Reply, request_adapter

__all__ = ["render_schemas", "write_schemas"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_BASE_ID = "https://github.com/twilio-kafka-bridge/schemas/"


def _document(name: str, schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {"$schema": _DIALECT, "$id": _BASE_ID + name, "title": title, **schema}


def render_schemas() -> dict[str, str]:
    """File name → schema text, exactly as committed in ``schemas/``."""
    models: dict[str, tuple[str, dict[str, Any]]] = {
        "request.schema.json": ("Request envelope", request_adapter.json_schema()),
    }
    records: dict[str, type[BaseModel]] = {
        "reply.schema.json": Reply,
        "error-record.schema.json": ErrorRecord,
    }
    for name, model in records.items():
        models[name] = (model.__name__, model.model_json_schema())
    return {
        name: json.dumps(_document(name, schema, title), indent=2, sort_keys=True) + "\n"
        for name, (title, schema) in models.items()
    }


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
