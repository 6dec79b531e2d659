"""Messages: send (idempotent), read (cursor pages, a pointer per reader), unsend."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from aiohttp import web

from cdn_auth import revocation, rights
from cdn_auth.session import Session
from service_kernel.errors import InvalidField
from service_kernel.ids import check_id
from service_kernel.openapi import Route
from service_kernel.web_errors import parse_json, read_body, require_json

from . import api_schemas_messages as api
from .delivery import render
from .errors import BadCursor, MessageNotFound, MessageUnsent, NotMember, SealedNeedsEnvelopes, TooLarge
from .sealed_send import SEALED_FIELDS, sealed_fields
from .store import Conversation, SendResult
from .web_state import STATE, DmState

_CURSOR_RE = re.compile(r"([0-9]{1,15})-([0-9]{1,10})", re.ASCII)
_PLAIN_FIELDS = {"text", "media_id"}


def check_cursor(value: str) -> str:
    """A message id or stream cursor in its one canonical spelling.

    Redis reads ``017-0`` as ``17-0``, so a padded id would reach the same message under
    another string: an unsend would then publish its revocation under the padded id (that
    no pointer carries) and the pointer would keep working.  Ids are ASCII digits only and
    re-rendered from their numbers, so every path sees one string per message.
    """
    m = _CURSOR_RE.fullmatch(value)
    if m is None:
        raise BadCursor(value[:40])
    return f"{int(m.group(1))}-{int(m.group(2))}"


async def member_conversation(state: DmState, request: web.Request) -> tuple[Session, Conversation]:
    me = await state.session(request)
    conv = await state.conversation(check_id(request.match_info["cid"], "cid"))
    if me.sub not in conv.members:
        raise NotMember(conv.id)
    return me, conv


async def send(request: web.Request) -> web.Response:
    started = time.perf_counter()
    state = request.app[STATE]
    me, conv = await member_conversation(state, request)
    require_json(request)
    raw = await read_body(request, state.settings.max_body_bytes)
    idem = request.headers.get("Idempotency-Key")
    if idem is not None:
        check_id(idem, "Idempotency-Key")
    if conv.mode == "sealed":
        doc = parse_json(raw)
        if _PLAIN_FIELDS & set(doc):
            raise SealedNeedsEnvelopes()
        fields = await sealed_fields(state, me, conv, parse_json(raw, SEALED_FIELDS))
        idem = idem or fields["client_message_id"]  # a sealed send is retry-safe by itself
    else:
        fields = await _plain_fields(state, me, conv, parse_json(raw, _PLAIN_FIELDS))
    verdict = await state.scan_send(me, conv, fields)  # safety (docs/safety.md): may hold
    result = await state.store.append(
        conv.id, me.sub, fields, idempotency_key=idem, request_hash=hashlib.sha256(raw).hexdigest()[:32]
    )
    if result.replayed:
        if await state.store.is_unsent(conv.id, result.message_id):
            raise MessageUnsent(result.message_id)
        fields = await state.store.message(conv.id, result.message_id)  # what was stored
    if not result.announced and not fields.get("held"):
        # A first attempt that stored the message but failed before announcing it (e.g. a
        # 503 from Redis) is completed by its idempotent retry, never skipped for good; one
        # that did announce is not announced twice (the publish's marker, DmStore.announce).
        # A held message is announced by nobody until a moderator releases it.
        await _announce(state, conv.id, result, fields, idem)
    # On a replay too: a first attempt that stored the message but failed to queue its
    # alert is completed here (a held message must never be left with no review item).
    await state.after_send(conv, result.message_id, fields, verdict, replayed=result.replayed)
    state.metrics.sends.labels(conv.mode, str(result.replayed).lower()).inc()
    state.metrics.send_seconds.observe(time.perf_counter() - started)
    # The sender's copy carries no pointer (minting one costs a signature per send and the
    # sender rarely plays it back); readers get theirs on read and on push.
    body = render(None, conv.id, result.message_id, fields, me.sub, me.dev)
    if fields.get("held"):
        body["held"] = True
    return web.json_response(
        body,
        status=200 if result.replayed else 202 if verdict.held else 201,
        headers={"Idempotent-Replayed": "true"} if result.replayed else None,
    )


async def _plain_fields(
    state: DmState, me: Session, conv: Conversation, doc: dict[str, Any]
) -> dict[str, str]:
    text, media_id = doc.get("text"), doc.get("media_id")
    if text is None and media_id is None:
        raise InvalidField("a message needs text, media_id or both")
    if text is not None and not isinstance(text, str):
        raise InvalidField("text must be a string")
    if text is not None and len(text.encode()) > state.settings.max_text_bytes:
        raise TooLarge(f"text over {state.settings.max_text_bytes} bytes")
    await state.check_not_blocked(me, conv)
    media = None
    if media_id is not None:
        media = await state.media(check_id(media_id, "media_id"))
        rights.check_audience(media, me)  # the sender must be allowed to view it too
        received = (
            not media.is_public
            and media.owner != me.sub
            and media.allow_reshare
            and await state.store.holds_media(me.sub, media.id)
        )
        rights.may_share(media, me.sub, received_from_owner_chain=received)
    for check in state.safety:
        await check.check(me.sub, media, text or "")
    fields = {"sender": me.sub, "kind": "plain"}
    if text:
        fields["text"] = text
    if media is not None:
        fields["media_id"] = media.id
    return fields


async def _announce(
    state: DmState, cid: str, result: SendResult, fields: dict[str, str], idempotency_key: str | None
) -> None:
    """Notify the members the message was stored for; record who received private media."""
    recipients = result.members
    event = state.notify.event("message", cid, recipients, {"message_id": result.message_id, **fields})
    await state.store.announce(
        state.notify,
        event,
        cid=cid,
        message_id=result.message_id,
        received_by=[u for u in recipients if u != fields.get("sender")],
        media_id=fields.get("media_id"),
        idempotency_key=idempotency_key,
    )


async def read(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me, conv = await member_conversation(state, request)
    after = request.query.get("after")
    if after is not None:
        after = check_cursor(after)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise BadCursor("limit must be an integer") from None
    if not 1 <= limit <= state.settings.page_limit_max:
        raise BadCursor(f"limit must be 1..{state.settings.page_limit_max}")
    entries, next_cursor, more = await _visible_page(state, conv.id, after, limit)
    blocked = await state.blocks_of(me.sub)
    messages = [
        render(state.minter, conv.id, mid, f, me.sub, me.dev)
        for mid, f in entries
        if f.get("sender") not in blocked
    ]
    return web.json_response({"messages": messages, "next_cursor": next_cursor, "more": more})


#: How many stored entries one read may pass over before it stops (see ``_visible_page``).
READ_SCAN_MAX = 10_000
_HELD_BATCH = 100  # entries per read past a held message


async def _visible_page(
    state: DmState, cid: str, after: str | None, limit: int
) -> tuple[list[tuple[str, dict[str, str]]], str | None, bool]:
    """Up to ``limit`` entries after ``after`` that members may know of, the cursor after
    them, and whether more may follow.

    Held messages are passed over as if absent, and the page is filled past them, so it
    ends on an entry members see: the cursor never names a held message, yet paging
    advances past any run of them.  A run at the stream's end leaves the cursor on the
    last visible entry (the next poll passes over it again).  Only a run longer than
    ``READ_SCAN_MAX`` entries, not at the end, cannot be passed without naming an id in
    it: the page then ends on the last entry scanned, so reading never stalls
    (docs/safety.md, section 3)."""
    out: list[tuple[str, dict[str, str]]] = []
    start, scanned, size = after, 0, limit  # one batch of ``limit`` when nothing is held
    while True:
        batch = await state.store.page(cid, start, size)
        scanned += len(batch)
        for mid, f in batch:
            if not f.get("held"):
                out.append((mid, f))
                if len(out) == limit:
                    return out, mid, True
        if len(batch) < size:  # the stream's end
            return out, out[-1][0] if out else after, False
        start, size = batch[-1][0], max(limit, _HELD_BATCH)
        if scanned >= READ_SCAN_MAX:
            return out, start, True


async def unsend(request: web.Request) -> web.Response:
    """Only the sender may unsend; the edge refuses the message's pointers (410) within a second."""
    state = request.app[STATE]
    me, conv = await member_conversation(state, request)
    message_id = check_cursor(request.match_info["message_id"])
    if await _own_held(state, conv.id, message_id, me.sub):
        # A held message was never announced, so its unsend is announced to nobody: marked
        # as done before the unsend, so no retry publishes it either.  The review item
        # keeps the server's copy (``ReviewQueue.add_alert``): the evidence stays.
        await state.store.mark_unsend_announced(conv.id, message_id)
        # Nor is a revocation published: no member ever held a pointer to it, and the
        # pointers minted for moderators reviewing it keep working (the media is evidence).
        await state.store.unsend(conv.id, message_id, me.sub)
        return web.json_response({"conversation_id": conv.id, "message_id": message_id, "unsent": True})
    gone = await state.store.unsend(conv.id, message_id, me.sub)
    if not gone.announced:
        # Published until recorded as done, so a retry after a failure here still reaches
        # the edges, while a repeat of a finished unsend adds nothing to any stream.
        await state.revocations.publish(revocation.unsent(conv.id, message_id))
        if gone.grant_id:
            await state.revocations.publish(revocation.grant_revoked(gone.grant_id))
        await state.notify.publish(
            state.notify.event("unsent", conv.id, conv.members, {"message_id": message_id})
        )
        await state.store.mark_unsend_announced(conv.id, message_id)
    return web.json_response({"conversation_id": conv.id, "message_id": message_id, "unsent": True})


async def _own_held(state: DmState, cid: str, message_id: str, uid: str) -> bool:
    """Whether the message is stored, held, and sent by ``uid`` (only its sender unsends)."""
    try:
        fields = await state.store.message(cid, message_id)
    except MessageNotFound:
        return False
    return bool(fields.get("held")) and fields.get("sender") == uid


ROUTES = (
    Route(
        "POST",
        "/v1/conversations/{cid}/messages",
        send,
        "Send a message (honours Idempotency-Key)",
        "messages",
        responses=(200, 201, 202, 400, 401, 403, 404, 409, 410, 413, 429, 503),
        body="text and/or media_id (plain); envelopes (sealed)",
        params=(("Idempotency-Key", "header", "retry-safe key, [A-Za-z0-9_-]{1,64}"),),
        limit="send",
        api=api.SEND,
    ),
    Route(
        "GET",
        "/v1/conversations/{cid}/messages",
        read,
        "Read a page of messages",
        "messages",
        responses=(200, 400, 401, 403, 404, 503),
        params=(("after", "query", "cursor: the last message id seen"), ("limit", "query", "page size")),
        limit="read",
        api=api.READ,
    ),
    Route(
        "DELETE",
        "/v1/conversations/{cid}/messages/{message_id}",
        unsend,
        "Unsend a message",
        "messages",
        responses=(200, 401, 403, 404, 503),
        limit="unsend",
        api=api.UNSEND,
    ),
)
