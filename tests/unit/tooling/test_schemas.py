import json

import jsonschema

from bridge.tooling.schemas import render_schemas
from tests.helpers import SCHEMAS


def test_committed_schemas_match_the_models() -> None:
    # Every file: the JSON Schemas and the AsyncAPI document (asyncapi.json) alike.
    rendered = render_schemas()
    committed = {p.name: p.read_text() for p in SCHEMAS.glob("*.json")}
    assert committed == rendered, "schemas/ drifted: run `twilio-bridge schemas`"


def test_schemas_are_valid_draft_2020_12() -> None:
    for name, text in render_schemas().items():
        if name.endswith(".schema.json"):
            jsonschema.Draft202012Validator.check_schema(json.loads(text))
