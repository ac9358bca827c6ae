"""The error records of webhooks that got the fallback (``bridge.inbound.twiml.failures``)."""

from __future__ import annotations

import base64
import json

import jsonschema

from bridge.contract.envelopes import SourceRef
from bridge.inbound.twiml.failures import invalid_answer, no_answer
from bridge.kafka.records import Record
from tests.helpers import SCHEMAS

ERROR_RECORD = json.loads((SCHEMAS / "error-record.schema.json").read_text())


def test_a_timeout_names_the_event_that_got_no_answer() -> None:
    event = SourceRef(topic="twilio.events.voice", partition=2, offset=17, key="Q0Ex")
    record = no_answer("tok-1", "voice", event, 8.0)
    document = record.model_dump(mode="json")
    jsonschema.validate(document, ERROR_RECORD)
    assert document["id"] == "tok-1" and document["source"] == event.model_dump()
    assert document["error"]["kind"] == "timeout"
    assert document["error"]["message"] == (
        "no TwiML answer within 8 s of the voice webhook; Twilio got the fallback"
    )
    assert document["raw"] is None and document["request"] is None


def test_a_bad_answer_is_kept_for_a_look_unless_it_is_too_large() -> None:
    answer = Record("twilio.twiml", 1, 5, b"tok-1", b"<Say>Hi</Say>", (), 1_700_000_000_000)
    record = invalid_answer("tok-1", "voice", answer, "the root element is <Say>", 100)
    document = record.model_dump(mode="json")
    jsonschema.validate(document, ERROR_RECORD)
    assert document["error"]["kind"] == "validation"
    assert "the root element is <Say>" in document["error"]["message"]
    assert document["source"] == {
        "topic": "twilio.twiml",
        "partition": 1,
        "offset": 5,
        "key": base64.b64encode(b"tok-1").decode(),
        "timestamp_ms": 1_700_000_000_000,
    }
    assert base64.b64decode(document["raw"]) == b"<Say>Hi</Say>"
    assert invalid_answer("tok-1", "voice", answer, "too large", 10).raw is None
