"""``GET /v1/stream``: a WebSocket that pushes each new event to every member's devices.

Frames are JSON: ``{"type": "message" | "unsent" | "member_left" | "joined",
"cursor": "<id>", ...}``.  Connect with ``?cursor=<last cursor seen>`` to be
replayed everything missed, exactly once, before live events continue.

Authentication: ``Authorization: Bearer`` where the client can set headers;
browsers cannot, so they offer the subprotocols ``pointer-dm.v1`` and
``bearer.<session JWT>`` (JWT characters are all legal in a protocol token).
The server answers ``pointer-dm.v1`` only, so the session is never echoed, and
it never travels in the URL (a ``?access_token=`` would land in access logs,
proxies and browser history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from cdn_auth.session import Session
from service_kernel.openapi import Route
from service_kernel.rate_limit import RATE_LIMITER
from service_kernel.stream_tail import Entry

from . import api_schemas_messages as api
from .delivery import render
from .errors import NotFound, StreamsFull, TooManySockets
from .notify import CLIENT_GONE, Subscription, id_key
from .stream_leases import LEASES
from .web_messages import check_cursor
from .web_state import STATE, WS_APP_PROTOCOL, DmState

PUSHED_TYPES = {"message", "unsent", "member_left", "joined"}
#: A live event older than this is re-checked like a replayed one before a pointer is
#: minted for it.  A fresher one needs no check: an unsend or removal after the event was
#: written is remembered by every edge for at least the longest token lifetime, far longer
#: than any pointer minted within this many seconds of the event can live past it.  Only a
#: push delayed for hours (a stalled tail, a slow socket) could outlive the edge's memory.
LIVE_RECHECK_AFTER_S = 30.0


def frame(state: DmState, entry: Entry, reader: str, device: str) -> dict[str, Any] | None:
    eid, f = entry
    kind = f.get("type")
    if kind not in PUSHED_TYPES or reader not in f.get("to", "").split(","):
        return None
    cid = f.get("conversation_id", "")
    out: dict[str, Any] = {"type": kind, "cursor": eid, "conversation_id": cid}
    if kind == "message":
        out["message"] = render(state.minter, cid, f["message_id"], f, reader, device)
    elif kind == "unsent":
        out["message_id"] = f.get("message_id")
    elif kind == "member_left":
        out["user_id"] = f.get("user_id")
    return out


async def stream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    me = await state.session(request)
    cursor = request.query.get("cursor")
    if cursor is not None:
        cursor = check_cursor(cursor)
    if state.hub.connected >= state.settings.ws_max_total:
        raise StreamsFull()
    leases = request.app[LEASES]
    lease = await leases.acquire(me.sub)  # the per-user cap, across every dm process
    if lease is None:
        raise TooManySockets(me.sub)
    try:
        limiter = request.app[RATE_LIMITER]
        if cursor is not None and limiter.enabled:  # limits off: no read to count for them
            # A replay costs dm a Redis read, a rights check and a pointer per event: charged
            # per event before the upgrade (429 with Retry-After), so reconnecting with an old
            # cursor over and over is no CPU amplifier (issue 15 item 3).  Charged after the
            # capacity checks: a handshake refused for room replays nothing, and costs nothing.
            # Counted here, read again by the replay after the socket subscribes (see
            # NotifyLog.replay): the same selection, so what is charged is what is replayed.
            missed = await state.notify.missed(me.sub, cursor)
            if missed:
                await limiter.charge_request(
                    "replay", request, by_address=False, cost=len(missed), subject=f"u:{me.sub}"
                )
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=4096, protocols=(WS_APP_PROTOCOL,))
        await ws.prepare(request)
        sub = state.hub.subscribe(me.sub)  # subscribe first: live events queue while we replay
    except BaseException:
        await leases.release(me.sub, lease)
        raise
    try:
        await _serve(request, state, ws, sub, me, cursor)
    finally:
        try:
            await leases.release(me.sub, lease)  # given back before the socket stops counting here
        finally:
            state.hub.unsubscribe(sub)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(state.settings.ws_write_timeout_s):
                    await ws.close()
    return ws


async def _serve(
    request: web.Request,
    state: DmState,
    ws: web.WebSocketResponse,
    sub: Subscription,
    me: Session,
    cursor: str | None,
) -> None:
    reader_task = asyncio.create_task(_drain_client(ws, sub))
    try:
        last = cursor or state.hub.tailer.last_id or "0-0"
        if cursor is not None:
            async for entry in state.notify.replay(me.sub, cursor):
                last = entry[0]
                if await _still_deliverable(state, entry, me.sub):
                    await _send(state, ws, entry, me.sub, me.dev)
        while not ws.closed:
            if sub.overflowed:
                state.metrics.slow_consumer_drops.inc()
                await _close_slow(ws, request)
                break
            entry = await sub.queue.get()
            if entry is CLIENT_GONE:
                if sub.overflowed:
                    continue  # the loop head closes the socket with TRY_AGAIN_LATER
                break
            if id_key(entry[0]) <= id_key(last):
                continue  # already sent during the replay
            if state.session_key_retired(me):
                # No push (nor pointer minted) under a session whose key was retired: the
                # client reconnects with a fresh session and its cursor.
                await _close_session_retired(ws)
                break
            last = entry[0]
            if not await _live_deliverable(state, entry, me.sub):
                continue
            await _send(state, ws, entry, me.sub, me.dev)
    except SlowConsumer:
        state.metrics.slow_writer_drops.inc()
        await _close_slow(ws, request)
    finally:
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader_task


async def _still_deliverable(state: DmState, entry: Entry, reader: str) -> bool:
    """A replayed (or late live) message event is pushed, and a pointer minted for it, only
    under the rights an HTTP read checks *now*: the reader is still a member, and the message
    was not unsent since.  The notify stream keeps events for 24 h, longer than any edge
    remembers a revocation, so a replay must never mint what a read would refuse."""
    _, f = entry
    if f.get("type") != "message" or reader not in f.get("to", "").split(","):
        return True  # other events carry no pointer; frame() drops events for others
    cid = f.get("conversation_id", "")
    try:
        conv = await state.conversation(cid)
    except NotFound:
        return False
    if reader not in conv.members:
        return False
    return not await state.store.is_unsent(cid, f.get("message_id", ""))


async def _live_deliverable(state: DmState, entry: Entry, reader: str) -> bool:
    """The same rights for a live push, kept cheap: membership from the cached conversation
    (evicted by the membership event itself) and unsends this process has seen on the
    stream; a push older than :data:`LIVE_RECHECK_AFTER_S` is checked in Redis as a replay
    is.  So a push that was queued, or whose tail lagged, past an unsend or a removal mints
    nothing."""
    _, f = entry
    if f.get("type") != "message" or reader not in f.get("to", "").split(","):
        return True
    cid, mid = f.get("conversation_id", ""), f.get("message_id", "")
    if state.recent_unsent.get(f"{cid}|{mid}"):
        return False
    if time.time() - id_key(entry[0])[0] / 1000 > LIVE_RECHECK_AFTER_S:
        return await _still_deliverable(state, entry, reader)
    try:
        conv = await state.conversation(cid)
    except NotFound:
        return False
    return reader in conv.members


class SlowConsumer(Exception):
    """A push could not be written within the write deadline: the client stopped reading."""


async def _close_session_retired(ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await ws.close(
                code=aiohttp.WSCloseCode.POLICY_VIOLATION,
                message=b"session key retired: sign in again",
            )


async def _close_slow(ws: web.WebSocketResponse, request: web.Request) -> None:
    """Close with 1013 if the close frame can still be written soon; otherwise drop the
    connection: a client that reads nothing will not read a close frame either."""
    try:
        async with asyncio.timeout(1.0):
            await ws.close(
                code=aiohttp.WSCloseCode.TRY_AGAIN_LATER,
                message=b"slow consumer: reconnect with your cursor",
            )
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()


async def _send(
    state: DmState, ws: web.WebSocketResponse, entry: Entry, reader: str, device: str
) -> None:
    kind, f = entry[1].get("type"), entry[1]
    if kind == "message" and f.get("sender") in await state.blocks_of(reader, fallback_on_error=True):
        return  # as on reads: messages from users the reader blocked are not shown
    # A plain frame is the same for every socket of one reader: rendered (and its pointer
    # minted) once per message and reader, however many sockets the reader holds.  Sealed
    # frames differ per device (each carries that device's envelope).
    key = f"{entry[0]}|{reader}" if f.get("kind") != "sealed" else f"{entry[0]}|{reader}|{device}"
    text = state.frame_cache.get(key)
    if text is None:
        out = frame(state, entry, reader, device)
        if out is None:
            return
        text = json.dumps(out)
        state.frame_cache.put(key, text, state.clock() + state.settings.frame_cache_ttl_s)
    try:
        # A client that stops reading fills the socket buffers and then send_str waits for
        # ever; the write deadline turns that into a bounded wait and a 1013 close.
        async with asyncio.timeout(state.settings.ws_write_timeout_s):
            await ws.send_str(text)
    except TimeoutError:
        raise SlowConsumer() from None
    state.metrics.pushes.inc()
    if kind == "message":
        state.metrics.push_lag.observe(max(0.0, time.time() - id_key(entry[0])[0] / 1000))


async def _drain_client(ws: web.WebSocketResponse, sub: Subscription) -> None:
    """Clients send nothing but pings; reading keeps close frames and heartbeats flowing.
    When the client goes, a sentinel wakes the sender loop (cheaper than racing two
    futures for every pushed event)."""
    try:
        async for msg in ws:
            if msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                return
    finally:
        sub.queue.put_nowait(CLIENT_GONE)


ROUTES = (
    Route(
        "GET",
        "/v1/stream",
        stream,
        "WebSocket: new messages pushed as they arrive",
        "messages",
        responses=(101, 400, 401, 429, 503),
        params=(
            ("cursor", "query", "resume after this cursor"),
            (
                "Sec-WebSocket-Protocol",
                "header",
                "browsers: 'pointer-dm.v1, bearer.<session JWT>' (answered 'pointer-dm.v1')",
            ),
        ),
        limit="connect",
        api=api.STREAM,
    ),
)
