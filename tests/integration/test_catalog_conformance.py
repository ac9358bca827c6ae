"""Every operation of the catalog, through the running bridge, to Prism serving Twilio's spec.

Each envelope carries only what the spec requires (values from each parameter's type, enum,
pattern and format). Prism validates every request against the official spec, so an ok reply
means the bridge built a valid Twilio call; every reply must also validate against
``schemas/``. The ten Organizations operations that need OAuth 2.0 must be refused instead.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema

from bridge.twilio.catalog import Catalog, Operation
from tests.helpers import SCHEMAS
from tests.integration.samples import minimal_envelope
from tests.support.harness import BridgeProcess, Topics, collect, produce

REPLY_SCHEMA = json.loads((SCHEMAS / "reply.schema.json").read_text())

# The catalog records parameters one level deep; these bodies have required fields inside
# their array items, taken from the spec's own request example.
NESTED_BODIES: dict[str, dict[str, Any]] = {
    "CreateBillingUsage": {"billable_items": [{"sid": "BI" + "a" * 32, "quantity": 12.355}]},
}


def _envelope(op: Operation, n: int) -> dict[str, Any]:
    envelope = minimal_envelope(op, f"op-{n}")
    if op.operation in NESTED_BODIES:
        envelope["body"] = NESTED_BODIES[op.operation]
    return envelope


async def test_every_catalog_operation_is_a_valid_call(
    tansu: Any, prism: Any, tmp_path: Path
) -> None:
    operations = list(Catalog.load())
    envelopes = [_envelope(op, n) for n, op in enumerate(operations)]
    topics = Topics.fresh()
    await topics.create(tansu.bootstrap_servers, partitions=4)
    bridge = BridgeProcess(
        tansu.bootstrap_servers, prism.base_url, topics, tmp_path / "bridge.log"
    ).start()
    try:
        await produce(
            tansu.bootstrap_servers,
            topics.requests,
            ((e["id"].encode(), json.dumps(e).encode()) for e in envelopes),
        )
        replies = await collect(tansu.bootstrap_servers, topics.replies, len(envelopes), 240)
    finally:
        assert bridge.stop() == 0
    by_id = {r.value["id"]: r.value for r in replies}
    assert len(by_id) == len(envelopes), bridge.log()[-3000:]

    failures: list[str] = []
    per_api: Counter[str] = Counter()
    for envelope, op in zip(envelopes, operations, strict=True):
        reply = by_id[envelope["id"]]
        jsonschema.validate(reply, REPLY_SCHEMA)
        per_api[op.api] += 1
        if op.auth == "oauth2":
            # Documented: refused before calling Twilio, the bridge has no OAuth 2.0 tokens.
            assert reply["error"]["kind"] == "validation", reply
            assert "OAuth 2.0" in reply["error"]["message"]
        elif reply["status"] != "ok":
            error = reply["error"]
            failures.append(
                f"{op.api} {op.operation}: {error['kind']} {error['http_status']} "
                f"{error['message'][:200]}"
            )
    print(f"\n{len(envelopes)} operations in {len(per_api)} apis, {len(failures)} refused")
    print("\n".join(failures[:50]))
    assert not failures
