"""``POST /v1/reports``: a member reports a message; it goes to the moderation queue."""

from __future__ import annotations

import time

from aiohttp import web

from cdn_auth.errors import InvalidField
from cdn_auth.ids import check_id
from cdn_auth.openapi import Route
from cdn_auth.web_errors import read_json

from .errors import NotMember
from .web_messages import check_cursor
from .web_state import STATE


async def report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    doc = await read_json(request, allowed={"conversation_id", "message_id", "reason"})
    cid = check_id(doc.get("conversation_id"), "conversation_id")
    message_id = check_cursor(str(doc.get("message_id", "")))
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise InvalidField("reason must be a string of at most 2000 characters")
    conv = await state.store.conversation(cid)
    if me.sub not in conv.members:
        raise NotMember(cid)
    msg = await state.store.message(cid, message_id)
    entry = {"reporter": me.sub, "conversation_id": cid, "message_id": message_id,
             "sender": msg.get("sender", ""), "kind": msg.get("kind", "plain"),
             "text": msg.get("text", ""), "media_id": msg.get("media_id", ""),
             "reason": reason, "verified": "server_copy", "at": str(int(time.time()))}
    report_id = await state.store.add_report(entry)
    return web.json_response({"report_id": report_id, "conversation_id": cid,
                              "message_id": message_id, "sender": entry["sender"],
                              "media_id": entry["media_id"] or None}, status=201)


ROUTES = (
    Route("POST", "/v1/reports", report, "Report a message to moderators", "reports",
          responses=(201, 400, 401, 403, 404), body="conversation_id, message_id, reason"),
)
