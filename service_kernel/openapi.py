"""Routes declared once, with their contract, so ``/openapi.json`` cannot drift.

Each service lists its routes as :class:`Route` values; :func:`add_routes`
registers them with aiohttp and :func:`document` renders OpenAPI 3.1 from
the same list.  A route's :class:`Api` (kept in the service's ``api_schemas``
module) says what the handler accepts and answers: the JSON body with its
types, patterns and lengths, the path, query, header and cookie parameters,
the body of each success, and the links a client (or a fuzzer) follows from
one answer to the next call.  Every error answer is the shared envelope
``{"error": {"code", "message"}}``.  Limits that an operator may change come
from the service's settings when the app is built (a schema may be a function
of them), so the document states the limits this process enforces.  Tests
check that every registered route is documented, that the document is valid
OpenAPI, and fuzz both services against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

from .rate_limit import RATE_LIMITER
from .web_errors import Handler

Schema = dict[str, Any]
#: A schema, or one computed from the service's settings when the document is built.
SchemaSource = Schema | Callable[[Any], Schema]


def obj(
    props: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = True, **extra: Any
) -> Schema:
    """A JSON object schema; ``closed`` (the default) refuses unknown fields, as the
    handlers do (``additionalProperties: false``)."""
    out: Schema = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def ref(name: str) -> Schema:
    """A reference to a schema under ``components/schemas``."""
    return {"$ref": f"#/components/schemas/{name}"}


_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted (held for review)",
    204: "No Content",
    206: "Partial Content",
    302: "Found",
    304: "Not Modified",
    400: "Malformed request or invalid field",
    401: "No or bad session",
    403: "Not allowed",
    404: "Unknown",
    408: "Request body too slow",
    409: "Conflict",
    410: "Gone",
    413: "Too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    429: "Rate limited (Retry-After)",
    503: "Dependency down (Retry-After)",
}

ERROR_SCHEMA: Schema = {
    "type": "object",
    "required": ["error"],
    "description": "Every error answer: a stable machine-readable code and a message. Some "
    "codes carry more fields (device_mismatch: missing_devices, extra_devices).",
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                "message": {"type": "string"},
            },
        }
    },
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_WWW_AUTHENTICATE = {"description": "The auth scheme (Bearer)", "schema": {"type": "string"}}


class Param(NamedTuple):
    """One path, query, header or cookie parameter and the values the handler accepts."""

    name: str
    where: str  # "path", "query", "header" or "cookie"
    schema: SchemaSource
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """A success answer: its JSON body (None: no body, or ``media_type`` raw bytes),
    its headers and the links from it to the operations a client calls next."""

    schema: SchemaSource | None = None
    description: str = ""
    #: The answer's media type(s); a body of another type is described by ``schema`` too.
    media_type: str | tuple[str, ...] = "application/json"
    headers: Mapping[str, Schema] = field(default_factory=dict)
    links: Mapping[str, Schema] = field(default_factory=dict)


@dataclass(frozen=True)
class Api:
    """What a route's document says beyond its summary (see the module docstring)."""

    #: The JSON request body (``application/json``); None when the route takes none.
    body: SchemaSource | None = None
    body_required: bool = True
    #: Other request media types (``multipart/form-data`` uploads), by media type, and the
    #: encoding of their parts (``{"multipart/form-data": {"metadata": {...}}}``).
    content: Mapping[str, SchemaSource] = field(default_factory=dict)
    encoding: Mapping[str, Mapping[str, Schema]] = field(default_factory=dict)
    params: Sequence[Param] = ()
    #: Names of the route's own ``params`` to leave out (a cookie that is a security scheme).
    omit: frozenset[str] = frozenset()
    #: Each success status and its answer; statuses absent here are errors (the envelope).
    ok: Mapping[int, Answer] = field(default_factory=dict)
    #: Error statuses beyond the route's own list, and any error answer that is not the
    #: envelope (e.g. readiness's 503 carries its report).
    errors: Mapping[int, Answer | None] = field(default_factory=dict)
    description: str = ""
    #: Overrides the security the route's ``auth`` implies (e.g. the media cookie).
    security: Sequence[Mapping[str, Sequence[str]]] | None = None


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: str = "session"  # "session", "none" or "moderator"
    responses: Sequence[int] = (200,)
    body: str | None = None  # a short description of the request body, if any
    params: Sequence[tuple[str, str, str]] = field(default_factory=tuple)  # (name, in, doc)
    #: A rate limit name (``settings.rate_limits``) charged per user, or per client address
    #: on ``auth="none"`` routes, before the handler runs (429 + Retry-After beyond it).
    limit: str | None = None
    #: The contract in detail (the service's ``api_schemas`` module).
    api: Api | None = None
    #: Served only by a development feature (the dm's dev issuer): registered always (it
    #: answers 404 when the feature is off), documented only when it is on.
    dev_only: bool = False


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    for r in routes:
        handler = _limited(r) if r.limit else r.handler
        if r.method == "GET":
            app.router.add_get(r.path, handler, allow_head=False)
        else:
            app.router.add_route(r.method, r.path, handler)


def _limited(route: Route) -> Handler:
    """``route.handler``, charged to the caller's ``route.limit`` first (the app must hold a
    :data:`~service_kernel.rate_limit.RATE_LIMITER` that defines the name)."""
    name, handler, by_address = str(route.limit), route.handler, route.auth == "none"

    async def limited(request: web.Request) -> web.StreamResponse:
        await request.app[RATE_LIMITER].charge_request(name, request, by_address=by_address)
        return await handler(request)

    return limited


def operation_id(method: str, path: str) -> str:
    """The operation's id in the document (links name operations by it)."""
    return f"{method.lower()}_{_slug(path)}"


def statuses(r: Route) -> list[int]:
    """Every status the route can answer: its own list, its contract's extra errors, and
    what the shared plumbing adds (body reading: 400/408/413; a session: 401; a rate
    limit: 429; Redis behind a session or a limit: 503)."""
    api = r.api or Api()
    out = set(r.responses) | set(api.ok) | set(api.errors)
    if r.body or api.body is not None or api.content:
        out |= {400, 408, 413}
    if r.auth != "none":
        out |= {401, 503}
    if r.limit:
        out |= {429, 503}
    return sorted(out)


def _resolve(source: SchemaSource, settings: Any) -> Schema:
    """A schema function needs the settings; a document of the route list alone (no
    settings) leaves that schema open (``{}``) rather than guess the limits."""
    if callable(source):
        return source(settings) if settings is not None else {}
    return source


def document(
    title: str,
    version: str,
    routes: Iterable[Route],
    settings: Any = None,
    *,
    description: str = "",
    security_schemes: Mapping[str, Schema] | None = None,
    components: Mapping[str, Schema] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``; schema functions are called with
    ``settings``.  ``components`` adds named schemas (``#/components/schemas/<name>``)."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        api = r.api or Api()
        op: dict[str, Any] = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": operation_id(r.method, r.path),
        }
        if api.description:
            op["description"] = api.description
        params = _parameters(r, api, settings)
        if params:
            op["parameters"] = params
        body = _request_body(r, api, settings)
        if body:
            op["requestBody"] = body
        if r.limit:
            op["x-rate-limit"] = r.limit
        if api.security is not None:
            op["security"] = [dict(s) for s in api.security]
        elif r.auth != "none":
            op["security"] = [{"bearer": []}]
        else:
            op["security"] = []
        op["responses"] = {str(s): _response(s, api, settings) for s in statuses(r)}
        paths.setdefault(re.sub(r"{(\w+):[^}]*}", r"{\1}", r.path), {})[r.method.lower()] = op
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "tags": ["ops"],
            "operationId": "get_openapi",
            "security": [],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "required": ["openapi", "paths"]}
                        }
                    },
                }
            },
        }
    }
    schemes: dict[str, Schema] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A session JWT from the identity provider (or dm's dev issuer: "
            "POST /v1/users).",
        }
    }
    schemes.update(security_schemes or {})
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, **(components or {})},
            "securitySchemes": schemes,
        },
    }


def _parameters(r: Route, api: Api, settings: Any) -> list[dict[str, Any]]:
    given = {(p.name, p.where): p for p in api.params}
    out: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)(?::[^}]*)?}", r.path):
        p = given.pop((name, "path"), None)
        out.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _resolve(p.schema, settings) if p else {"type": "string"},
                **({"description": p.description} if p and p.description else {}),
            }
        )
    for name, where, doc in r.params:
        if name in api.omit:
            continue
        p = given.pop((name, where), None)
        if p is None:
            out.append(
                {
                    "name": name,
                    "in": where,
                    "required": False,
                    "description": doc,
                    "schema": {"type": "string"},
                }
            )
        else:
            out.append(_param(p, settings, doc))
    out += [_param(p, settings, "") for p in given.values()]
    return out


def _param(p: Param, settings: Any, doc: str) -> dict[str, Any]:
    return {
        "name": p.name,
        "in": p.where,
        "required": p.required,
        "description": p.description or doc,
        "schema": _resolve(p.schema, settings),
    }


def _request_body(r: Route, api: Api, settings: Any) -> dict[str, Any] | None:
    content: dict[str, Any] = {}
    if api.body is not None:
        content["application/json"] = {"schema": _resolve(api.body, settings)}
    for media_type, source in api.content.items():
        content[media_type] = {"schema": _resolve(source, settings)}
        if media_type in api.encoding:
            content[media_type]["encoding"] = dict(api.encoding[media_type])
    if not content and r.body:
        content["application/json"] = {"schema": {"type": "object"}}
    if not content:
        return None
    out: dict[str, Any] = {"required": api.body_required, "content": content}
    if r.body:
        out["description"] = r.body
    return out


def _response(status: int, api: Api, settings: Any) -> dict[str, Any]:
    answer = api.ok.get(status) or api.errors.get(status)
    if answer is None and status >= 400:
        answer = Answer({"$ref": "#/components/schemas/Error"})
    if answer is None:
        answer = Answer()
    out: dict[str, Any] = {"description": answer.description or _REASONS.get(status, "")}
    if answer.schema is not None:
        types = (answer.media_type,) if isinstance(answer.media_type, str) else answer.media_type
        out["content"] = {t: {"schema": _resolve(answer.schema, settings)} for t in types}
    headers = dict(answer.headers)
    if status in (429, 503):
        headers.setdefault("Retry-After", _RETRY_AFTER)
    if status == 401:
        headers.setdefault("WWW-Authenticate", _WWW_AUTHENTICATE)
    if headers:
        out["headers"] = headers
    if answer.links:
        out["links"] = dict(answer.links)
    return out


def _slug(path: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", re.sub(r":[^}]*", "", path.lower())).strip("_")
    return f"{slug}_index" if path.endswith("/") and len(path) > 1 else slug


def serve_document(
    app: web.Application,
    title: str,
    version: str,
    routes: Iterable[Route],
    settings: Any = None,
    **extra: Any,
) -> None:
    """Register ``routes`` and ``GET /openapi.json`` describing them (``extra``: see
    :func:`document`); ``dev_only`` routes are described only when ``settings.dev_issuer``
    is on: a production document lists no development route."""
    routes = tuple(routes)
    add_routes(app, routes)
    dev = bool(getattr(settings, "dev_issuer", False))
    doc = document(title, version, [r for r in routes if dev or not r.dev_only], settings, **extra)

    async def openapi_json(_: web.Request) -> web.Response:
        return web.json_response(doc)

    app.router.add_get("/openapi.json", openapi_json, allow_head=False)
