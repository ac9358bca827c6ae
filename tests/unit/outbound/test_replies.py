"""Classifying Twilio's answers (``bridge.outbound.replies``) into reply envelopes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.contract.envelopes import Reply
from bridge.contract.errors import (
    BridgeError,
    CallNotSent,
    CallTimeout,
    CallTransportError,
    InternalError,
    RequestInvalid,
    TwilioCallFailed,
    UnknownOutcome,
)
from bridge.outbound.replies import error_reply, reply_for_response, shaped
from bridge.twilio.responses import HttpResult, failure_from_response
from tests.helpers import CALL, JSON, PATH, result


def reply(res: HttpResult, **overrides: Any) -> Reply:
    kwargs: dict[str, Any] = {
        "response_headers": None,
        "metadata": {"order": "ORD-1"},
        "attempts": 1,
        "duration_ms": 12.3456789,
    }
    kwargs.update(overrides)
    return reply_for_response("req-1", CALL, res, **kwargs)


CLASSIC = {
    "code": 21211,
    "message": "The 'To' number +1 is not a valid phone number.",
    "more_info": "https://www.twilio.com/docs/errors/21211",
    "status": 400,
}


def test_success_reply_carries_the_call_and_parsed_body() -> None:
    body = {"sid": "SM1", "status": "queued", "num_media": "0", "price": None}
    out = reply(result(201, body, headers=(("Twilio-Request-Id", "RQ1"),)))
    assert out.status == "ok" and out.error is None
    assert out.id == "req-1"
    assert out.http_status == 201
    assert out.body == body
    assert out.content_type == JSON
    assert (out.api, out.operation, out.method, out.path) == (
        "api.v2010",
        "CreateMessage",
        "POST",
        PATH,
    )
    assert out.attempts == 1
    assert out.duration_ms == 12.346
    assert out.metadata == {"order": "ORD-1"}
    assert out.warnings == list(CALL.warnings)
    assert out.pages == 1
    assert out.next_page_uri is None
    assert out.headers == {}  # none selected


def test_success_reply_serialises_with_a_null_error() -> None:
    out = reply(result(200, {"sid": "SM1"}))
    wire = json.loads(out.model_dump_json())
    assert wire["status"] == "ok" and wire["error"] is None
    assert wire["body"] == {"sid": "SM1"}


def test_no_content_success() -> None:
    out = reply(result(204, content_type=None))
    assert out.status == "ok" and out.body is None and out.http_status == 204


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/xml", b"<TwilioResponse><Message/></TwilioResponse>"),
        ("text/csv", b"sid,status\r\nSM1,queued\r\n"),
        (None, b"plain"),
    ],
)
def test_non_json_success_body_is_text(content_type: str | None, raw: bytes) -> None:
    out = reply(result(200, raw=raw, content_type=content_type))
    assert out.status == "ok"
    assert out.body == raw.decode()


def test_invalid_utf8_body_does_not_raise() -> None:
    out = reply(result(200, raw=b"\xff\xfeok", content_type="text/plain"))
    assert isinstance(out.body, str) and out.body.endswith("ok")


@pytest.mark.parametrize(
    ("body", "next_page"),
    [
        (
            {"messages": [], "next_page_uri": PATH + "?Page=1&PageToken=PA1"},
            PATH + "?Page=1&PageToken=PA1",
        ),
        ({"messages": [], "next_page_uri": None}, None),
        (
            {"services": [], "meta": {"next_page_url": "https://messaging.twilio.com/v1/S?Page=1"}},
            "https://messaging.twilio.com/v1/S?Page=1",
        ),
        ({"services": [], "meta": {"next_page_url": None}}, None),
        ({"next_page_uri": ""}, None),
    ],
)
def test_next_page_is_read_from_both_list_shapes(body: Any, next_page: str | None) -> None:
    assert reply(result(200, body)).next_page_uri == next_page


def test_response_headers_are_selected_and_lower_cased() -> None:
    res = result(
        200,
        {"sid": "SM1"},
        headers=(("Twilio-Request-Id", "RQ1"), ("Twilio-Concurrent-Requests", "3")),
    )
    assert reply(res, response_headers=["Twilio-Request-Id"]).headers == {
        "twilio-request-id": "RQ1"
    }
    assert reply(res, response_headers="twilio-request-id|Content-Type").headers == {
        "twilio-request-id": "RQ1",
        "content-type": JSON,
    }
    assert reply(res, response_headers="*").headers == {
        "twilio-request-id": "RQ1",
        "twilio-concurrent-requests": "3",
        "content-type": JSON,
    }


def test_http_result_header_lookup_is_case_insensitive() -> None:
    res = result(200, {}, headers=(("Retry-After", "3"), ("retry-after", "9")))
    assert res.header("RETRY-AFTER") == "3"
    assert res.header("x-missing") is None


def test_classic_twilio_error_body() -> None:
    out = reply(result(400, CLASSIC))
    assert out.status == "error"
    assert out.http_status == 400
    assert out.body == CLASSIC
    assert out.error is not None
    assert out.error.kind == "twilio"
    assert out.error.twilio_code == 21211
    assert out.error.message == CLASSIC["message"]
    assert out.error.more_info == CLASSIC["more_info"]
    assert out.error.http_status == 400
    assert out.error.retryable is False
    assert out.error.missing == [] and out.error.invalid == []
    assert out.metadata == {"order": "ORD-1"}
    assert out.operation == "CreateMessage"


def test_problem_details_body() -> None:
    problem = {
        "type": "https://www.twilio.com/docs/errors/20001",
        "title": "Invalid parameter",
        "status": 400,
        "code": 20001,
        "detail": "The 'name' field is too long",
        "instance": "/v1/Content",
    }
    out = reply(result(400, problem, content_type="application/problem+json"))
    assert out.body == problem
    assert out.error is not None
    assert out.error.kind == "twilio"
    assert out.error.twilio_code == 20001
    assert out.error.message == "The 'name' field is too long"
    assert out.error.more_info == "https://www.twilio.com/docs/errors/20001"


def test_problem_details_without_detail_uses_the_title() -> None:
    problem = {"type": "about:blank", "title": "Not Found", "status": 404}
    out = reply(result(404, problem, content_type="application/problem+json"))
    assert out.error is not None
    assert out.error.kind == "not_found"
    assert out.error.message == "Not Found"
    assert out.error.twilio_code is None


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, "twilio", False),
        (401, "auth", False),
        (403, "auth", False),
        (404, "not_found", False),
        (405, "twilio", False),
        (409, "twilio", False),
        (422, "twilio", False),
        (429, "rate_limited", True),
        (500, "twilio", True),
        (502, "twilio", True),
        (503, "twilio", True),
        (504, "twilio", True),
    ],
)
def test_error_status_classification(status: int, kind: str, retryable: bool) -> None:
    body = {"code": 20000 + status, "message": f"m{status}", "status": status}
    out = reply(result(status, body))
    assert out.status == "error"
    assert out.error is not None
    assert (out.error.kind, out.error.retryable) == (kind, retryable)
    assert out.error.http_status == status
    assert out.error.twilio_code == 20000 + status


def test_twilio_code_20429_is_retryable_whatever_the_status() -> None:
    body = {"code": 20429, "message": "Too Many Requests", "status": 400}
    out = reply(result(400, body))
    assert out.error is not None and out.error.retryable is True


@pytest.mark.parametrize("status", [200, 201, 204, 301, 399])
def test_below_400_is_ok(status: int) -> None:
    assert reply(result(status, {"x": 1})).status == "ok"


def test_non_json_error_body() -> None:
    html = b"<html><body>502 Bad Gateway</body></html>"
    out = reply(result(502, raw=html, content_type="text/html"))
    assert out.status == "error"
    assert out.body == html.decode()
    assert out.error is not None
    assert out.error.kind == "twilio"
    assert out.error.message == "Twilio answered HTTP 502"
    assert out.error.twilio_code is None and out.error.more_info is None
    assert out.error.retryable is True


def test_json_content_type_with_a_broken_body() -> None:
    out = reply(result(500, raw=b'{"code": 2', content_type="application/json"))
    assert out.body == '{"code": 2'
    assert out.error is not None
    assert out.error.message == "Twilio answered HTTP 500"


def test_empty_error_body() -> None:
    out = reply(result(401, content_type=None))
    assert out.body is None
    assert out.error is not None
    assert out.error.kind == "auth" and out.error.message == "Twilio answered HTTP 401"


@pytest.mark.parametrize(
    "body", [[{"code": 1}], {"code": "21211", "message": ""}, {"more_info": None}, "text"]
)
def test_odd_error_bodies_fall_back(body: Any) -> None:
    failure = failure_from_response(result(400, body), body)
    assert isinstance(failure, TwilioCallFailed)
    assert failure.message == "Twilio answered HTTP 400"
    assert failure.twilio_code is None and failure.more_info is None


def test_failure_from_response_is_a_bridge_error() -> None:
    failure = failure_from_response(result(429, CLASSIC), CLASSIC)
    assert isinstance(failure, BridgeError)
    detail = failure.to_detail()
    assert (detail.kind, detail.retryable, detail.http_status) == ("rate_limited", True, 429)
    assert detail.twilio_code == 21211


# --- failures before or instead of an answer ---------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "retryable"),
    [
        (CallTimeout("no answer"), "timeout", True),
        (CallTransportError("reset"), "transport", True),
        (CallNotSent("refused"), "transport", True),
        (UnknownOutcome("died"), "unknown_outcome", False),
        (InternalError("bug"), "internal", False),
    ],
)
def test_error_reply_for_a_failed_call(error: BridgeError, kind: str, retryable: bool) -> None:
    out = error_reply(
        "req-1",
        error,
        call=CALL,
        metadata={"m": 1},
        attempts=2,
        duration_ms=1.23456,
        warnings=["extra"],
    )
    assert out.status == "error"
    assert out.id == "req-1"
    assert (out.api, out.operation, out.method, out.path) == (
        "api.v2010",
        "CreateMessage",
        "POST",
        PATH,
    )
    assert out.http_status is None and out.body is None
    assert out.attempts == 2 and out.duration_ms == 1.235
    assert out.metadata == {"m": 1}
    assert out.warnings == [*CALL.warnings, "extra"]
    assert out.error is not None
    assert (out.error.kind, out.error.retryable) == (kind, retryable)
    assert out.error.message == error.message


def test_error_reply_before_any_call() -> None:
    error = RequestInvalid("missing To", missing=["To"], invalid=["Bogus"])
    out = error_reply("req-2", error)
    assert (out.api, out.operation, out.method, out.path) == (None, None, None, None)
    assert out.attempts == 0 and out.metadata is None and out.warnings == []
    assert out.error is not None
    assert out.error.kind == "validation" and out.error.retryable is False
    assert out.error.missing == ["To"] and out.error.invalid == ["Bogus"]
    wire = json.loads(out.model_dump_json())
    assert set(wire["error"]) == {
        "kind",
        "message",
        "http_status",
        "twilio_code",
        "more_info",
        "retryable",
        "missing",
        "invalid",
    }


def test_a_reply_too_large_or_too_deep_still_arrives_saying_what_was_left_out() -> None:
    from bridge.contract.envelopes import Reply
    from bridge.outbound.replies import reply_bytes

    big = Reply(id="r", status="ok", body={"x": "y" * 5000}, metadata={"m": "z" * 5000})
    assert json.loads(reply_bytes(big, 100_000))["body"] == {"x": "y" * 5000}
    slim = json.loads(reply_bytes(big, 8000))
    assert slim["body"] is None and slim["metadata"] == {"m": "z" * 5000}
    assert "exceeds the broker's message limit" in slim["warnings"][0]
    bare = json.loads(reply_bytes(big, 1000))
    assert bare["body"] is None and bare["metadata"] is None and len(bare["warnings"]) == 2
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    nested = json.loads(reply_bytes(Reply(id="d", status="ok", body=deep), 100_000))
    assert nested["body"] is None and "nested too deeply" in nested["warnings"][0]


def test_an_error_record_too_large_keeps_where_its_request_is() -> None:
    from bridge.contract.envelopes import ErrorInfo, ErrorRecord, SourceRef
    from bridge.outbound.replies import error_record_bytes

    record = ErrorRecord(
        id="e",
        error=ErrorInfo(kind="validation", message="bad", retryable=False),
        source=SourceRef(topic="t", partition=1, offset=7),
        request={"metadata": [1e15] * 1000},
        time="2026-11-23T00:00:00Z",
    )
    assert json.loads(error_record_bytes(record, 100_000))["request"] is not None
    small = json.loads(error_record_bytes(record, 2000))
    assert small["request"] is None and small["source"]["offset"] == 7


# --- the shape asked for -----------------------------------------------------------------------

MESSAGE = {"sid": "SM1", "status": "queued", "error_code": None}


def shaped_reply(body: Any, fmt: str, strip: bool) -> Reply:
    path = PATH.removesuffix(".json") + f"/SM{'a' * 32}.json"
    reply = Reply(id="r", status="ok", path=path, body=body, content_type=JSON)
    return shaped(reply, fmt, strip)  # type: ignore[arg-type]


def test_json_without_filtering_is_the_reply_as_it_was() -> None:
    reply = Reply(id="r", status="ok", body=MESSAGE, content_type=JSON)
    assert shaped(reply, "json", False) is reply


def test_filtering_leaves_nulls_out_and_keeps_json() -> None:
    reply = shaped_reply({"messages": [MESSAGE], "next_page_uri": None}, "json", True)
    assert reply.body == {"messages": [{"sid": "SM1", "status": "queued"}]}
    assert reply.content_type == "application/json" and reply.warnings == []


@pytest.mark.parametrize(
    ("fmt", "strip", "body", "content_type"),
    [
        (
            "xml",
            False,
            '<?xml version="1.0" encoding="UTF-8"?><TwilioResponse><Message><Sid>SM1</Sid>'
            "<Status>queued</Status><ErrorCode/></Message></TwilioResponse>",
            "application/xml",
        ),
        ("csv", True, "sid,status\r\nSM1,queued\r\n", "text/csv"),
    ],
)
def test_other_formats_are_rendered_from_the_json_body(
    fmt: str, strip: bool, body: str, content_type: str
) -> None:
    reply = shaped_reply(MESSAGE, fmt, strip)
    assert (reply.body, reply.content_type) == (body, content_type)


def test_a_body_that_is_not_json_is_left_as_it_is() -> None:
    reply = shaped_reply("plain text", "xml", True)
    assert (reply.body, reply.content_type) == ("plain text", JSON)


def test_a_format_that_cannot_be_applied_leaves_json_with_a_warning() -> None:
    reply = shaped_reply(MESSAGE, "yaml", True)
    assert reply.body == {"sid": "SM1", "status": "queued"} and reply.content_type == JSON
    assert reply.warnings == [
        "response_format 'yaml' not applied: unknown reply format 'yaml': expected json, xml or csv"
    ]
