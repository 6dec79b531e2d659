"""The edge: ``GET|HEAD /m/{media_id}`` streams bytes; ``GET /auth`` answers nginx.

Both ask :class:`cdn_auth.authorizer.Authorizer` and so decide alike.  The
pointer comes as the ``pointer`` query parameter or the ``X-Pointer`` header.
The session is ``Authorization: Bearer`` or, for browsers, the media cookie
(:mod:`cdn_auth.playback`): read here and nowhere else, on GET/HEAD only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web

from service_kernel.errors import InputTooLarge, InvalidField, ServiceError
from service_kernel.openapi import Route
from service_kernel.web_errors import bearer_token, error_response

from . import api_schemas as api
from . import ranges
from .authorizer import Decision
from .byte_response import ByteRangeResponse, open_origin
from .errors import OriginUnavailable, RangeNotSatisfiable
from .front_feed import decision_deps, decision_max_age_s
from .playback import COOKIE_NAME
from .web_state import STATE, EdgeState

MAX_URI_CHARS = 2048
POINTER_PARAMS = (
    ("pointer", "query", "pointer token"),
    ("X-Pointer", "header", "pointer token"),
    ("grant", "query", "grant token (sealed mode)"),
    ("X-Grant", "header", "grant token (sealed mode)"),
    (
        COOKIE_NAME,
        "cookie",
        "browser media cookie (POST /v1/playback-session), instead of a bearer session",
    ),
)
#: Methods of the original request for which nginx's /auth may honour the media cookie.
_COOKIE_METHODS = frozenset({"GET", "HEAD"})


async def _decide(
    state: EdgeState,
    media_id: str,
    session: str | None,
    pointer: str | None,
    grant: str | None,
    playback: str | None,
) -> Decision:
    metrics = state.metrics
    try:
        decision = await state.authorizer.authorize(
            media_id, session, pointer, grant, playback_token=playback
        )
    except ServiceError as exc:
        if exc.status >= 500:
            metrics.error(exc.code)
        else:
            metrics.deny(exc.code)
        raise
    if decision.pointer:
        metrics.allow_pointer.inc()
    elif decision.grant:
        metrics.allow_grant.inc()
    else:
        metrics.allow_public.inc()
    return decision


def _token(request: web.Request, query: str, header: str) -> str | None:
    return request.query.get(query) or request.headers.get(header) or None


async def media(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    d = await _decide(
        state,
        request.match_info["media_id"],
        bearer_token(request),
        _token(request, "pointer", "X-Pointer"),
        _token(request, "grant", "X-Grant"),
        request.cookies.get(COOKIE_NAME) or None,
    )  # the route is GET|HEAD only
    m = d.media
    return serve_bytes(
        request,
        lambda: m.origin_file(state.origin),
        size=m.size,
        etag=m.etag,
        last_modified=m.last_modified,
        content_type=m.content_type,
        served=state.metrics.served.inc,
        still_allowed=lambda: state.authorizer.still_allowed(d),
        window=state.settings.stream_window_bytes,
        write_timeout_s=state.settings.write_timeout_s,
    )


def serve_bytes(
    request: web.Request,
    origin_file: Callable[[], Path],
    *,
    size: int,
    etag: str,
    last_modified: str,
    content_type: str,
    served: Callable[[int], object] = lambda n: None,
    still_allowed: Callable[[], bool] = lambda: True,
    window: int = 1024 * 1024,
    write_timeout_s: float = 30.0,
) -> web.StreamResponse:
    """The answer to an allowed ``GET|HEAD /m/{id}``: 304, 416, or the planned bytes of the
    representation (``size`` bytes with these validators) in the file ``origin_file()``
    names, asked only when bytes are to be sent (an unusable one is a 503).

    ``served`` is told how many body bytes a GET will stream.  The edge benchmark's
    unauthorized baseline serves through this too, so the two never drift apart.
    """
    plan = ranges.plan(request.headers, size=size, etag=etag, last_modified=last_modified)
    headers = {
        **plan.headers,
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Vary": "Authorization, Cookie",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if plan.status == 304:
        return web.Response(status=304, headers=headers)
    if plan.status == 416:
        resp = error_response(RangeNotSatisfiable(size))
        resp.headers.update(headers)
        return resp
    headers["Content-Type"] = content_type
    try:
        fobj = open_origin(origin_file(), size)
    except OSError as exc:
        raise OriginUnavailable(str(exc)) from exc
    served(plan.length if request.method == "GET" else 0)
    return ByteRangeResponse(
        fobj=fobj,
        offset=plan.start,
        count=plan.length,
        status=plan.status,
        headers=headers,
        still_allowed=still_allowed,
        window=window,
        write_timeout_s=write_timeout_s,
    )


async def auth(request: web.Request) -> web.StreamResponse:
    """nginx ``auth_request``: 204 allow, else the edge's status and error body.

    The decision headers tell nginx where the bytes are (``X-Origin-Path``)
    and the representation's validators, so nginx can serve the file itself;
    ``X-Auth-Deps``/``-Through``/``-Max-Age`` let its cache of this decision
    end when something it depends on is revoked (:mod:`cdn_auth.front_feed`).
    """
    state = request.app[STATE]
    uri = request.headers.get("X-Original-URI", "")
    if not uri:
        raise InvalidField("X-Original-URI is required")
    if len(uri) > MAX_URI_CHARS:
        raise InputTooLarge("X-Original-URI too long")
    try:  # the client's raw request line: an unbalanced "[" makes urlsplit raise
        parts = urlsplit(uri)
    except ValueError:
        raise InvalidField("X-Original-URI does not parse") from None
    path = unquote(parts.path)  # as aiohttp's router decodes /m/{media_id}
    prefix = "/m/"
    if not path.startswith(prefix):
        raise InvalidField("X-Original-URI is not a media path")
    try:
        query = parse_qs(parts.query, max_num_fields=16)
    except ValueError:
        raise InvalidField("too many query fields in X-Original-URI") from None
    pointer = (query.get("pointer") or [""])[0] or request.headers.get("X-Pointer")
    grant = (query.get("grant") or [""])[0] or request.headers.get("X-Grant")
    # nginx forwards the media cookie; it counts only for a GET/HEAD of the media itself.
    method = request.headers.get("X-Original-Method", "")
    playback = request.cookies.get(COOKIE_NAME) if method in _COOKIE_METHODS else None
    d = await _decide(
        state,
        path[len(prefix) :],
        bearer_token(request),
        pointer or None,
        grant or None,
        playback or None,
    )
    try:
        # The containment rule the byte path applies (Origin.path_of): a tampered record
        # must not name a file outside the origin root through nginx either.
        state.origin.path_of(d.media.origin)
    except OSError as exc:
        raise OriginUnavailable(str(exc)) from exc
    return web.Response(
        status=204,
        headers={
            "X-Origin-Path": d.media.origin,
            "X-Media-ETag": d.media.etag,
            "X-Media-Content-Type": d.media.content_type,
            "Cache-Control": "private",
            # For the front's decision cache (deploy/nginx/pointer_front.lua).
            "X-Auth-Deps": " ".join(decision_deps(d)),
            "X-Auth-Through": str(d.through_ms),
            "X-Auth-Max-Age": str(decision_max_age_s(d, state.clock())),
        },
    )


ROUTES = (
    Route(
        "GET",
        "/m/{media_id}",
        media,
        "Fetch media bytes (Range, ETag, If-Range)",
        "edge",
        responses=(200, 206, 304, 400, 401, 403, 404, 410, 416, 503),
        params=POINTER_PARAMS,
        api=api.FETCH,
    ),
    Route(
        "HEAD",
        "/m/{media_id}",
        media,
        "Media headers only",
        "edge",
        responses=(200, 206, 304, 400, 401, 403, 404, 410, 416, 503),
        params=POINTER_PARAMS,
        api=api.HEAD_FETCH,
    ),
    Route(
        "GET",
        "/auth",
        auth,
        "Decision for nginx auth_request (reads X-Original-URI)",
        "edge",
        responses=(204, 400, 401, 403, 404, 410, 503),
        params=(
            ("X-Original-URI", "header", "the original request URI"),
            (
                "X-Original-Method",
                "header",
                "the original method (the media cookie counts only for GET/HEAD)",
            ),
            (COOKIE_NAME, "cookie", "browser media cookie, forwarded by nginx"),
        ),
        api=api.AUTH,
    ),
)
