"""Hash banks over HTTP (moderators): list them, and add hashes to the run-time bank.

``POST /v1/banks/{bank}/signals`` appends signals (``[{"signal_type":
"pdq" | "video_md5" | "video_sha256" | ..., "signal": hex}]``) and takes
down every registered item that matches them, at every edge, through the
revocation stream.
"""

from __future__ import annotations

from aiohttp import web

from service_kernel.openapi import Route
from service_kernel.web_errors import bearer_token, read_json

from . import api_schemas as api
from .errors import NotModerator, SessionMissing
from .matching import bank_and_take_down, parse_request_signals
from .session import Session
from .web_state import STATE


async def _moderator(request: web.Request) -> Session:
    token = bearer_token(request)
    if token is None:
        raise SessionMissing()
    session = await request.app[STATE].authorizer.session(token)
    if not session.is_moderator:
        raise NotModerator()
    return session


async def list_banks(request: web.Request) -> web.Response:
    await _moderator(request)
    state = request.app[STATE]
    await state.banks.sync()
    return web.json_response({"banks": state.banks.summary()})


async def add_signals(request: web.Request) -> web.Response:
    session = await _moderator(request)
    state = request.app[STATE]
    doc = await read_json(request, max_bytes=2 * 1024 * 1024, allowed={"signals"})
    signals = parse_request_signals(doc.get("signals"))
    taken = await bank_and_take_down(
        state.banks,
        state.hash_index,
        state.registry,
        state.revocations,
        request.match_info["bank"],
        signals,
        by=session.sub,
    )
    return web.json_response(
        {"bank": request.match_info["bank"], "added": len(signals), "taken_down": taken}
    )


ROUTES = (
    Route(
        "GET",
        "/v1/banks",
        list_banks,
        "Hash banks and their sizes (moderator)",
        "banks",
        auth="moderator",
        responses=(200, 401, 403, 429, 503),
        limit="media_lookup",
        api=api.LIST_BANKS,
    ),
    Route(
        "POST",
        "/v1/banks/{bank}/signals",
        add_signals,
        "Add hashes to a bank; take down every registered match at every edge (moderator)",
        "banks",
        auth="moderator",
        responses=(200, 400, 401, 403, 429, 503),
        body="signals: [{signal_type, signal}]",
        limit="banks",
        api=api.ADD_SIGNALS,
    ),
)
