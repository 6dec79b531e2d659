"""Routes declared once, with their documentation, so ``/openapi.json`` cannot drift.

Each service lists its routes as :class:`Route` values; :func:`add_routes`
registers them with aiohttp and :func:`document` renders OpenAPI 3.1 from
the same list.  A test checks that every registered route is documented.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .rate_limit import RATE_LIMITER
from .web_errors import Handler

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content",
            304: "Not Modified", 400: "Malformed request", 401: "No or bad session",
            403: "Not allowed", 404: "Unknown", 408: "Body too slow", 409: "Conflict", 410: "Gone",
            413: "Too large", 416: "Range not satisfiable", 429: "Rate limited (Retry-After)",
            503: "Dependency down (Retry-After)", 101: "Switching Protocols", 302: "Found"}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}},
}


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


def document(title: str, version: str, routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag],
                              "operationId": f"{r.method.lower()}_{_slug(r.path)}"}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"{(\w+)(?::[^}]*)?}", r.path)]
        params += [{"name": n, "in": where, "required": False, "description": doc,
                    "schema": {"type": "string"}} for n, where, doc in r.params]
        if params:
            op["parameters"] = params
        if r.body:
            op["requestBody"] = {"description": r.body, "content": {
                "application/json": {"schema": {"type": "object"}}}}
        if r.limit:
            op["x-rate-limit"] = r.limit
        if r.auth != "none":
            op["security"] = [{"session": []}]
        op["responses"] = {
            str(s): ({"description": _REASONS.get(s, "")} if s < 400 else
                     {"description": _REASONS.get(s, ""), "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/Error"}}}})
            for s in sorted(set(r.responses) | ({400, 408} if r.body else set())
                            | ({429} if r.limit else set()))
        }
        paths.setdefault(re.sub(r"{(\w+):[^}]*}", r"{\1}", r.path), {})[r.method.lower()] = op
    paths["/openapi.json"] = {"get": {"summary": "This document", "tags": ["ops"],
                                      "operationId": "get_openapi",
                                      "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}, "securitySchemes": {
            "session": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r":[^}]*", "", path.lower())).strip("_")


def serve_document(app: web.Application, title: str, version: str, routes: Iterable[Route]) -> None:
    """Register ``routes`` and ``GET /openapi.json`` describing them."""
    add_routes(app, routes)
    doc = document(title, version, routes)

    async def openapi_json(_: web.Request) -> web.Response:
        return web.json_response(doc)

    app.router.add_get("/openapi.json", openapi_json, allow_head=False)
