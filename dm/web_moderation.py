"""Moderation, audit and lawful-access routes (roles from the identity provider's ``roles``).

``moderator``: the review queue, opening an item (content in context, as
the mode allows), opening a message under a justification, actions.
``auditor``: the audit log (a session holding ``moderator`` cannot read it,
whatever else it holds).  ``legal``: filing a
legal request (a reference, one conversation, a time scope) and its export.
Every view and action is written to the audit log before content is returned.
"""

from __future__ import annotations

from aiohttp import web

from service_kernel.errors import InvalidField
from service_kernel.ids import check_id
from service_kernel.openapi import Route
from service_kernel.web_errors import read_json

from . import api_schemas_moderation as api
from . import moderation
from .errors import BadCursor, RoleConflict
from .moderation import require_role
from .web_messages import check_cursor
from .web_state import STATE, DmState


def _int_query(request: web.Request, name: str, default: int, hi: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        raise InvalidField(f"{name} must be an integer") from None
    if not 0 <= value <= hi:
        raise InvalidField(f"{name} must be 0..{hi}")
    return value


def _context_n(state: DmState, request: web.Request) -> int:
    return _int_query(
        request, "context", state.settings.moderation_context, state.settings.moderation_context_max
    )


async def queue(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    require_role(me, "moderator")
    status = request.query.get("status", "open")
    if status not in ("open", "closed", "all"):
        raise InvalidField("status must be open, closed or all")
    limit = _int_query(request, "limit", 50, 500)
    cursor = request.query.get("cursor")
    page = await state.queue.page(status=status, limit=limit, cursor=cursor)
    await state.audit.record(
        actor=me.sub,
        roles=me.roles,
        action="list_queue",
        justification="",
        detail={"status": status, "items": len(page.items), "cursor": cursor},
    )
    return web.json_response(
        {
            "items": [it.summary() for it in page.items],
            "next_cursor": page.next_cursor,
            "more": page.more,
        }
    )


async def open_item(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    require_role(me, "moderator")
    item = await state.queue.get(request.match_info["item_id"])
    return web.json_response(await moderation.open_item(state, me, item, _context_n(state, request)))


async def act(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    require_role(me, "moderator")
    doc = await read_json(request, allowed={"action", "reason"})
    action, reason = doc.get("action"), doc.get("reason", "")
    if not isinstance(action, str) or not isinstance(reason, str) or len(reason) > 1000:
        raise InvalidField("action is a string; reason at most 1000 characters")
    item = await state.queue.get(request.match_info["item_id"])
    return web.json_response(await moderation.act(state, me, item, action, reason))


async def open_message(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    require_role(me, "moderator")
    cid = check_id(request.match_info["cid"], "cid")
    mid = check_cursor(request.match_info["message_id"])
    justification = request.query.get("justification", "")
    if len(justification) > 64:
        raise InvalidField("justification is a review item or legal request id")
    return web.json_response(
        await moderation.open_message(state, me, cid, mid, justification, _context_n(state, request))
    )


async def audit_log(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    require_role(me, "auditor")
    if "moderator" in me.roles:  # separation of duties: the watched never read the watch
        raise RoleConflict("moderator")
    after = request.query.get("after")
    if after is not None:
        try:
            check_cursor(after)
        except BadCursor:
            raise InvalidField("after is an audit entry id") from None
    limit = _int_query(request, "limit", 100, 1000)
    return web.json_response({"entries": await state.audit.read(after, max(limit, 1))})


async def file_legal_request(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    doc = await read_json(request, allowed={"reference", "conversation_id", "from_ms", "to_ms"})
    return web.json_response(await moderation.file_legal_request(state, me, doc), status=201)


async def legal_export(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    rid = check_id(request.match_info["request_id"], "request_id")
    return web.json_response(await moderation.legal_export(state, me, rid))


ROUTES = (
    Route(
        "GET",
        "/v1/moderation/queue",
        queue,
        "Review queue: reports, alerts, media holds (metadata only; moderator)",
        "moderation",
        auth="moderator",
        responses=(200, 400, 401, 403),
        params=(
            ("status", "query", "open | closed | all"),
            ("limit", "query", "0..500"),
            ("cursor", "query", "next_cursor of the previous page"),
        ),
        limit="moderation",
        api=api.QUEUE,
    ),
    Route(
        "GET",
        "/v1/moderation/items/{item_id}",
        open_item,
        "Open a review item: the "
        "message in context (plain) or what the reporter unlocked (sealed); audited",
        "moderation",
        auth="moderator",
        responses=(200, 400, 401, 403, 404),
        params=(("context", "query", "messages either side (plain)"),),
        limit="moderation",
        api=api.OPEN_ITEM,
    ),
    Route(
        "POST",
        "/v1/moderation/items/{item_id}/actions",
        act,
        "Act on an item: dismiss, "
        "remove_message, take_down_media, bank_media, suspend_user, release; audited",
        "moderation",
        auth="moderator",
        responses=(200, 400, 401, 403, 404, 409),
        body="action, reason",
        limit="moderation",
        api=api.ACT,
    ),
    Route(
        "GET",
        "/v1/moderation/conversations/{cid}/messages/{message_id}",
        open_message,
        "Open a plain message under a justification (review item or legal request id); "
        "refused without one; audited",
        "moderation",
        auth="moderator",
        responses=(200, 400, 401, 403, 404, 409),
        params=(
            ("justification", "query", "review item or legal request id"),
            ("context", "query", "messages either side"),
        ),
        limit="moderation",
        api=api.OPEN_MESSAGE,
    ),
    Route(
        "GET",
        "/v1/audit",
        audit_log,
        "The audit log (auditor role; refused to any session that also holds moderator)",
        "moderation",
        responses=(200, 400, 401, 403),
        params=(("after", "query", "last entry id seen"), ("limit", "query", "1..1000")),
        limit="audit",
        api=api.AUDIT,
    ),
    Route(
        "POST",
        "/v1/legal/requests",
        file_legal_request,
        "File a legal request: reference, conversation, time scope (legal role); audited",
        "legal",
        responses=(201, 400, 401, 403, 404),
        body="reference, conversation_id, from_ms, to_ms",
        limit="legal",
        api=api.LEGAL_REQUEST,
    ),
    Route(
        "GET",
        "/v1/legal/requests/{request_id}/export",
        legal_export,
        "Export for a legal "
        "request: plain messages in scope, or sealed metadata and a statement that content "
        "is unavailable (legal role); audited",
        "legal",
        responses=(200, 401, 403, 404),
        limit="legal",
        api=api.LEGAL_EXPORT,
    ),
)
