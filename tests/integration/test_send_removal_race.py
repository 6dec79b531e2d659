"""A send racing a removal (issue 15, item 6).

Group senders at full speed while the creator removes Carol: a send read the conversation
(members included) at the start of its request and announced the message to that
snapshot, so a message stored *after* the removal still reached Carol's socket with a
working pointer.  The recipients are now the members read by the same Lua script that
stores the message; this test pins that down against the real dm and edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest

from dm import redis_keys as k
from dm.client import DmClient, DmClientError
from dm.notify import decode, id_key
from dm.web_state import STATE
from service_kernel.redis_client import stream_entries

from ..support.services import DmFactory, bearer, wait_until

#: Removes the member and reads the conversation's last stored message id in one script:
#: every message with a larger id was stored after the removal.
_REMOVE_AND_MARK = """
redis.call('HDEL', KEYS[1], ARGV[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last == 0 then return '0-0' end
return last[1][1]
"""


async def test_member_removed_mid_send_gets_nothing_stored_after(
    make_dm: DmFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = await make_dm(rate_limits={"send": (1000, 1000)}, send_rate_per_s=1000)
    state = dm.app[STATE]
    alice, carol = await dm.user(), await dm.user()
    senders = [alice, *[await dm.user() for _ in range(5)]]
    cid = (await alice.create_conversation([u.uid for u in senders[1:]] + [carol.uid]))["id"]
    media = {s.uid: (await dm.edge.add_media(owner=s.uid, size=1000))[0].id for s in senders}

    # The boundary: the removal's HDEL and the last message id read atomically, then the
    # route's own removal runs (its HDEL finds nothing left to delete).
    boundary: list[str] = []
    real_remove = state.store.remove_member

    async def remove_member(c: str, uid: str) -> bool:
        boundary.append(
            str(
                await state.store.redis.eval(
                    _REMOVE_AND_MARK, 2, k.conv_members(c), k.conv_messages(c), uid
                )
            )
        )
        return await real_remove(c, uid)

    monkeypatch.setattr(state.store, "remove_member", remove_member)

    # Widen the race: every send waits a little after reading its conversation and before
    # storing, so sends are in flight when the removal lands.
    real_scan = state.scan_send
    started_before: set[str] = set()

    async def scan_send(me: Any, conv: Any, fields: dict[str, str]) -> Any:
        if not boundary:
            started_before.add(fields.get("text", ""))
        await asyncio.sleep(0.02)
        return await real_scan(me, conv, fields)

    monkeypatch.setattr(state, "scan_send", scan_send)

    frames: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def send_loop(s: DmClient) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            with contextlib.suppress(DmClientError):  # a 429 now and then is fine
                await s.send(cid, text=f"{s.uid}:{i}", media_id=media[s.uid])

    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{dm.dm_url}/v1/stream", headers=bearer(str(carol.session_token)))

        async def listen() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    frames.append(json.loads(msg.data))

        listener = asyncio.create_task(listen())
        loops = [asyncio.create_task(send_loop(s)) for s in senders]
        await wait_until(lambda: sum(f["type"] == "message" for f in frames) >= 10, 20)
        await alice.leave(cid, carol.uid)
        await asyncio.sleep(1.0)  # keep sending after the removal
        stop.set()
        await asyncio.gather(*loops)
        # Everything published has reached this process's tail (and so Carol's socket).
        last_event = stream_entries(await state.store.redis.xrevrange(k.NOTIFY_STREAM, count=1))[0][0]
        await wait_until(lambda: id_key(str(state.hub.tailer.last_id)) >= id_key(str(last_event)), 10)
        await asyncio.sleep(0.5)
        await ws.close()
        await listener

    [cut] = boundary
    stored = await state.store.page(cid, None, 10_000)
    after = [(mid, f) for mid, f in stored if id_key(mid) > id_key(cut)]
    assert after, "no message was stored after the removal"
    # The race was exercised: some request read the old membership and stored after.
    assert any(f.get("text") in started_before for _, f in after)

    late = {mid for mid, _ in after}
    # No event announcing a message stored after the removal lists Carol ...
    events = [decode(e) for e in stream_entries(await state.store.redis.xrange(k.NOTIFY_STREAM))]
    for _, ev in events:
        if ev.get("type") == "message" and ev.get("message_id") in late:
            assert carol.uid not in ev.get("to", "").split(","), ev
    # ... no pointer she obtained for such a message plays ...
    pushed = {f["message"]["id"]: f["message"] for f in frames if f["type"] == "message"}
    for mid in late & set(pushed):
        try:
            answer = await carol.fetch_media(pushed[mid]["media"]["url"], range_=(0, 9))
        except DmClientError:
            continue
        raise AssertionError(f"pointer for {mid}, stored after the removal, played: {answer.status}")
    # ... and her socket received none of them (it did receive messages from before).
    assert pushed and not (late & set(pushed)), sorted(late & set(pushed))
