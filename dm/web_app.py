"""The web client: static files under ``/app/`` (no build step) and the config they read.

Files are read once at start-up from ``dm/webapp/`` and served from memory
by name from a fixed list (no path from the request ever reaches the file
system).  Every page answer carries a strict Content-Security-Policy (scripts
and styles only from this origin, media and API calls only to this origin
and the edge) and ``Referrer-Policy: no-referrer``, so neither the page's
URL nor anything else leaks to the edge in ``Referer``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from service_kernel.openapi import Route

from . import api_schemas as api
from .errors import NotFound, WebClientDisabled
from .web_state import STATE

WEBAPP_DIR = Path(__file__).resolve().parent / "webapp"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_BODIES = {name: (WEBAPP_DIR / name).read_bytes() for name in FILES}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _headers(request: web.Request, content_type: str) -> dict[str, str]:
    edge = _origin(request.app[STATE].settings.edge_base_url)
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"media-src {edge}; connect-src 'self' {edge}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Type": content_type,
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }


def _check_enabled(request: web.Request) -> None:
    if not request.app[STATE].settings.web_client:
        raise WebClientDisabled()


async def index(request: web.Request) -> web.Response:
    _check_enabled(request)
    return web.Response(body=_BODIES["index.html"], headers=_headers(request, FILES["index.html"]))


async def asset(request: web.Request) -> web.Response:
    _check_enabled(request)
    name = request.match_info["name"]
    if name not in FILES or name == "index.html":
        raise NotFound(name[:64])
    return web.Response(body=_BODIES[name], headers=_headers(request, FILES[name]))


async def config(request: web.Request) -> web.Response:
    """What the page needs to know: where the edge is and whether the dev issuer signs in."""
    _check_enabled(request)
    state = request.app[STATE]
    return web.json_response(
        {"edge_url": state.settings.edge_base_url.rstrip("/"), "dev_issuer": state.issuer is not None},
        headers={"Cache-Control": "no-cache"},
    )


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/app/")


ROUTES = (
    Route(
        "GET",
        "/app",
        redirect,
        "The web client (redirects to /app/)",
        "web",
        auth="none",
        responses=(302,),
        api=api.APP_REDIRECT,
    ),
    Route(
        "GET",
        "/app/",
        index,
        "The web client's page",
        "web",
        auth="none",
        responses=(200, 404),
        api=api.APP_INDEX,
    ),
    Route(
        "GET",
        "/app/config.json",
        config,
        "The web client's configuration",
        "web",
        auth="none",
        responses=(200, 404),
        api=api.APP_CONFIG,
    ),
    Route(
        "GET",
        "/app/{name}",
        asset,
        "The web client's script and style",
        "web",
        auth="none",
        responses=(200, 404),
        api=api.APP_ASSET,
    ),
)
