"""The instances API: ``/instances`` routes, bearer-token protected, off unless enabled.

Handlers only translate HTTP: the decision is ``bridge.instances.changes``' and the storage
the instances topic's. Each change reads the topic to its end first (another replica may have
written since), and answers only once the change was read back, so the answer is what every
replica will see. Bodies are never logged; secrets leave masked.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.http.body import BodyTooLarge, read_body
from bridge.instances import changes
from bridge.instances.changes import Change, Refusal, Rules
from bridge.instances.model import Instance, InstanceSpec, Problem, masked
from bridge.instances.records import Actor
from bridge.kafka.errors import BrokerError
from bridge.observability.metrics import ADMIN_REQUESTS

__all__ = ["InstanceStore", "instances_routes", "instances_openapi"]

log = logging.getLogger(__name__)

_MAX_BODY = 65_536
_JSON_TYPES = ("application/json", "application/merge-patch+json")
Handler = Callable[[Request], Awaitable[Response]]
_Change = Callable[[str, Any, Instance | None, Rules, str | None], Change | Refusal]


class InstanceStore(Protocol):
    """Where instances live (the instances topic, through ``InstanceLog``)."""

    def get(self, name: str) -> Instance | None: ...
    def all(self) -> list[Instance]: ...
    def unreadable(self) -> dict[str, str]: ...
    def lock(self) -> asyncio.Lock: ...
    async def latest(self) -> None: ...
    async def write(self, change: Change, actor: Actor) -> None: ...


def instances_routes(
    store: InstanceStore, token: str, rules: Rules, *, trust_proxy: bool = False
) -> list[Route]:
    """The ``/instances`` routes over ``store``, for requests bearing ``token``."""
    api = _InstancesApi(store, rules, trust_proxy)
    guard = _Guard(token.encode())
    return [
        Route("/instances", guard(api.listing), methods=["GET"]),
        Route("/instances", guard(api.create), methods=["POST"]),
        Route("/instances/{name}", guard(api.read), methods=["GET"]),
        Route("/instances/{name}", guard(api.put), methods=["PUT"]),
        Route("/instances/{name}", guard(api.patch), methods=["PATCH"]),
        Route("/instances/{name}", guard(api.delete), methods=["DELETE"]),
    ]


class _Guard:
    """Bearer token check (constant time), Kafka trouble as 503, and the request metric."""

    def __init__(self, expected: bytes) -> None:
        self._expected = expected

    def __call__(self, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            response = await self._answer(request, handler)
            ADMIN_REQUESTS.labels(request.method, str(response.status_code)).inc()
            return response

        return run

    async def _answer(self, request: Request, handler: Handler) -> Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._expected
        ):
            response = _error(401, "auth", "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="instances"'
            return response
        try:
            return await handler(request)
        except (TimeoutError, BrokerError) as exc:
            log.warning("instances: Kafka did not answer in time (%s)", type(exc).__name__)
            return _error(
                503,
                "unavailable",
                "Kafka did not acknowledge in time; the change may or may not be applied: "
                "read the instance before retrying",
            )


class _InstancesApi:
    """One handler per route; decisions are ``bridge.instances.changes``'."""

    def __init__(self, store: InstanceStore, rules: Rules, trust_proxy: bool) -> None:
        self._store = store
        self._rules = rules
        self._trust_proxy = trust_proxy

    async def listing(self, request: Request) -> Response:
        await self._store.latest()
        tag = request.query_params.get("tag")
        found = [i for i in self._store.all() if tag is None or tag in i.tags]
        return JSONResponse(
            {"instances": [masked(i) for i in found], "unreadable": self._store.unreadable()}
        )

    async def read(self, request: Request) -> Response:
        await self._store.latest()
        name = request.path_params["name"]
        instance = self._store.get(name)
        if instance is not None:
            return _instance(instance)
        why = self._store.unreadable().get(name)
        if why is not None:
            return _error(404, "not_found", f"instance '{name}' cannot be read here: {why}")
        return _error(404, "not_found", f"no instance '{name}'")

    async def create(self, request: Request) -> Response:
        document = await _json(request)
        if isinstance(document, Response):
            return document
        name = document.get("name") if isinstance(document, dict) else None
        return await self._apply(
            request,
            str(name) if isinstance(name, str) else None,
            lambda current: changes.create(document, current, self._rules),
        )

    async def put(self, request: Request) -> Response:
        return await self._change(request, changes.replace)

    async def patch(self, request: Request) -> Response:
        return await self._change(request, changes.patch)

    async def _change(self, request: Request, how: _Change) -> Response:
        """PUT or PATCH: the path's instance changed by the body, as ``how`` decides."""
        name, if_match = request.path_params["name"], request.headers.get("if-match")
        document = await _json(request)
        if isinstance(document, Response):
            return document
        return await self._apply(
            request, name, lambda current: how(name, document, current, self._rules, if_match)
        )

    async def delete(self, request: Request) -> Response:
        name, if_match = request.path_params["name"], request.headers.get("if-match")
        return await self._apply(
            request, name, lambda current: changes.delete(name, current, if_match)
        )

    async def _apply(
        self,
        request: Request,
        name: str | None,
        decide: Callable[[Instance | None], Change | Refusal],
    ) -> Response:
        """Decide on the latest state and write, one change at a time on this replica."""
        async with self._store.lock():
            await self._store.latest()
            decision = decide(self._store.get(name) if name is not None else None)
            if isinstance(decision, Refusal):
                return _error(decision.status, decision.kind, decision.message, decision.problems)
            await self._store.write(decision, _actor(request, self._trust_proxy))
        if decision.after is None:
            return Response(status_code=204)
        response = _instance(self._store.get(decision.name) or decision.after)
        if decision.action == "created":
            response.status_code = 201
            response.headers["Location"] = f"/instances/{decision.name}"
        return response


async def _json(request: Request) -> Any:
    """The JSON body, or the error response saying why there is none."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        return _error(415, "validation", "the body must be JSON (application/json)")
    try:
        body = await read_body(request, _MAX_BODY)
    except BodyTooLarge:
        return _error(413, "validation", f"the body is over {_MAX_BODY} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _error(400, "validation", "the body is not valid JSON")


def _actor(request: Request, trust_proxy: bool) -> Actor:
    address = request.client.host if request.client is not None else None
    forwarded = request.headers.get("x-forwarded-for")
    if trust_proxy and forwarded:
        address = forwarded.split(",")[0].strip()
    return Actor(
        principal="admin-token",
        address=address,
        on_behalf_of=_short(request.headers.get("x-on-behalf-of")),
        user_agent=_short(request.headers.get("user-agent")),
    )


def _short(value: str | None) -> str | None:
    return value[:200] if value else None


def _instance(instance: Instance) -> Response:
    response = JSONResponse(masked(instance))
    response.headers["ETag"] = f'"{instance.revision}"'
    return response


def _error(status: int, kind: str, message: str, problems: list[Problem] | None = None) -> Response:
    problems = problems or []
    error = {
        "kind": kind,
        "message": message,
        "missing": [p.field for p in problems if p.missing],
        "invalid": [p.field for p in problems if not p.missing],
        "problems": [{"field": p.field, "problem": p.message} for p in problems],
    }
    return JSONResponse({"error": error}, status)


def instances_openapi() -> tuple[dict[str, Any], dict[str, Any]]:
    """The instances API's OpenAPI 3.1 paths and components."""
    ref = "#/components/schemas/{model}"
    spec = InstanceSpec.model_json_schema(ref_template=ref)
    stored = Instance.model_json_schema(ref_template=ref, mode="serialization")
    schemas: dict[str, Any] = {**spec.pop("$defs", {}), **stored.pop("$defs", {})}
    schemas |= {"InstanceSpec": spec, "Instance": stored, "Error": _ERROR_SCHEMA}

    def body(name: str) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": {"$ref": ref.format(model=name)}}}}

    def answer(description: str, name: str = "Error") -> dict[str, Any]:
        return {"description": description, **body(name)}

    errors = {
        "401": answer("No or wrong bearer token."),
        "503": answer("Kafka did not acknowledge in time; read before retrying."),
    }
    changes_errors = {
        **errors,
        "400": answer("Invalid configuration: every missing and invalid entry is named."),
        "409": answer("The name is taken (by an instance, or a credential from settings)."),
        "412": answer("If-Match names another revision."),
        "413": answer(f"The body is over {_MAX_BODY} bytes."),
        "415": answer("The body is not JSON."),
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    if_match = {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The ETag (revision) last read: refuses a change over someone else's.",
    }
    one = answer("The instance, secrets masked as ********; ETag = revision.", "Instance")
    listing = {
        "description": "Every instance (masked), and those this replica cannot open.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    paths = {
        "/instances": {
            "get": {
                "summary": "List instances",
                "security": security,
                "parameters": [{"name": "tag", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": listing, **errors},
            },
            "post": {
                "summary": "Create an instance",
                "security": security,
                "requestBody": {"required": True, **body("InstanceSpec")},
                "responses": {"201": one, **changes_errors},
            },
        },
        "/instances/{name}": {
            "parameters": [name],
            "get": {
                "summary": "Read an instance",
                "security": security,
                "responses": {"200": one, "404": answer("No such instance."), **errors},
            },
            "put": {
                "summary": "Replace (or create) an instance; '********' keeps a stored secret",
                "security": security,
                "parameters": [if_match],
                "requestBody": {"required": True, **body("InstanceSpec")},
                "responses": {"200": one, "201": one, **changes_errors},
            },
            "patch": {
                "summary": "Change an instance with a JSON Merge Patch (RFC 7396)",
                "security": security,
                "parameters": [if_match],
                "requestBody": {
                    "required": True,
                    "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
                },
                "responses": {"200": one, "404": answer("No such instance."), **changes_errors},
            },
            "delete": {
                "summary": "Delete an instance: its poller stops, later envelopes naming it fail",
                "security": security,
                "parameters": [if_match],
                "responses": {
                    "204": {"description": "Deleted."},
                    "404": answer("No such instance."),
                    "412": changes_errors["412"],
                    **errors,
                },
            },
        },
    }
    components = {
        "schemas": schemas,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    }
    return paths, components


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "kind": {"type": "string"},
                "message": {"type": "string"},
                "missing": {"type": "array", "items": {"type": "string"}},
                "invalid": {"type": "array", "items": {"type": "string"}},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "problem": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["kind", "message"],
        }
    },
    "required": ["error"],
}
