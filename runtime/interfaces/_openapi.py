"""An OpenAPI 3.1 description of the HTTP API, generated from the registered actor classes.

One path per handler, whose request body is the handler's message type and
whose 200 reply is its return annotation, both as JSON Schema from msgspec
(the same library that decodes and validates the bodies, so the description
cannot drift from what the server accepts); plus the admin routes.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import msgspec

import storage

from .._registry import Registry

MAX_KEY = 256
"""The longest idempotency key accepted."""
MAX_POSITION = (1 << 63) - 1
"""Journal positions and sequence numbers are SQLite integers."""
MAX_PAGE = 10_000
"""The most entries one journal page returns."""

_REF = "#/components/schemas/{name}"

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
}
_ACCEPTED = {
    "type": "object",
    "properties": {
        "accepted": {"const": True},
        "address": {"type": "string"},
        "outcome": {"type": "string"},
        "reason": {"type": "string"},
        "replicated": {"type": "boolean"},
        "message": {"type": "string"},
    },
    "required": ["accepted", "address"],
}

_SEND_ERRORS = {
    "400": "malformed request (body not JSON, a bad parameter or header): nothing accepted",
    "404": "no such actor type or handler: nothing accepted",
    "409": "the handler ran and raised (a definite outcome)",
    "413": "the body is too large: nothing accepted",
    "415": "the body is not Content-Type: application/json: nothing accepted",
    "422": "the body does not match the message type: nothing accepted",
    "503": "refused (backpressure, journal failing, actor suspended, closing): nothing accepted; retry later",
    "504": "may or may not have been accepted: resend only with the same Idempotency-Key",
}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(codes: dict[str, str]) -> dict[str, Any]:
    return {
        code: {"description": text, "content": _json_content({"$ref": _REF.format(name="Error")})}
        for code, text in codes.items()
    }


def _segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def describe(registry: Registry, *, token: bool, host_checked: bool) -> dict[str, Any]:
    """The OpenAPI document for ``registry``'s actors (``token``: bearer auth is required)."""
    handlers = [(t, h) for t, desc in sorted(registry.actors.items()) for _, h in sorted(desc.handlers.items())]
    types: list[Any] = [storage.ActorInfo]
    for _, h in handlers:
        types += [h.message_type, h.reply_type]
    schemas: tuple[dict[str, Any], ...] | list[dict[str, Any]]
    try:
        schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    except TypeError:
        # A reply annotation msgspec cannot describe (it encoded the value, so it is
        # a type with a custom encoding): described as any JSON value, one by one.
        schemas, components = _one_by_one(types)
    components = {**components, "Error": _ERROR, "Accepted": _ACCEPTED}
    common = {"401": "no valid bearer token"} if token else {}
    if host_checked:
        common["421"] = "the Host header names a host this server does not serve"
    paths: dict[str, Any] = {}
    for i, (type_name, h) in enumerate(handlers):
        message, reply = schemas[1 + 2 * i], schemas[2 + 2 * i]
        paths[f"/actors/{_segment(type_name)}/{{key}}/{_segment(h.name)}"] = {
            "post": {
                "operationId": f"{type_name}.{h.name}",
                "summary": f"ask (or, with wait=false, tell) {type_name}.{h.name}",
                "parameters": [
                    _path("key", {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}),
                    _query("wait", {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}),
                    _query("durability", {"type": "string", "enum": ["fsync", "normal", "replicated"]}),
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
                    },
                ],
                "requestBody": {"required": True, "content": _json_content(message)},
                "responses": {
                    "200": {"description": "the handler's reply", "content": _json_content(reply)},
                    "202": {
                        "description": "durably accepted; no reply now (a tell, or an ask whose reply cannot be given)",
                        "content": _json_content({"$ref": _REF.format(name="Accepted")}),
                    },
                    **_errors({**_SEND_ERRORS, **common}),
                },
            }
        }
    actor_types = sorted(registry.actors)
    info_list = {"type": "array", "items": schemas[0]}
    paths.update(
        {
            "/actors": {
                "get": _get(
                    "every actor with its last position and status",
                    info_list,
                    common,
                    [_query("type", {"type": "string"})],
                )
            },
            "/actors/{type}/{key}": {
                "get": _get(
                    "an actor's state, rebuilt from the journal",
                    {"type": "object"},
                    {**common, "404": "no such actor type"},
                    [_path("type", {"type": "string", "enum": actor_types}), _path("key", {"type": "string"})],
                )
            },
            "/actors/{type}/{key}/journal": {
                "get": _get(
                    "a page of an actor's journal entries",
                    {"type": "array", "items": {"type": "object"}},
                    {**common, "400": "from or limit is not an integer in range"},
                    [
                        _path("type", {"type": "string"}),
                        _path("key", {"type": "string"}),
                        _query("from", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                    ],
                )
            },
            "/actors/{type}/{key}/journal/{seq}": {
                "get": {
                    "summary": "one journal entry's payload whole, as msgpack, streamed",
                    "parameters": [
                        _path("type", {"type": "string"}),
                        _path("key", {"type": "string"}),
                        _path("seq", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}),
                    ],
                    "responses": {
                        "200": {
                            "description": "the payload's msgpack bytes",
                            "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        **_errors({**common, "400": "seq is not an integer in range", "404": "no such entry"}),
                    },
                }
            },
            "/actors/{type}/{key}/stream": {
                "get": {
                    "summary": "an actor's stream (its streamed effects' starts, chunks and ends) as "
                    "server-sent events, each with its offset as id; resumes after Last-Event-ID",
                    "parameters": [
                        _path("type", {"type": "string", "enum": actor_types}),
                        _path("key", {"type": "string"}),
                        _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}),
                        _query("follow", {"type": "boolean"}),
                        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "events until the stream's present end (follow=false) or the server stops",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(
                            {**common, "400": "offset, Last-Event-ID or follow malformed", "404": "no such actor type"}
                        ),
                    },
                }
            },
            "/status": {"get": _get("the runtime, its journal and replication", {"type": "object"}, common)},
            "/health": {
                "get": {
                    **_get("200 while the runtime accepts messages", {"type": "object"}, _without(common, "401")),
                    "security": [],
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(common),
                    },
                }
            },
            "/openapi.json": {"get": _get("this description", {"type": "object"}, common)},
        }
    )
    # /health answers 503 while the journal fails.
    paths["/health"]["get"]["responses"]["503"] = {
        "description": "the runtime does not accept messages now",
        "content": _json_content({"type": "object"}),
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Stele", "version": "1", "description": "Durable actors over HTTP"},
        "paths": paths,
        "components": {"schemas": components},
    }
    if token:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _get(
    summary: str, schema: dict[str, Any], errors: dict[str, str], params: list[Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": _json_content(schema)}, **_errors(errors)},
    }
    if params:
        operation["parameters"] = params
    return operation


def _without(codes: dict[str, str], code: str) -> dict[str, str]:
    return {k: v for k, v in codes.items() if k != code}


def _one_by_one(types: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    schemas: list[dict[str, Any]] = []
    components: dict[str, Any] = {}
    for tp in types:
        try:
            (schema,), more = msgspec.json.schema_components([tp], ref_template=_REF)
        except TypeError:
            schema, more = {}, {}
        schemas.append(schema)
        components.update(more)
    return schemas, components
