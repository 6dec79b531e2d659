"""Conversations, membership and blocks."""

from __future__ import annotations

from aiohttp import web

from cdn_auth import revocation
from service_kernel.errors import InvalidField
from service_kernel.ids import check_id, is_user_id, new_id
from service_kernel.openapi import Route
from service_kernel.web_errors import read_json

from . import api_schemas as api
from .errors import NotAllowed, NotMember
from .web_state import STATE


def _user_id(value: object, field: str) -> str:
    if not is_user_id(value):
        raise InvalidField(f"{field} must be a user id")
    assert isinstance(value, str)
    return value


async def create_conversation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    await state.check_not_suspended(me)  # no new conversations (each pushes "joined" to members)
    doc = await read_json(request, allowed={"members", "mode"})
    members = doc.get("members")
    if not isinstance(members, list) or not members:
        raise InvalidField("members must be a non-empty list of user ids")
    others = sorted({_user_id(m, "members") for m in members} - {me.sub})
    if not others or len(others) + 1 > state.settings.max_group_size:
        raise InvalidField(f"a conversation has 2..{state.settings.max_group_size} members")
    mode = doc.get("mode", state.settings.default_mode)
    if mode not in ("plain", "sealed"):
        raise InvalidField("mode must be 'plain' or 'sealed'")
    await state.check_may_open(me, others)
    conv = await state.store.create_conversation(new_id("c"), me.sub, others, mode)
    await state.notify.publish(state.notify.event("joined", conv.id, conv.members, {}))
    return web.json_response(
        conv.view(), status=201, headers={"Location": f"/v1/conversations/{conv.id}"}
    )


async def list_conversations(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    after = request.query.get("after")
    if after is not None:
        check_id(after, "after")
    raw_limit = request.query.get("limit", "100")
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 6):
        raise InvalidField("limit must be an integer")
    limit = int(raw_limit)
    if not 1 <= limit <= state.settings.page_limit_max:
        raise InvalidField(f"limit must be 1..{state.settings.page_limit_max}")
    page = await state.store.conversations_of(me.sub, after, limit)
    return web.json_response(
        {"conversations": page, "next_cursor": page[-1] if page else after, "more": len(page) == limit}
    )


async def get_conversation(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    conv = await state.store.conversation(check_id(request.match_info["cid"], "cid"))
    if me.sub not in conv.members:
        raise NotMember(conv.id)
    return web.json_response(conv.view())


async def remove_member(request: web.Request) -> web.Response:
    """Leave (yourself) or remove (the creator removes someone); the edge refuses their pointers."""
    state = request.app[STATE]
    me = await state.session(request)
    cid = check_id(request.match_info["cid"], "cid")
    target = _user_id(request.match_info["user_id"], "user_id")
    conv = await state.store.conversation(cid)
    if me.sub in conv.members:
        if target != me.sub and me.sub != conv.created_by:
            raise NotAllowed("only the conversation's creator may remove others")
    elif target != me.sub:  # only one's own leave may be retried from outside
        raise NotMember(cid)
    if target in conv.members:
        await state.store.remove_member(cid, target)
    else:
        # A retry: the removal happened, but did its events all go out?  A failure between
        # the removal and the revocation (a 503) is repaired here, not answered 403.
        done = await state.store.left_state(cid, target)
        if done is None:
            raise NotMember(f"{target} is not in {cid}")
        if done == "1":  # a finished removal: nothing is published twice
            return web.json_response({"conversation_id": cid, "removed": target})
    await state.revocations.publish(revocation.left(cid, target))
    await state.notify.publish(
        state.notify.event("member_left", cid, sorted({*conv.members, target}), {"user_id": target})
    )
    await state.store.mark_left_announced(cid, target)
    state.conv_cache.evict(cid)
    return web.json_response({"conversation_id": cid, "removed": target})


async def block(request: web.Request) -> web.Response:
    state = request.app[STATE]
    me = await state.session(request)
    target = _user_id(request.match_info["user_id"], "user_id")
    if target == me.sub:
        raise InvalidField("you cannot block yourself")
    if request.method == "DELETE":
        changed = await state.store.unblock(me.sub, target)
    else:
        changed = await state.store.block(me.sub, target, state.settings.max_blocks_per_user)
    state.block_cache.evict(me.sub)
    if changed:  # a repeat changes nothing and announces nothing (caches expire in 60 s)
        await state.notify.publish(state.notify.event("blocks_changed", "", [], {"user_id": me.sub}))
    return web.json_response({"user_id": target, "blocked": request.method != "DELETE"})


ROUTES = (
    Route(
        "POST",
        "/v1/conversations",
        create_conversation,
        "Open a conversation",
        "conversations",
        responses=(201, 400, 401, 403, 404, 503),
        body="members, mode",
        limit="conversation_create",
        api=api.CREATE_CONVERSATION,
    ),
    Route(
        "GET",
        "/v1/conversations",
        list_conversations,
        "My conversations, a page at a time",
        "conversations",
        responses=(200, 400, 401),
        params=(
            ("after", "query", "cursor: the last conversation id seen"),
            ("limit", "query", "page size (default 100)"),
        ),
        limit="lookup",
        api=api.LIST_CONVERSATIONS,
    ),
    Route(
        "GET",
        "/v1/conversations/{cid}",
        get_conversation,
        "One conversation",
        "conversations",
        responses=(200, 401, 403, 404),
        limit="lookup",
        api=api.GET_CONVERSATION,
    ),
    Route(
        "DELETE",
        "/v1/conversations/{cid}/members/{user_id}",
        remove_member,
        "Leave, or remove a member",
        "conversations",
        responses=(200, 401, 403, 404, 503),
        limit="membership",
        api=api.REMOVE_MEMBER,
    ),
    Route(
        "POST",
        "/v1/blocks/{user_id}",
        block,
        "Block a user",
        "conversations",
        responses=(200, 400, 401, 403),
        limit="block",
        api=api.BLOCK,
    ),
    Route(
        "DELETE",
        "/v1/blocks/{user_id}",
        block,
        "Unblock a user",
        "conversations",
        responses=(200, 400, 401),
        limit="block",
        api=api.UNBLOCK,
    ),
)
