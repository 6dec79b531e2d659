"""What a moderator may see and do, per mode, and the audit record of each step.

Every function here takes the moderator's verified session and the id that
justifies the access (a review item, or a legal request), checks that the
id covers what is asked, writes the audit entry, and only then returns
content or acts: an action is recorded (``<action>``) before it takes
effect, so a failed audit write stops it, and its outcome follows
(``<action>:done`` with what it did, or ``<action>:failed``); an action the item
does not allow is refused with one entry (``<action>:refused``).  A justification
opens only its ``Scope``: an open review item, the reported message and the
``moderation_context_max`` messages either side; a legal request, its time scope.
What each mode yields:

* plain: the message and up to N messages either side (the platform holds
  them all), media playable through a pointer minted for the moderator
  that expires in a minute;
* sealed: only what the reporter unlocked (the franked plaintext and its
  media); the server has no key to the rest, and says so;
* media holds: the CDN's record and bank match; the bytes stay unserved.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

from cdn_auth import revocation
from cdn_auth.errors import MediaNotFound
from cdn_auth.matching import bank_and_take_down
from cdn_auth.session import Session
from cdn_auth.suspension import SuspendedUsers
from service_kernel.errors import InvalidField
from service_kernel.ids import new_id
from service_kernel.redis_client import field_map, stream_entries
from service_kernel.stream_tail import decode_entry

from . import redis_keys as k
from .errors import (
    ActionNotApplicable,
    BadCursor,
    ItemClosed,
    JustificationRequired,
    LegalRequestNotFound,
    MessageNotFound,
    NotFound,
    RoleRequired,
)
from .review import Item, canonical_item_id
from .web_messages import _announce, check_cursor  # _announce: one path for sends, releases
from .web_state import DmState

ACTIONS = ("dismiss", "remove_message", "take_down_media", "bank_media", "suspend_user", "release")


def require_role(me: Session, role: str) -> None:
    if role not in me.roles:
        raise RoleRequired(role)


def _view(state: DmState, me: Session, cid: str, mid: str, f: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": mid,
        "sender": f.get("sender", ""),
        "sent_at_ms": int(mid.split("-")[0]),
        "kind": f.get("kind", "plain"),
    }
    if out["kind"] == "sealed":
        out["content"] = "end-to-end encrypted: the platform holds no key"
        return out
    out["text"] = f.get("text") or None
    out["held"] = bool(f.get("held"))
    media_id = f.get("media_id")
    out["media"] = state.mod_minter.media_for(media_id, me.sub, cid, mid) if media_id else None
    return out


def _entries(raw: object) -> list[tuple[str, dict[str, str]]]:
    out = []
    for entry_id, fields in stream_entries(raw):
        eid, f = decode_entry(entry_id, fields)
        out.append((eid, {str(a): str(b) for a, b in json.loads(f.get("m", "{}")).items()}))
    return out


_MAX_SEQ = 2**64 - 1  # a stream id's parts are unsigned 64-bit integers
_FIRST, _LAST = (0, 0), (_MAX_SEQ, _MAX_SEQ)


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _render(sid: tuple[int, int]) -> str:
    return f"{sid[0]}-{sid[1]}"


@dataclass(frozen=True, slots=True)
class Scope:
    """The stream ids (inclusive) of one conversation that a justification opens."""

    lo: tuple[int, int] = _FIRST
    hi: tuple[int, int] = _LAST

    @classmethod
    def of_times(cls, from_ms: int, to_ms: int) -> Scope:
        """Every message sent from ``from_ms`` to ``to_ms``, clamped to valid stream ids."""
        lo = (min(max(from_ms, 0), _MAX_SEQ), 0)
        hi = (min(max(to_ms, 0), _MAX_SEQ), _MAX_SEQ)
        return cls(lo, hi)

    def covers(self, message_id: str) -> bool:
        return self.lo <= _sid(message_id) <= self.hi

    def view(self) -> dict[str, str]:
        return {"from": _render(self.lo), "to": _render(self.hi)}


async def _context(
    state: DmState, me: Session, cid: str, mid: str, n: int, scope: Scope | None = None
) -> list[dict[str, Any]]:
    """The message and up to ``n`` messages before and after it, oldest first, none
    outside ``scope``."""
    key = k.conv_messages(cid)
    lo, hi = (_render(scope.lo), _render(scope.hi)) if scope else ("-", "+")
    before: list[tuple[str, dict[str, str]]] = []
    if n and _sid(mid) > _FIRST:  # nothing precedes 0-0 (and Redis refuses "(0-0")
        before = _entries(await state.redis.xrevrange(key, max=f"({mid}", min=lo, count=n))
    rest = _entries(await state.redis.xrange(key, min=mid, max=hi, count=n + 1))
    return [_view(state, me, cid, i, f) for i, f in [*reversed(before), *rest]]


async def open_item(state: DmState, me: Session, item: Item, n: int) -> dict[str, Any]:
    require_role(me, "moderator")
    f = item.fields
    cid, mid, media_id = f.get("conversation_id", ""), f.get("message_id", ""), f.get("media_id", "")
    out: dict[str, Any] = {"item": item.summary()}
    shown = 0
    if item.source == "media_hold":
        try:
            out["media"] = (await state.registry.get(media_id)).public_view()
        except MediaNotFound:
            out["media"] = None
        out["note"] = "held at upload by a hash bank; the edge serves no bytes until released"
    elif f.get("kind") == "sealed":
        out["message"] = {
            "client_message_id": mid,
            "sender": f.get("sender", ""),
            "text": f.get("text") or None,
            "evidence": f.get("evidence", ""),
            "media": state.mod_minter.media_for(media_id, me.sub, cid, mid) if media_id else None,
        }
        out["context"] = []
        out["note"] = (
            "sealed conversation: only the message the reporter unlocked (franking "
            "verified); the platform cannot decrypt anything else"
        )
        shown = 1
    else:
        out["context"] = await _context(state, me, cid, mid, n)
        out["message_id"] = mid
        out["server_copy"] = (
            {"text": f.get("text") or None, "media_id": media_id or None}
            if f.get("evidence") == "server_copy"
            else None
        )
        shown = len(out["context"])
    await state.audit.record(
        actor=me.sub,
        roles=me.roles,
        action="open_item",
        justification=item.id,
        conversation_id=cid,
        message_id=mid,
        media_id=media_id,
        detail={"context_n": n, "messages_shown": shown, "source": item.source},
    )
    return out


async def _scope(state: DmState, justification: str, cid: str) -> Scope | None:
    """What of conversation ``cid`` the justification opens, or None if nothing.

    A review item: only while it is open, and only the reported message and the
    ``moderation_context_max`` messages either side of it (what opening the item shows at
    most), so a dismissed report, or one about an old message, is no key to the rest of
    the conversation.  A legal request: its time scope, and nothing outside it (context
    included)."""
    if justification.startswith("lr_"):
        req = await state.redis.hgetall(k.legal_request(justification))
        if not req or req.get("conversation_id") != cid:
            return None
        return Scope.of_times(int(req["from_ms"]), int(req["to_ms"]))
    item = await state.queue.get(justification)
    if not item.open or item.fields.get("conversation_id") != cid:
        return None
    if item.fields.get("kind") == "sealed":
        return Scope()  # nothing in it can be opened: the caller says so (409)
    reported = check_cursor(item.fields.get("message_id", ""))
    key, n = k.conv_messages(cid), state.settings.moderation_context_max
    if not n or _sid(reported) == _FIRST:  # no stream entry is 0-0 (nor precedes it)
        return Scope(_sid(reported), _sid(reported))
    before = stream_entries(await state.redis.xrevrange(key, max=f"({reported}", count=n))
    after = stream_entries(await state.redis.xrange(key, min=f"({reported}", count=n))
    # Fewer than n on a side: the window is open there (up to the n-th message to come).
    lo = _sid(decode_entry(before[-1][0], {})[0]) if len(before) == n else _FIRST
    hi = _sid(decode_entry(after[-1][0], {})[0]) if len(after) == n else _LAST
    return Scope(lo, hi)


def canonical_justification(justification: str) -> str | None:
    """A review item id in its one spelling, a legal request id, or None."""
    if justification.startswith("lr_"):
        return justification
    return canonical_item_id(justification)


async def open_message(
    state: DmState, me: Session, cid: str, mid: str, justification: str, n: int
) -> dict[str, Any]:
    """Open one message (and context) of a plain conversation under a justification."""
    require_role(me, "moderator")
    if not justification:
        await _refused(state, me, cid, mid, "no justification")
        raise JustificationRequired("no justification given")
    given = canonical_justification(justification)
    try:
        scope = await _scope(state, given, cid) if given else None
    except (NotFound, BadCursor, ValueError):
        scope = None
    if scope is None or not scope.covers(mid):
        await _refused(state, me, cid, mid, f"{justification[:80]} does not cover it")
        raise JustificationRequired("the justification does not cover this message")
    assert given is not None
    conv = await state.store.conversation(cid)
    if conv.mode == "sealed":
        raise ActionNotApplicable("sealed conversation: the platform cannot open its messages")
    context = await _context(state, me, cid, mid, n, scope)
    if not any(m["id"] == mid for m in context):
        raise MessageNotFound(mid)
    await state.audit.record(
        actor=me.sub,
        roles=me.roles,
        action="open_message",
        justification=given,
        conversation_id=cid,
        message_id=mid,
        detail={"context_n": n, "messages_shown": len(context), "scope": scope.view()},
    )
    return {"conversation_id": cid, "message_id": mid, "context": context}


async def _refused(state: DmState, me: Session, cid: str, mid: str, why: str) -> None:
    await state.audit.record(
        actor=me.sub,
        roles=me.roles,
        action="open_refused",
        justification="",
        conversation_id=cid,
        message_id=mid,
        detail={"why": why},
    )


def _refusal(item: Item, action: str) -> ActionNotApplicable | ItemClosed | None:
    """Why ``action`` cannot apply to ``item`` at all (known from the item alone), or None."""
    f = item.fields
    if action == "release" and not item.open:
        # Several actions may follow one another on an item (take down, then suspend), but
        # a release comes first or not at all: never after another decision on it.
        return ItemClosed(item.id)
    if action == "remove_message" and (item.source == "media_hold" or f.get("kind") == "sealed"):
        return ActionNotApplicable("only a plain message can be removed by the platform")
    if action in ("take_down_media", "bank_media") and not f.get("media_id"):
        return ActionNotApplicable("the item names no media")
    target = f.get("owner" if item.source == "media_hold" else "sender", "")
    if action == "suspend_user" and not target:
        return ActionNotApplicable("the item names no user")
    if action == "release" and item.source != "media_hold" and not f.get("held"):
        return ActionNotApplicable("the message was not held")
    return None


async def act(state: DmState, me: Session, item: Item, action: str, reason: str) -> dict[str, Any]:
    require_role(me, "moderator")
    if action not in ACTIONS:
        raise InvalidField(f"action must be one of {ACTIONS}")
    f = item.fields
    cid, mid, media_id = (f.get("conversation_id", ""), f.get("message_id", ""), f.get("media_id", ""))
    target = f.get("owner", "") if item.source == "media_hold" else f.get("sender", "")
    ids = {"conversation_id": cid, "message_id": mid, "media_id": media_id, "target_user": target}

    async def audit(name: str, detail: dict[str, Any]) -> None:
        await state.audit.record(
            actor=me.sub, roles=me.roles, action=name, justification=item.id, **ids, detail=detail
        )

    refusal = _refusal(item, action)
    if refusal is not None:  # refused attempts are on record too: one entry, nothing done
        await audit(f"{action}:refused", {"reason": reason[:500], "error": refusal.code})
        raise refusal
    # The decision is on record before it takes effect: if the audit write fails, nothing
    # happens.  Its outcome follows (what was taken down, released as, ...), or the failure.
    await audit(action, {"reason": reason[:500]})
    try:
        result = await _apply(state, me, item, action, reason, target)
    except Exception as exc:
        await audit(f"{action}:failed", {"error": getattr(exc, "code", type(exc).__name__)})
        raise
    await audit(f"{action}:done", {key: v for key, v in result.items() if key != "action"})
    result["state"] = await state.queue.close(item.id, action=action, by=me.sub)
    return result


async def _apply(
    state: DmState, me: Session, item: Item, action: str, reason: str, target: str
) -> dict[str, Any]:
    """The effect of an action ``_refusal`` let through."""
    f = item.fields
    cid, mid, media_id = (f.get("conversation_id", ""), f.get("message_id", ""), f.get("media_id", ""))
    result: dict[str, Any] = {"item_id": item.id, "action": action}
    if action == "remove_message":
        result["removed"] = await _remove(state, cid, mid, target, held=bool(f.get("held")))
    elif action in ("take_down_media", "bank_media"):
        fp = await state.hash_index.fingerprint(media_id) if action == "bank_media" else None
        if action == "bank_media" and fp is None:
            raise ActionNotApplicable("the CDN holds no fingerprint for this media")
        # The reported copy goes first: if banking then fails part-way (another copy's
        # takedown fails), the media the item is about is not left up.
        await state.registry.set_status(media_id, "taken_down", reason=reason or action, by=me.sub)
        await state.revocations.publish(revocation.takedown(media_id))
        state.media_lookup.evict(media_id)
        if fp is not None:
            result["taken_down"] = await bank_and_take_down(
                state.banks,
                state.hash_index,
                state.registry,
                state.revocations,
                state.banks.moderation_bank,
                fp.signals(),
                by=me.sub,
            )
    elif action == "suspend_user":
        record = {"by": me.sub, "item": item.id, "at_ms": int(time.time() * 1000)}
        await state.store.suspend(target, record)  # no more sends
        # No more media registrations, grants or capabilities; the ones held end now.
        await state.revocations.publish_many(await SuspendedUsers(state.redis).suspend(target, record))
        # This process refuses the user's next send at once; every other dm process drops its
        # cached "not suspended" when the notify stream brings this event.
        state.suspension_cache.put(target, True, state.clock() + state.settings.suspension_cache_ttl_s)
        await state.notify.publish(state.notify.event("user_suspended", "", [], {"user_id": target}))
        result["suspended"] = target
    elif action == "release":
        result.update(await _release(state, item))
    return result


async def _remove(state: DmState, cid: str, mid: str, sender: str, *, held: bool) -> bool:
    """Delete a plain message as its sender's unsend would: edges refuse its pointers."""
    try:
        await state.store.unsend(cid, mid, sender)
    except MessageNotFound:
        return False
    await state.revocations.publish(revocation.unsent(cid, mid))
    if not held:  # a held message was never delivered: recipients are told nothing
        conv = await state.store.conversation(cid)
        await state.notify.publish(state.notify.event("unsent", cid, conv.members, {"message_id": mid}))
    return True


async def _release(state: DmState, item: Item) -> dict[str, Any]:
    f = item.fields
    if item.source == "media_hold":
        # Only a record still held becomes active: a takedown meanwhile must stand.
        if not await state.registry.transition(f["media_id"], "held", "active", reason="released"):
            raise ActionNotApplicable("the media is no longer held (taken down meanwhile?)")
        state.media_lookup.evict(f["media_id"])
        return {"released": f["media_id"]}
    cid, mid = f["conversation_id"], f["message_id"]
    try:
        held = await state.store.message(cid, mid)
    except MessageNotFound:
        raise ActionNotApplicable("the held message is gone (removed or unsent)") from None
    fields = {key: v for key, v in held.items() if key != "held"}
    fields["released_from"] = mid
    result = await state.store.append(
        cid, fields["sender"], fields, idempotency_key=f"release-{item.id[2:]}", request_hash="release"
    )
    if not result.announced:
        await _announce(state, cid, result, fields, f"release-{item.id[2:]}")
    await state.store.unsend(cid, mid, fields["sender"])  # the held copy goes
    return {"released_as": result.message_id}


async def file_legal_request(state: DmState, me: Session, doc: dict[str, Any]) -> dict[str, Any]:
    require_role(me, "legal")
    ref, cid = doc.get("reference"), doc.get("conversation_id")
    from_ms, to_ms = doc.get("from_ms"), doc.get("to_ms")
    if not isinstance(ref, str) or not 0 < len(ref) <= 200:
        raise InvalidField("reference (the legal process's own id) is 1..200 characters")
    if not isinstance(cid, str) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in (from_ms, to_ms)
    ):
        raise InvalidField("conversation_id, from_ms and to_ms are required")
    assert isinstance(from_ms, int) and isinstance(to_ms, int)
    span = to_ms - from_ms
    if span < 0 or span > state.settings.legal_max_span_s * 1000:
        raise InvalidField(f"the time scope must be 0..{state.settings.legal_max_span_s} s")
    # Stored data only: a scope reaching past the filing time would make the export, and
    # moderators' access under it, an ongoing interception of messages not yet sent.
    now_ms = int(state.clock() * 1000)
    if from_ms < 0 or to_ms > now_ms:
        raise InvalidField("the time scope must lie between 0 and now (stored messages only)")
    await state.store.conversation(cid)  # 404 if none
    rid = new_id("lr")
    record = {
        "reference": ref,
        "conversation_id": cid,
        "from_ms": str(from_ms),
        "to_ms": str(to_ms),
        "filed_by": me.sub,
        "at_ms": str(int(time.time() * 1000)),
    }
    await state.audit.record(  # first: a request the log does not know of never exists
        actor=me.sub,
        roles=me.roles,
        action="file_legal_request",
        justification=rid,
        conversation_id=cid,
        detail={"reference": ref, "from_ms": from_ms, "to_ms": to_ms},
    )
    await state.redis.hset(k.legal_request(rid), mapping=field_map(record))
    return {"id": rid, **record}


async def legal_export(state: DmState, me: Session, rid: str) -> dict[str, Any]:
    """Plain: the messages in the request's time scope.  Sealed: the metadata the platform
    has, and a statement that the content is not available to it."""
    require_role(me, "legal")
    req = (
        cast(
            dict[str, str],
            await state.redis.hgetall(  # decoded
                k.legal_request(rid)
            ),
        )
        if rid.startswith("lr_")
        else {}
    )
    if not req:
        raise LegalRequestNotFound(rid[:40])
    cid, lo, hi = req["conversation_id"], int(req["from_ms"]), int(req["to_ms"])
    conv = await state.store.conversation(cid)
    cap = state.settings.legal_export_max_messages
    scope = Scope.of_times(lo, hi)  # clamped: a request filed before validation still reads
    entries = _entries(
        await state.redis.xrange(
            k.conv_messages(cid), min=_render(scope.lo), max=_render(scope.hi), count=cap
        )
    )
    out: dict[str, Any] = {
        "legal_request": {"id": rid, **req},
        "conversation": conv.view(),
        "scope": {"from_ms": lo, "to_ms": hi},
        "truncated": len(entries) >= cap,
    }
    if conv.mode == "sealed":
        out["content_available"] = False
        out["statement"] = (
            "This conversation is end-to-end encrypted. The platform stores only ciphertext "
            "sealed to the participants' device keys and holds no key that opens it: message "
            "content and which media was shared are not available to the platform. Provided "
            "is the metadata it does hold."
        )
        out["metadata"] = [
            {
                "id": i,
                "sender": f.get("sender", ""),
                "sent_at_ms": int(i.split("-")[0]),
                "recipient_devices": len(json.loads(f.get("envelopes", "{}"))),
                "ciphertext_bytes": len(f.get("envelopes", "")),
            }
            for i, f in entries
        ]
    else:
        out["content_available"] = True
        out["messages"] = [
            {
                "id": i,
                "sender": f.get("sender", ""),
                "sent_at_ms": int(i.split("-")[0]),
                "text": f.get("text") or None,
                "media_id": f.get("media_id") or None,
                "held": bool(f.get("held")),
            }
            for i, f in entries
        ]
    await state.audit.record(
        actor=me.sub,
        roles=me.roles,
        action="legal_export",
        justification=rid,
        conversation_id=cid,
        detail={"mode": conv.mode, "entries": len(entries)},
    )
    return out
