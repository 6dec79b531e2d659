"""CORS for web clients on another origin: credentials only for configured origins.

An exact-match allow-list (``EdgeSettings.cors_origins``): the request's
``Origin`` is echoed with ``Access-Control-Allow-Credentials: true`` only
when listed, never ``*`` (browsers refuse ``*`` with credentials anyway, and
a reflected arbitrary origin would let any site read a user's media).  The
middleware sits outside the error middleware, so refusals (401/403/410) carry
the headers too and the page can read *why* the edge said no.  Preflights are
answered here for every route, before routing; an unlisted origin's preflight
gets 403 with no CORS headers.

aiohttp-cors was considered: it configures CORS per registered route and
leaves responses produced by middlewares (our JSON errors) without headers,
which is the case that matters most for a player.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from service_kernel.web_errors import Handler, json_error

ALLOW_METHODS = "GET, HEAD, POST, DELETE"
ALLOW_HEADERS = (
    "Authorization, Content-Type, Range, If-Range, If-None-Match, X-Pointer, X-Grant, Idempotency-Key"
)
#: What a cross-origin page may read: a player needs the range headers, a client the errors.
EXPOSE_HEADERS = (
    "Content-Range, Accept-Ranges, Content-Length, Content-Type, ETag, Retry-After, Location"
)


def cors_middleware(origins: Iterable[str], *, max_age_s: int) -> Any:
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ok = origin is not None and origin in allowed
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not ok:
                return json_error(403, "cors_origin_denied", "this origin may not call the edge")
            assert origin is not None
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Credentials": "true",
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": str(max_age_s),
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if allowed:  # the answer depends on Origin whenever any origin is configured
            vary = response.headers.get("Vary")
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        if ok:
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response

    return middleware
