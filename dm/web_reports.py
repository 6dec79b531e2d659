"""``POST /v1/reports``: a member reports a message to the moderation queue.

Plain conversations: the server holds the message and files its own copy.
Sealed conversations: the reporter reveals the plaintext and the franking
key; the server checks its own countersignature (so the metadata is
genuine) and the commitment (so the content is what the sender sent).  A
verified report names the media id, so a moderator can take it down at
the edge.  A forged or altered report is refused (403 report_unverified).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from service_kernel.encoding import Base64Error, b64url_decode
from service_kernel.errors import InvalidField
from service_kernel.ids import check_id
from service_kernel.openapi import Route
from service_kernel.web_errors import read_json

from . import api_schemas_moderation as api
from . import envelope
from .errors import MessageNotFound, NotMember, ReportUnverified
from .web_messages import check_cursor
from .web_state import STATE, DmState

_FIELDS = {"conversation_id", "message_id", "reason", "sealed"}
_SEALED = {
    "client_message_id",
    "sender",
    "ts_ms",
    "commitment",
    "countersignature",
    "franking_key",
    "media_id",
    "grant",
    "text",
}


async def report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    doc = await read_json(request, allowed=_FIELDS)
    cid = check_id(doc.get("conversation_id"), "conversation_id")
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise InvalidField("reason must be a string of at most 2000 characters")
    conv = await state.store.conversation(cid)
    if me.sub not in conv.members:
        raise NotMember(cid)
    if conv.mode == "sealed":
        entry = _verified_sealed(state, cid, doc.get("sealed"))
    else:
        message_id = check_cursor(str(doc.get("message_id", "")))
        msg = await state.store.message(cid, message_id)
        if msg.get("held"):
            # Never delivered, so no member can have seen it: answered as if absent (its
            # existence, sender and media stay unknown).  The scanner's alert is its item.
            raise MessageNotFound(message_id)
        entry = {
            "message_id": message_id,
            "sender": msg.get("sender", ""),
            "text": msg.get("text", ""),
            "media_id": msg.get("media_id", ""),
            "evidence": "server_copy",
        }
    entry.update(
        {
            "reporter": me.sub,
            "conversation_id": cid,
            "kind": conv.mode,
            "reason": reason,
            "at": str(int(time.time())),
        }
    )
    report_id, repeat = await state.store.add_report(entry)
    # A repeat of this reporter's report of this message files nothing: 200, the first id.
    return web.json_response(
        {
            "report_id": report_id or None,
            "conversation_id": cid,
            "sender": entry["sender"],
            "media_id": entry["media_id"] or None,
            "verified": True,
            "evidence": entry["evidence"],
            "duplicate": repeat,
        },
        status=200 if repeat else 201,
    )


def _verified_sealed(state: DmState, cid: str, sealed: Any) -> dict[str, str]:
    if (
        not isinstance(sealed, dict)
        or set(sealed) - _SEALED
        or not {"client_message_id", "sender", "ts_ms", "commitment", "countersignature", "franking_key"}
        <= set(sealed)
    ):
        raise InvalidField(f"sealed must hold {sorted(_SEALED)}")
    cmid = check_id(sealed["client_message_id"], "client_message_id")
    sender, ts_ms = sealed["sender"], sealed["ts_ms"]
    if (
        not isinstance(sender, str)
        or not isinstance(ts_ms, int)
        or isinstance(ts_ms, bool)
        or not 0 <= ts_ms <= envelope.MAX_TS_MS
    ):
        raise InvalidField(f"sender must be a string and ts_ms an integer 0..{envelope.MAX_TS_MS}")
    try:
        commitment = b64url_decode(str(sealed["commitment"]))
        signature = b64url_decode(str(sealed["countersignature"]))
        fk = b64url_decode(str(sealed["franking_key"]))
        payload = envelope.Payload(sealed.get("media_id"), sealed.get("grant"), sealed.get("text"), fk)
        if not all(
            v is None or isinstance(v, str) for v in (payload.media_id, payload.grant, payload.text)
        ):
            raise InvalidField("media_id, grant and text are strings or null")
        envelope.check_countersignature(
            state.franking_key, signature, commitment, cid, sender, cmid, ts_ms
        )
        envelope.check_commitment(commitment, payload, cid, sender, cmid)
    except Base64Error:
        raise InvalidField("franking values must be base64url") from None
    except envelope.EnvelopeError as exc:
        raise ReportUnverified(str(exc)) from None
    return {
        "message_id": cmid,
        "sender": sender,
        "text": payload.text or "",
        "media_id": payload.media_id or "",
        "evidence": "franking_verified",
    }


ROUTES = (
    Route(
        "POST",
        "/v1/reports",
        report,
        "Report a message to moderators (sealed: with plaintext and franking key)",
        "reports",
        responses=(200, 201, 400, 401, 403, 404),
        body="conversation_id, message_id (plain) | sealed{...}, reason",
        limit="report",
        api=api.REPORT,
    ),
)
