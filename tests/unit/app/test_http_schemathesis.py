"""Schemathesis against the HTTP app's own OpenAPI document (``/openapi.json``), in-process.

Every operation is called with requests generated from the document (valid and invalid ones),
and every answer is checked: no 5xx other than the documented 503s, a documented status, a
documented content type, headers and JSON bodies as documented; invalid requests refused, and
undocumented methods answered 405. One check is left out: ``positive_data_acceptance`` counts a
403 as acceptance but not a 415, and the document cannot say that Event Streams takes JSON only
(one ``{family}`` path for all families).

Unsigned, every webhook is refused with 403; so a second run signs each generated form webhook
with the official Twilio signer, after adding the fields its family needs, and it must then be
published (200) with a documented answer.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from twilio.request_validator import RequestValidator

from bridge.app.http import create_app
from bridge.config import WebhookSettings
from bridge.contract.events import FAMILIES
from bridge.inbound.webhooks.receiver import WebhookReceiver
from bridge.twilio.accounts import Accounts
from tests.helpers import ACCOUNT, AUTH_TOKEN, CREDENTIALS, RecordingDelivery

PUBLIC = "https://hooks.example.com"
FORM = "application/x-www-form-urlencoded"
EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "60"))


DELIVERY = RecordingDelivery()
SETTINGS = WebhookSettings(public_url=PUBLIC, max_body_bytes=64 * 1024)
RECEIVER = WebhookReceiver(SETTINGS, Accounts(CREDENTIALS), DELIVERY, max_record_bytes=1 << 20)
APP = create_app(RECEIVER, SETTINGS, lambda: {"started": True, "consumer_joined": True})
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
PROPERTY = settings(
    database=None,  # the suite leaves no files in the checkout
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@SCHEMA.parametrize()
@PROPERTY
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


def required_fields(family: str) -> dict[str, str]:
    sid_param, template = FAMILIES[family]
    fields = {"AccountSid": ACCOUNT, sid_param: "XX" + "0" * 32}
    if "{" in template:
        fields[template[template.index("{") + 1 : -1]] = "completed"
    return fields


@SCHEMA.include(method="POST").parametrize()
@PROPERTY
def test_signed_form_webhooks_are_published_as_documented(case: schemathesis.Case[Any]) -> None:
    family = case.path_parameters.get("family")
    body = case.body
    signable = (
        case.method == "POST"  # the coverage phase also tries undocumented methods
        and family in FAMILIES
        and case.media_type == FORM
        and "content-type" not in case.headers  # nor does it override the media type
        and isinstance(body, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in body.items())
    )
    if signable:
        assert isinstance(body, dict) and isinstance(family, str)
        case.body = {**body, **required_fields(family)}
        url = PUBLIC + case.formatted_path
        case.headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(
            url, case.body
        )
    before = len(DELIVERY.events)
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    published = len(DELIVERY.events) - before
    if signable:
        assert response.status_code == 200, response.text[:300]
        assert published == 1
    else:
        assert published == (1 if response.status_code == 200 else 0)
