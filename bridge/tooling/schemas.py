"""Everything in ``schemas/``, generated from code: the JSON Schemas (draft 2020-12) of every
envelope and of the instances API's body and audit events (from the pydantic models) and of
each event family's data (from the event mapping),
and the AsyncAPI 3.0 document of every topic, which refers to them by relative file name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bridge.contract.deliveries import DeliveryRecord
from bridge.contract.envelopes import ErrorRecord, Reply, request_adapter
from bridge.contract.event_schema import event_data_schema, event_families
from bridge.instances.model import InstanceSpec
from bridge.instances.records import AuditData
from bridge.tooling.asyncapi import ASYNCAPI_FILE, asyncapi_document, event_data_file

__all__ = ["render_schemas", "write_schemas"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_BASE_ID = "https://github.com/twilio-kafka-bridge/schemas/"


def _document(name: str, schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {"$schema": _DIALECT, "$id": _BASE_ID + name, "title": title, **schema}


def render_schemas() -> dict[str, str]:
    """File name → text, exactly as committed in ``schemas/``."""
    models: dict[str, tuple[str, dict[str, Any]]] = {
        "request.schema.json": ("Request envelope", request_adapter.json_schema()),
    }
    records: dict[str, type[BaseModel]] = {
        "reply.schema.json": Reply,
        "error-record.schema.json": ErrorRecord,
        "delivery-record.schema.json": DeliveryRecord,
        "instance.schema.json": InstanceSpec,
        "instance-audit-data.schema.json": AuditData,
    }
    for name, model in records.items():
        models[name] = (model.__name__, model.model_json_schema())
    for family in event_families():
        models[event_data_file(family)] = (f"Data of a {family} event", event_data_schema(family))
    rendered = {
        name: json.dumps(_document(name, schema, title), indent=2, sort_keys=True) + "\n"
        for name, (title, schema) in models.items()
    }
    # In the order built (asyncapi, info, servers, channels...): it is read by people too.
    rendered[ASYNCAPI_FILE] = json.dumps(asyncapi_document(), indent=2) + "\n"
    return rendered


def write_schemas(directory: Path) -> list[Path]:
    """Write every file into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
