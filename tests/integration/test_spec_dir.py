"""Specs added at run time (``BRIDGE_CATALOG__SPEC_DIR``), through the real bridge process.

A made-up Twilio API (its own host, a list, a boolean, an object and a header parameter) is
served in basic mode: Prism serves that spec and validates every request the bridge makes
against it, so an ok reply means its parameters were put on the wire as the spec says. A
spec file that cannot be served stops start-up, naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.tooling.local.twilio_mock import PrismMock
from tests.helpers import WIDGET_SID, schema_validator, widgets_spec
from tests.support.harness import BridgeProcess, Topics, collect, produce

REPLY_VALIDATOR = schema_validator("reply.schema.json")

ENVELOPES: list[dict[str, Any]] = [
    {
        "id": "create",
        "mode": "basic",
        "operation": "CreateWidget",
        "params": {"X-Twilio-Webhook-Enabled": True},
        "body": {
            "Name": "gear",
            "Colors": ["red", "blue"],
            "Enabled": False,
            "Attributes": {"size": 3, "tags": ["a"]},
        },
        "strict": True,
    },
    {
        "id": "list",
        "mode": "basic",
        "api": "widgets.v1",
        "operation": "ListWidget",
        "query": {"Enabled": True, "Color": ["red", "blue"]},
    },
    {"id": "fetch", "mode": "basic", "operation": "FetchWidget", "params": {"Sid": WIDGET_SID}},
    # Prism refuses what the spec does not allow: the check is not vacuous.
    {"id": "bad", "mode": "basic", "operation": "FetchWidget", "params": {"Sid": "nope"}},
]


async def test_a_made_up_api_is_served_in_basic_mode(tansu: Any, tmp_path: Path) -> None:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    spec = spec_dir / "twilio_widgets_v1.json"
    spec.write_text(json.dumps(widgets_spec()))
    topics = Topics.fresh()
    await topics.create(tansu.bootstrap_servers)
    async with PrismMock([str(spec)], log_dir=tmp_path) as prism:
        bridge = BridgeProcess(
            tansu.bootstrap_servers,
            prism.base_url,
            topics,
            tmp_path / "bridge.log",
            {"BRIDGE_CATALOG__SPEC_DIR": str(spec_dir)},
        ).start()
        try:
            await bridge.wait_ready(within_s=60)
            await produce(
                tansu.bootstrap_servers,
                topics.requests,
                ((e["id"].encode(), json.dumps(e).encode()) for e in ENVELOPES),
            )
            replies = await collect(tansu.bootstrap_servers, topics.replies, len(ENVELOPES), 60)
        finally:
            assert bridge.stop() == 0
    by_id = {r.value["id"]: r.value for r in replies}
    assert set(by_id) == {e["id"] for e in ENVELOPES}, bridge.log()[-3000:]
    for reply in by_id.values():
        REPLY_VALIDATOR.validate(reply)
    for name in ("create", "list", "fetch"):
        reply = by_id[name]
        assert reply["status"] == "ok", reply
        assert reply.get("warnings") in (None, []), reply
    assert by_id["create"]["http_status"] == 201
    assert by_id["create"]["body"] == {"sid": WIDGET_SID, "name": "w"}
    assert by_id["fetch"]["body"]["sid"] == WIDGET_SID
    bad = by_id["bad"]
    assert (bad["status"], bad["error"]["http_status"]) == ("error", 422), bad


async def test_a_broken_spec_file_stops_start_up_naming_it(tansu: Any, tmp_path: Path) -> None:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "twilio_widgets_v1.json").write_text(json.dumps(widgets_spec()))
    broken = spec_dir / "twilio_gadgets_v1.json"
    broken.write_text('{"openapi": "3.0.1", "paths": {')
    bridge = BridgeProcess(
        tansu.bootstrap_servers,
        "http://127.0.0.1:9/{domain}",
        Topics.fresh(),
        tmp_path / "bridge.log",
        {"BRIDGE_CATALOG__SPEC_DIR": str(spec_dir)},
    ).start()
    assert bridge.wait(60) == 2, bridge.log()[-3000:]
    log = bridge.log()
    assert f"BRIDGE_CATALOG__SPEC_DIR: {broken}: not JSON" in log, log[-3000:]
    assert "Traceback" not in log
