"""Every operation of the catalog, through the running bridge, to Prism serving Twilio's specs.

Prism serves the same twilio-oai 2.6.7 documents the packaged catalog is generated from.
Each envelope carries only what the spec requires (values from each parameter's type, enum,
pattern and format). Prism validates every request against the official spec, so an ok reply
means the bridge built a valid Twilio call; every reply must also validate against
``schemas/``. The Organizations operations that need OAuth 2.0 must be refused instead.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from bridge.tooling.catalog_view import example_envelope
from bridge.twilio.catalog import Catalog, Operation
from tests.helpers import schema_validator
from tests.support.harness import BridgeProcess, Topics, collect, produce

REPLY_VALIDATOR = schema_validator("reply.schema.json")

# The catalog records parameters one level deep, and a body that is one of several shapes
# has none required: these bodies need more than the required top-level fields, taken from the
# spec's own request example where it has one, else from its schema.
SPEC_BODIES: dict[str, dict[str, Any]] = {
    "CreateBillingUsage": {"billable_items": [{"sid": "BI" + "a" * 32, "quantity": 12.355}]},
    "CreateV3TypingIndicator": {"channel": "WHATSAPP", "messageId": "SM" + "0" * 32},
    "CreatePortingPortIn": {
        "account_sid": "AC" + "0" * 32,
        "documents": ["RD" + "0" * 32],
        "losing_carrier_information": {
            "customer_name": "Ann",
            "authorized_representative": "Ann",
            "authorized_representative_email": "ann@example.com",
        },
    },
    "CreateShortCodeApplication": {
        "friendly_name": "shop",
        "iso_country": "US",
        "business_information": {"customer_facing_profile": "BU" + "0" * 32},
        "setup": {"charges_apply": True},
    },
    "UpdateChallengePasskeys": {
        "id": "6ySmhJd6qGUMCthiqszyb4Od4U6TFn0v3DLz-1EZrNQ",
        "rawId": "eb24a684977aa8650c0ad862aaccf26f839de14e93167d2fdc32f3fb5119acd4",
        "authenticatorAttachment": "platform",
        "type": "public-key",
        "response": {
            "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0",
            "signature": "MEYCIQDDs662ykELzpmxkQaOR6HY5GwO7n",
            "userHandle": "WUU0ZmQzYWFmNGU0NT",
            "authenticatorData": "o3mm9u6vuaVeN4wRgDTid",
        },
    },
    # A token request without a grant is a 400 at Twilio and at Prism alike.
    "CreateOauth2Token": {
        "grant_type": "client_credentials",
        "client_id": "OQ1",
        "client_secret": "x",
    },
}


def _envelope(op: Operation, n: int) -> dict[str, Any]:
    envelope = example_envelope(op, f"op-{n}")
    if op.operation in SPEC_BODIES:
        envelope["body"] = SPEC_BODIES[op.operation]
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
        REPLY_VALIDATOR.validate(reply)
        per_api[op.api] += 1
        if op.refused:
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
