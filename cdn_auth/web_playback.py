"""``POST|DELETE /v1/playback-session``: trade a bearer session for the browser's media cookie.

Both need ``Authorization: Bearer`` (never the cookie, which is scoped to
``/m/`` and honoured nowhere else), so a cross-site page can neither mint nor
clear one.  The token is set HttpOnly and is not returned in the body: page
scripts never hold it.
"""

from __future__ import annotations

from aiohttp import web

from service_kernel.openapi import Route
from service_kernel.web_errors import bearer_token

from . import api_schemas as api
from . import revocation
from .errors import PlaybackDisabled, SessionMissing
from .playback import COOKIE_NAME, COOKIE_PATH, PlaybackTokens
from .session import Session
from .web_state import STATE, EdgeState


def _tokens(state: EdgeState) -> PlaybackTokens:
    if state.playback is None:
        raise PlaybackDisabled()
    return state.playback


async def _bearer_session(request: web.Request) -> Session:
    token = bearer_token(request)
    if token is None:
        raise SessionMissing()
    return await request.app[STATE].authorizer.session(token)


def _secure(request: web.Request, state: EdgeState) -> bool:
    configured = state.settings.playback_cookie_secure
    return request.secure if configured is None else configured


async def create(request: web.Request) -> web.Response:
    state = request.app[STATE]
    tokens = _tokens(state)
    session = await _bearer_session(request)
    token, exp = tokens.mint(session)
    resp = web.json_response(
        {"user_id": session.sub, "expires_at": exp, "cookie_path": COOKIE_PATH},
        status=201,
        headers={"Cache-Control": "no-store"},
    )
    resp.set_cookie(
        COOKIE_NAME,
        token,
        path=COOKIE_PATH,
        max_age=max(1, exp - int(state.clock())),
        httponly=True,
        secure=_secure(request, state),
        samesite=state.settings.playback_cookie_samesite,
    )
    return resp


async def delete(request: web.Request) -> web.Response:
    """Clear the cookie and end it: the browser drops it, and every edge refuses it (and any
    copy of it, and any other cookie this device was issued until now) within a second.  The
    device asks for a new one when it signs in again."""
    state = request.app[STATE]
    _tokens(state)
    session = await _bearer_session(request)
    await state.revocations.publish(revocation.playback_ended(session.sub, session.dev))
    resp = web.json_response({"cleared": True}, headers={"Cache-Control": "no-store"})
    resp.del_cookie(
        COOKIE_NAME,
        path=COOKIE_PATH,
        secure=_secure(request, state),
        httponly=True,
        samesite=state.settings.playback_cookie_samesite,
    )
    return resp


ROUTES = (
    Route(
        "POST",
        "/v1/playback-session",
        create,
        "Browser playback: set the short-lived HttpOnly media cookie (Path=/m/) for this session",
        "edge",
        responses=(201, 401, 404),
        limit="playback_session",
        api=api.PLAYBACK_CREATE,
    ),
    Route(
        "DELETE",
        "/v1/playback-session",
        delete,
        "Browser playback: clear the media cookie and end it on every edge",
        "edge",
        responses=(200, 401, 404),
        limit="playback_sign_out",  # each one is a revocation event every edge reads
        api=api.PLAYBACK_DELETE,
    ),
)
