"""``twilio-bridge catalog``: finding, describing, example envelopes, and a spec directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from bridge.cli import main
from bridge.config import Credential, TwilioSettings
from bridge.contract.envelopes import BasicRequest
from bridge.tooling.catalog_view import example_envelope, sample_for_pattern
from bridge.twilio.accounts import Accounts
from bridge.twilio.calls import CallBuilder
from bridge.twilio.catalog import Catalog
from tests.helpers import ACCOUNT, widgets_spec


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["catalog", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_search_finds_create_message_from_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "send", "message")
    assert code == 0
    first = out.splitlines()[0].split()
    assert first[:3] == ["api.v2010", "CreateMessage", "POST"]
    assert err.startswith(f"{len(out.splitlines())} of 1447 operations; 55 specs, 53 apis")
    code, out, _ = run(capsys, "send", "message", "--api", "assistants.v1")
    assert [line.split()[1] for line in out.splitlines()] == ["CreateMessage"]


def test_json_lists_every_operation_and_says_which_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 1447
    assert len({row["api"] for row in rows}) == 53
    refused = [row for row in rows if row["refused"]]
    assert len(refused) == 11
    assert {row["api"] for row in refused} == {"iam.organizations"}
    assert all("OAuth 2.0" in row["refused"] for row in refused)
    assert {row["source"] for row in rows} == {"built-in"}
    assert "1447 of 1447 operations; 55 specs, 53 apis with operations; refused: 11" in err
    assert "iam.organizations PatchOrganizationUser" in err


def test_describe_shows_everything_and_an_example_that_builds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "CreateMessage", "--api", "api.v2010", "--describe")
    assert code == 0
    assert out.startswith("CreateMessage (api.v2010): Send a message\n")
    assert "  POST https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/Messages.json\n" in out
    assert "  body.To  [body, string (phone-number), required]\n" in out
    assert "  body.MediaUrl  [body, array of string (uri), optional]\n" in out
    assert re.search(r"body\.AddressRetention .*\n      enum: retain, obfuscate\n", out)
    assert "      description: The recipient's phone number" in out
    example = json.loads(out.split("example envelope (required parameters only):\n", 1)[1])
    assert example == {
        "id": "my-request-1",
        "mode": "basic",
        "api": "api.v2010",
        "operation": "CreateMessage",
        "body": {"To": "+14155552671"},
    }


def test_describe_as_json_and_by_words(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "send", "message", "--describe", "--json")
    described = json.loads(out)
    assert code == 0 and (described["api"], described["operation"]) == (
        "api.v2010",
        "CreateMessage",
    )
    to = next(p for p in described["params"] if p["name"] == "To")
    assert (to["in"], to["where"], to["required"]) == ("body", "body", True)
    code, out, _ = run(capsys, "UpdateDocument", "--api", "sync.v1", "--describe", "--json")
    if_match = next(p for p in json.loads(out)["params"] if p["name"] == "If-Match")
    assert (if_match["in"], if_match["where"]) == ("params", "header")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("zzzqqq", "--describe"), 1, "unknown operation 'zzzqqq'"),
        (("CreateMesage", "--describe", "--api", "api.v2010"), 1, "did you mean: CreateMessage"),
        (("FetchSafelist", "--describe"), 1, "exists in several apis"),
        (("--describe",), 2, "--describe needs an operation"),
    ],
)
def test_describe_says_what_it_cannot_find(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], code: int, message: str
) -> None:
    found, _, err = run(capsys, *args)
    assert found == code and message in err


def test_a_spec_dir_is_listed_with_where_each_operation_comes_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "twilio_widgets_v1.json").write_text(json.dumps(widgets_spec()))
    code, out, err = run(capsys, "widget", "--spec-dir", str(tmp_path))
    assert code == 0
    assert {line.split()[1] for line in out.splitlines()[:3]} == {
        "CreateWidget",
        "FetchWidget",
        "ListWidget",
    }
    assert all(line.endswith("[twilio_widgets_v1.json]") for line in out.splitlines()[:3])
    assert "of 1450 operations; 56 specs" in err
    code, out, _ = run(capsys, "--json", "--spec-dir", str(tmp_path))
    sources = {row["operation"]: row["source"] for row in json.loads(out)}
    assert sources["CreateWidget"] == str(tmp_path / "twilio_widgets_v1.json")
    assert sources["ListCall"] == "built-in"


def test_a_broken_spec_dir_is_refused_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "twilio_widgets_v1.json").write_text("{")
    code, out, err = run(capsys, "--spec-dir", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith(f"twilio-bridge: {tmp_path / 'twilio_widgets_v1.json'}: not JSON")


def test_every_example_envelope_builds_a_call_without_warnings() -> None:
    catalog = Catalog.load()
    credential = Credential(account_sid=ACCOUNT, auth_token=SecretStr("token"))
    builder = CallBuilder(catalog, Accounts({"default": credential}), TwilioSettings())
    built = 0
    for op in catalog:
        if op.refused is not None:
            continue
        call = builder.build(BasicRequest.model_validate(example_envelope(op, "x")))
        assert (call.api, call.operation, call.warnings) == (op.api, op.operation, ())
        built += 1
    assert built == 1447 - 11


@pytest.mark.parametrize(
    "pattern", ["^AC[0-9a-fA-F]{32}$", "^[a-z]+(-[a-z]+)?$", r"^\+?\d{3,}$", "^(MG|PN).*$"]
)
def test_sample_for_pattern_matches_the_pattern(pattern: str) -> None:
    assert re.fullmatch(pattern, sample_for_pattern(pattern))
