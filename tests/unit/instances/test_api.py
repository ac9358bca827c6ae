"""The instances API (``bridge.instances.api``) over an in-memory store, through the whole app.

The store stands in for the instances topic (``bridge.instances.log``), whose Kafka side
is in ``tests/integration``; here it keeps instances in a dict and can be told to time out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, cast

import httpx
import orjson
import pytest
from starlette.routing import Route

from bridge.app.http import create_app
from bridge.config import WebhookSettings
from bridge.contract.events import CloudEvent
from bridge.inbound.delivery import EventDelivery
from bridge.inbound.webhooks.receiver import WebhookReceiver
from bridge.instances.api import instances_routes
from bridge.instances.changes import Change, Rules
from bridge.instances.model import MASK, Instance
from bridge.instances.records import Actor
from bridge.kafka.errors import BrokerError
from bridge.kafka.producer import Publisher
from bridge.twilio.accounts import Accounts
from tests.helpers import (
    API_KEY_SECRET,
    INSTANCE_ACCOUNT,
    INSTANCE_AUTH_TOKEN,
    instance_spec,
)

ADMIN_TOKEN = "admin-token-0123456789abcdef"
NEW_TOKEN = "tok-ROTATED-0b1c2d"
SECRETS = (INSTANCE_AUTH_TOKEN, NEW_TOKEN, API_KEY_SECRET)
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
RULES = Rules(
    is_static=lambda name: name == "default",
    default_refresh_interval_s=15,
    max_refresh_interval_s=2700,
)


class MemoryStore:
    """An ``InstanceStore`` in a dict; ``fail`` makes reads or writes time out (or ``failure``
    makes them raise that instead)."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.broken: dict[str, str] = {}
        self.writes: list[tuple[Change, Actor]] = []
        self.fail: str | None = None  # "latest" or "write"
        self.failure: Exception = TimeoutError()
        self._lock = asyncio.Lock()

    def get(self, name: str) -> Instance | None:
        return self.instances.get(name)

    def all(self) -> list[Instance]:
        return [self.instances[name] for name in sorted(self.instances)]

    def unreadable(self) -> dict[str, str]:
        return dict(self.broken)

    def lock(self) -> asyncio.Lock:
        return self._lock

    async def latest(self) -> None:
        await asyncio.sleep(0)  # as reading Kafka would, let other requests run
        if self.fail == "latest":
            raise self.failure

    async def write(self, change: Change, actor: Actor) -> None:
        assert self._lock.locked(), "changes are written under the store's lock"
        await asyncio.sleep(0)
        if self.fail == "write":
            raise self.failure
        self.writes.append((change, actor))
        if change.after is None:
            self.instances.pop(change.name, None)
        else:
            self.instances[change.name] = change.after


class NoDelivery(EventDelivery):
    def __init__(self) -> None:
        super().__init__(cast(Publisher, None), None, 1.0)

    async def deliver(self, events: Sequence[tuple[str, CloudEvent]]) -> bool:
        raise AssertionError("no webhook in these tests")


def app_client(store: MemoryStore | None, **kw: Any) -> httpx.AsyncClient:
    settings = WebhookSettings()
    receiver = WebhookReceiver(settings, Accounts(), NoDelivery(), max_record_bytes=10_000)
    routes: list[Route] = (
        instances_routes(store, ADMIN_TOKEN, RULES, **kw) if store is not None else []
    )
    app = create_app(receiver, settings, lambda: {"started": True}, routes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def http(store: MemoryStore) -> httpx.AsyncClient:
    return app_client(store)


def send(body: Any, **headers: str) -> dict[str, Any]:
    """Request arguments for a JSON body, with the admin token (and ``headers``, ``_`` = ``-``)."""
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return {
        "content": orjson.dumps(body),
        "headers": {**AUTH, "content-type": "application/json", **extra},
    }


def assert_no_secret(answer: httpx.Response) -> None:
    text = answer.text + " ".join(answer.headers.values())
    for secret in SECRETS:
        assert secret not in text


async def create(http: httpx.AsyncClient, name: str = "acme", **config: Any) -> httpx.Response:
    answer = await http.post("/instances", **send(instance_spec(name, **config)))
    assert answer.status_code == 201, answer.text
    return answer


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token-0123456789ab"},
        {"authorization": f"Basic {ADMIN_TOKEN}"},
        {"authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"authorization": "Bearer"},
    ],
)
async def test_requests_without_the_token_are_401(
    http: httpx.AsyncClient, store: MemoryStore, headers: dict[str, str]
) -> None:
    for method, path in [("GET", "/instances"), ("POST", "/instances"), ("DELETE", "/instances/a")]:
        answer = await http.request(method, path, headers=headers, content=b"{}")
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"]["kind"] == "auth"
    assert store.writes == []


async def test_the_scheme_is_case_insensitive(http: httpx.AsyncClient) -> None:
    answer = await http.get("/instances", headers={"authorization": f"bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200


# --- the whole life of an instance -----------------------------------------------------------


async def test_create_read_list_replace_patch_delete(
    http: httpx.AsyncClient, store: MemoryStore
) -> None:
    created = await create(http)
    assert created.headers["location"] == "/instances/acme"
    assert created.headers["etag"] == '"1"'
    body = created.json()
    assert body["configuration"]["auth_token"] == MASK
    assert (body["name"], body["revision"]) == ("acme", 1)

    read = await http.get("/instances/acme", headers=AUTH)
    assert (read.status_code, read.headers["etag"]) == (200, '"1"')
    assert read.json() == body

    listed = await http.get("/instances", headers=AUTH)
    assert listed.json() == {"instances": [body], "unreadable": {}}

    # What GET returned goes back with PUT: the mask keeps the token.
    document = {**read.json(), "tags": ["eu", "prod"]}
    replaced = await http.put("/instances/acme", **send(document, if_match='"1"'))
    assert replaced.status_code == 200, replaced.text
    assert replaced.headers["etag"] == '"2"' and "location" not in replaced.headers
    assert store.instances["acme"].configuration.auth_token is not None
    assert (
        store.instances["acme"].configuration.auth_token.get_secret_value() == INSTANCE_AUTH_TOKEN
    )

    patch = {"configuration": {"auth_token": NEW_TOKEN, "region": "ie1"}}
    patched = await http.patch(
        "/instances/acme",
        content=orjson.dumps(patch),
        headers={**AUTH, "content-type": "application/merge-patch+json", "if-match": '"2"'},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["configuration"] == {
        "account_sid": INSTANCE_ACCOUNT,
        "auth_token": MASK,
        "region": "ie1",
        "events": {
            "enabled": True,
            "mechanism": "webhook",
            "resources": ["messages"],
            "topics": {},
        },
    }
    assert patched.json()["tags"] == ["eu", "prod"]

    deleted = await http.delete("/instances/acme", headers={**AUTH, "if-match": '"3"'})
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert (await http.get("/instances/acme", headers=AUTH)).status_code == 404

    assert [c.action for c, _ in store.writes] == ["created", "updated", "updated", "deleted"]
    for answer in (created, read, listed, replaced, patched):
        assert_no_secret(answer)


async def test_put_creates_with_201_and_a_location(http: httpx.AsyncClient) -> None:
    answer = await http.put("/instances/globex", **send(instance_spec("globex")))
    assert answer.status_code == 201
    assert (answer.headers["location"], answer.headers["etag"]) == ("/instances/globex", '"1"')


async def test_the_mask_creates_nothing(http: httpx.AsyncClient, store: MemoryStore) -> None:
    for method, path in [("POST", "/instances"), ("PUT", "/instances/acme")]:
        answer = await http.request(method, path, **send(instance_spec(auth_token=MASK)))
        assert answer.status_code == 400
        assert answer.json()["error"]["invalid"] == ["configuration.auth_token"]
    assert store.writes == []


async def test_patch_with_the_mask_keeps_the_token_and_null_removes(
    http: httpx.AsyncClient, store: MemoryStore
) -> None:
    await create(http, region="ie1")
    patch = {"configuration": {"auth_token": MASK, "region": None}}
    answer = await http.patch("/instances/acme", **send(patch))
    assert answer.status_code == 200, answer.text
    assert "region" not in answer.json()["configuration"]
    stored = store.instances["acme"].configuration
    assert (
        stored.auth_token is not None
        and stored.auth_token.get_secret_value() == INSTANCE_AUTH_TOKEN
    )
    assert stored.region is None


async def test_the_actor_is_recorded_with_the_callers_details(
    store: MemoryStore,
) -> None:
    http = app_client(store, trust_proxy=True)
    await http.post(
        "/instances",
        **send(
            instance_spec(),
            x_on_behalf_of="alice@example.com",
            user_agent="ops-cli/2",
            x_forwarded_for="203.0.113.7, 10.0.0.1",
        ),
    )
    [(_, actor)] = store.writes
    assert (actor.principal, actor.address) == ("admin-token", "203.0.113.7")
    assert (actor.on_behalf_of, actor.user_agent) == ("alice@example.com", "ops-cli/2")


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(
    http: httpx.AsyncClient, store: MemoryStore
) -> None:
    await http.post("/instances", **send(instance_spec(), x_forwarded_for="203.0.113.7"))
    [(_, actor)] = store.writes
    assert actor.address != "203.0.113.7"


async def test_listing_filters_by_tag_and_names_unreadable_instances(
    http: httpx.AsyncClient, store: MemoryStore
) -> None:
    await create(http, "acme")
    await http.post("/instances", **send({**instance_spec("globex"), "tags": ["us"]}))
    store.broken["initech"] = "sealed under key 'abc', this replica has 'def'"
    answer = await http.get("/instances", params={"tag": "us"}, headers=AUTH)
    assert [i["name"] for i in answer.json()["instances"]] == ["globex"]
    assert answer.json()["unreadable"] == {"initech": store.broken["initech"]}
    unreadable = await http.get("/instances/initech", headers=AUTH)
    assert unreadable.status_code == 404 and "sealed under key" in unreadable.text


# --- refusals --------------------------------------------------------------------------------


async def test_create_of_a_taken_name_is_409(http: httpx.AsyncClient, store: MemoryStore) -> None:
    await create(http)
    again = await http.post("/instances", **send(instance_spec()))
    assert (again.status_code, again.json()["error"]["kind"]) == (409, "conflict")
    static = await http.post("/instances", **send(instance_spec("default")))
    assert static.status_code == 409
    assert len(store.writes) == 1


async def test_missing_instances_are_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/instances/nope", headers=AUTH)).status_code == 404
    assert (await http.delete("/instances/nope", headers=AUTH)).status_code == 404
    patch = await http.patch("/instances/nope", **send({"tags": []}))
    assert (patch.status_code, patch.json()["error"]["kind"]) == (404, "not_found")


async def test_a_stale_if_match_is_412(http: httpx.AsyncClient, store: MemoryStore) -> None:
    await create(http)
    answer = await http.put("/instances/acme", **send(instance_spec(), if_match='"7"'))
    assert (answer.status_code, answer.json()["error"]["kind"]) == (412, "precondition_failed")
    deleted = await http.delete("/instances/acme", headers={**AUTH, "if-match": '"7"'})
    assert deleted.status_code == 412
    assert len(store.writes) == 1


async def test_a_body_that_is_not_json_is_415(http: httpx.AsyncClient) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        answer = await http.post(
            "/instances",
            content=orjson.dumps(instance_spec()),
            headers={**AUTH, "content-type": content_type},
        )
        assert answer.status_code == 415


async def test_json_with_parameters_is_json(http: httpx.AsyncClient) -> None:
    headers = {**AUTH, "content-type": "Application/JSON; charset=utf-8"}
    answer = await http.post("/instances", content=orjson.dumps(instance_spec()), headers=headers)
    assert answer.status_code == 201


async def test_invalid_json_is_400(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/instances", content=b'{"name": ', headers={**AUTH, "content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["kind"] == "validation"


async def test_an_oversize_body_is_413(http: httpx.AsyncClient, store: MemoryStore) -> None:
    document = {**instance_spec(), "tags": ["x" * 60_000, "y" * 10_000]}
    answer = await http.post("/instances", **send(document))
    assert answer.status_code == 413
    assert store.writes == []


async def test_a_validation_error_names_every_problem_and_no_value(
    http: httpx.AsyncClient, store: MemoryStore
) -> None:
    document = {
        "name": "acme",
        "configuration": {
            "account_sid": "nope",
            "region": "Europe",
            "password": INSTANCE_AUTH_TOKEN,
            "events": {"mechanism": "pull"},
        },
        "tags": [""],
    }
    answer = await http.post("/instances", **send(document))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["kind"] == "validation"
    assert error["missing"] == ["configuration.auth_token"]
    assert sorted(error["invalid"]) == [
        "configuration.account_sid",
        "configuration.events.mechanism",
        "configuration.password",
        "configuration.region",
        "tags",
    ]
    assert {p["field"] for p in error["problems"]} == {*error["missing"], *error["invalid"]}
    assert all(p["problem"] for p in error["problems"])
    assert_no_secret(answer)
    assert "Europe" not in answer.text and "pull" not in answer.text
    assert store.writes == []


@pytest.mark.parametrize(
    "failure",
    [TimeoutError(), BrokerError("publish", "KafkaTimeoutError", retriable=True)],
    ids=["timeout", "broker"],
)
@pytest.mark.parametrize("fail", ["latest", "write"])
async def test_kafka_not_answering_in_time_is_503(
    http: httpx.AsyncClient, store: MemoryStore, fail: str, failure: Exception
) -> None:
    store.fail, store.failure = fail, failure
    answer = await http.post("/instances", **send(instance_spec()))
    assert (answer.status_code, answer.json()["error"]["kind"]) == (503, "unavailable")
    assert "read the instance before retrying" in answer.json()["error"]["message"]
    assert not store.lock().locked()
    if fail == "latest":
        assert (await http.get("/instances", headers=AUTH)).status_code == 503


async def test_changes_are_made_one_at_a_time(http: httpx.AsyncClient, store: MemoryStore) -> None:
    answers = await asyncio.gather(
        *(http.post("/instances", **send(instance_spec())) for _ in range(5))
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409]
    assert len(store.writes) == 1


# --- the OpenAPI document --------------------------------------------------------------------


async def test_openapi_has_the_instances_api_only_when_it_is_served(
    http: httpx.AsyncClient,
) -> None:
    served = (await http.get("/openapi.json")).json()
    assert {"/instances", "/instances/{name}"} <= set(served["paths"])
    assert served["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "InstanceSpec" in served["components"]["schemas"]
    plain = (await app_client(None).get("/openapi.json")).json()
    assert not any(path.startswith("/instances") for path in plain["paths"])
    assert "securitySchemes" not in plain.get("components", {})
    # Without the routes, there is nothing to call.
    assert (await app_client(None).get("/instances", headers=AUTH)).status_code == 404


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        if template.startswith("/instances") and re.match(pattern, path):
            return cast(dict[str, Any], item[method.lower()])
    raise AssertionError(f"{method} {path} is not documented")


async def test_every_status_returned_is_documented(store: MemoryStore) -> None:
    http = app_client(store)
    document = (await http.get("/openapi.json")).json()
    json_type = {"content-type": "application/json"}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/instances", {"headers": {}}),
        ("POST", "/instances", send(instance_spec())),
        ("POST", "/instances", send(instance_spec())),
        ("POST", "/instances", send(instance_spec("default"))),
        ("POST", "/instances", send({"name": "x"})),
        ("POST", "/instances", {"content": b"{", "headers": AUTH | json_type}),
        ("POST", "/instances", {"content": b"{}", "headers": AUTH}),
        ("POST", "/instances", send({"tags": ["x" * 70_000]})),
        ("GET", "/instances", {"headers": AUTH}),
        ("GET", "/instances/acme", {"headers": AUTH}),
        ("GET", "/instances/nope", {"headers": AUTH}),
        ("PUT", "/instances/acme", send(instance_spec())),
        ("PUT", "/instances/new", send(instance_spec("new"))),
        ("PUT", "/instances/acme", {"content": b"[", "headers": AUTH | json_type}),
        ("PUT", "/instances/acme", send({"tags": ["x" * 70_000]})),
        ("PUT", "/instances/acme", {"content": b"{}", "headers": AUTH | {"if-match": '"9"'}}),
        ("PUT", "/instances/acme", send(instance_spec(), if_match='"9"')),
        ("PATCH", "/instances/acme", send({"tags": []})),
        ("PATCH", "/instances/nope", send({"tags": []})),
        ("PATCH", "/instances/acme", send({"tags": ["x" * 70_000]})),
        ("PATCH", "/instances/acme", {"content": b"{}", "headers": AUTH}),
        ("PATCH", "/instances/acme", send({"configuration": {"region": "X"}})),
        ("DELETE", "/instances/acme", {"headers": AUTH | {"if-match": '"9"'}}),
        ("DELETE", "/instances/acme", {"headers": AUTH}),
        ("DELETE", "/instances/acme", {"headers": AUTH}),
    ]
    seen = set()
    for method, path, kw in calls:
        answer = await http.request(method, path, **kw)
        responses = _operation(document, method, path)["responses"]
        assert str(answer.status_code) in responses, (method, path, answer.status_code)
        seen.add(answer.status_code)
    store.fail = "write"
    answer = await http.post("/instances", **send(instance_spec("late")))
    assert str(answer.status_code) in _operation(document, "POST", "/instances")["responses"]
    seen.add(answer.status_code)
    assert seen == {200, 201, 204, 400, 401, 404, 409, 412, 413, 415, 503}
