"""One user cannot exhaust shared resources (issue 15): per-user limits, repeats that change
nothing, consent for conversations, the device-key cap under concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import aiohttp
import pytest

from cdn_auth import redis_keys as ck
from cdn_auth import revocation
from cdn_auth.revocation_view import RevocationView
from dm import app as dm_app
from dm import envelope
from dm import redis_keys as k
from dm.client import DmClient, DmClientError
from dm.identity import DevIssuer
from dm.sdk_types import Conversation
from dm.web_state import STATE
from service_kernel.encoding import b64url_encode
from service_kernel.openapi import document
from service_kernel.rate_limit import rate_limit_key
from service_kernel.redis_client import stream_entries

from ..support.services import DmFactory, DmStack, EdgeFactory, bearer


async def _pair(dm: DmStack) -> tuple[DmClient, DmClient, Conversation]:
    alice, bob = await dm.user(), await dm.user()
    return alice, bob, await alice.create_conversation([bob.uid])


async def test_send_rate_limited_per_user_across_conversations(make_dm: DmFactory) -> None:
    """The per-conversation limit alone let one user send 2,000 messages in 0.8 s across
    40 conversations; the per-user limit counts them all."""
    dm = await make_dm(rate_limits={"send": (0.01, 5)}, send_rate_per_s=1000)
    alice = await dm.user()
    convs = [await alice.create_conversation([(await dm.user()).uid]) for _ in range(6)]
    for c in convs[:5]:
        await alice.send(c["id"], text="hi")
    with pytest.raises(DmClientError) as info:
        await alice.request(
            "POST", f"/v1/conversations/{convs[5]['id']}/messages", json_body={"text": "one too many"}
        )  # send() would retry
    assert (info.value.status, info.value.code) == (429, "rate_limited")
    assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1
    # Another user is not charged for alice's sends.
    bob = await dm.user()
    await bob.send((await bob.create_conversation([alice.uid]))["id"], text="fine")


async def test_signup_rate_limited_per_address(make_dm: DmFactory) -> None:
    dm = await make_dm(rate_limits={"signup": (0.01, 3)})
    for _ in range(3):
        await dm.user()
    async with aiohttp.ClientSession() as http, http.post(f"{dm.dm_url}/v1/users", json={}) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "rate_limited"
    # Signing in again as a dev user draws on the same allowance.
    body = {"user_id": dm.clients[0].uid, "sign_in_key": "any"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{dm.dm_url}/v1/dev/sessions", json=body) as r,
    ):
        assert r.status == 429
        assert (await r.json())["error"]["code"] == "rate_limited"


async def test_stream_connects_rate_limited(make_dm: DmFactory) -> None:
    dm = await make_dm(rate_limits={"connect": (0.01, 2)})
    alice = await dm.user()
    url = f"{dm.dm_url}/v1/stream"
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.ws_connect(url, headers=bearer(str(alice.session_token))):
                pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            async with http.ws_connect(url, headers=bearer(str(alice.session_token))):
                pass
        assert info.value.status == 429


async def test_edge_media_lookup_rate_limited(make_edge: EdgeFactory, issuer: DevIssuer) -> None:
    edge = await make_edge(rate_limits={"media_lookup": (0.01, 2)})
    media, _ = await edge.add_media(owner="alice")
    for expect in (200, 200, 429):
        async with edge.client.get(f"/v1/media/{media.id}", headers=bearer(issuer.mint("alice"))) as r:
            assert r.status == expect
    async with edge.client.get(f"/v1/media/{media.id}", headers=bearer(issuer.mint("bob"))) as r:
        assert r.status != 429  # bob has his own budget


async def test_rate_limit_keys_expire(make_dm: DmFactory, redis: Any) -> None:
    dm = await make_dm(rate_limits={"lookup": (10, 20)})
    alice = await dm.user()
    await alice.request("GET", "/v1/conversations")
    ttl = await redis.pttl(rate_limit_key(f"u:{alice.uid}", "lookup"))
    assert 0 < ttl <= 100  # one interval (100 ms at 10/s): the key is gone when idle


def test_limited_routes_document_429() -> None:
    doc = document("dm", "0", dm_app.ROUTES)
    send = doc["paths"]["/v1/conversations/{cid}/messages"]["post"]
    assert send["x-rate-limit"] == "send" and "429" in send["responses"]
    # Every write route of dm is limited.
    for r in dm_app.ROUTES:
        if r.method in ("POST", "PUT", "DELETE"):
            assert r.limit, f"{r.method} {r.path} has no rate limit"


async def test_repeat_unsend_publishes_nothing(dm: DmStack, redis: Any) -> None:
    alice, _bob, conv = await _pair(dm)
    sent = await alice.send(conv["id"], text="x")
    await alice.unsend(conv["id"], sent["id"])
    revocations = await redis.xlen(ck.REVOCATION_STREAM)
    notify = await redis.xlen(k.NOTIFY_STREAM)
    for _ in range(5):
        assert (await alice.unsend(conv["id"], sent["id"]))["unsent"] is True
    assert await redis.xlen(ck.REVOCATION_STREAM) == revocations
    assert await redis.xlen(k.NOTIFY_STREAM) == notify


async def test_unsend_retry_after_failed_announce_republishes(dm: DmStack, redis: Any) -> None:
    """The unsend is stored but its announcement never went out (the process died): the
    retry publishes it, and only then do repeats stop publishing."""
    alice, _bob, conv = await _pair(dm)
    sent = await alice.send(conv["id"], text="x")
    await dm.app[STATE].store.unsend(conv["id"], sent["id"], alice.uid)  # no announce
    before = await redis.xlen(ck.REVOCATION_STREAM)
    await alice.unsend(conv["id"], sent["id"])
    assert await redis.xlen(ck.REVOCATION_STREAM) == before + 1
    await alice.unsend(conv["id"], sent["id"])
    assert await redis.xlen(ck.REVOCATION_STREAM) == before + 1


async def test_repeat_block_publishes_nothing(dm: DmStack, redis: Any) -> None:
    alice, bob = await dm.user(), await dm.user()
    await alice.block(bob.uid)
    notify = await redis.xlen(k.NOTIFY_STREAM)
    for _ in range(5):
        await alice.block(bob.uid)
    assert await redis.xlen(k.NOTIFY_STREAM) == notify


async def test_repeat_report_files_once(dm: DmStack, redis: Any) -> None:
    alice, bob, conv = await _pair(dm)
    sent = await alice.send(conv["id"], text="spam")
    first = await bob.report(conv["id"], sent["id"], "spam")
    assert first["duplicate"] is False
    for _ in range(5):
        again = await bob.report(conv["id"], sent["id"], "spam")
        assert again["report_id"] == first["report_id"] and again["duplicate"] is True
    assert await redis.xlen(k.REPORTS_STREAM) == 1


async def test_group_creation_respects_blocks(dm: DmStack) -> None:
    """Blocks were only checked for 1:1: a blocked user reached the blocker through a group."""
    victim, attacker, third = await dm.user(), await dm.user(), await dm.user()
    await victim.block(attacker.uid)
    with pytest.raises(DmClientError) as info:
        await attacker.create_conversation([victim.uid, third.uid])
    assert (info.value.status, info.value.code) == (403, "blocked")
    assert (await victim.request("GET", "/v1/conversations"))["conversations"] == []


async def test_conversation_with_made_up_members_refused(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    with pytest.raises(DmClientError) as info:
        await alice.create_conversation([bob.uid, "u_" + "x" * 250])
    assert (info.value.status, info.value.code) == (404, "user_not_found")
    assert (await bob.request("GET", "/v1/conversations"))["conversations"] == []


async def test_user_known_from_external_session(dm: DmStack, issuer: DevIssuer) -> None:
    """With an external identity provider there is no profile: a user exists once dm has
    verified a session of theirs."""
    alice = await dm.user()
    ext = DmClient(dm.dm_url, session_token=issuer.mint("ext-user-1"))
    dm.clients.append(ext)
    with pytest.raises(DmClientError):
        await alice.create_conversation(["ext-user-1"])
    await ext.request("GET", "/v1/conversations")  # ext signs in once
    conv = await alice.create_conversation(["ext-user-1"])
    assert "ext-user-1" in conv["members"]


async def test_device_key_cap_is_atomic(make_dm: DmFactory, issuer: DevIssuer, redis: Any) -> None:
    """40 concurrent publishes stored 21 keys against a cap of 8 (check-then-write)."""
    dm = await make_dm(rate_limits={"device_key": (1000, 1000)})
    user = await dm.user()
    pub = _public_key()
    async with aiohttp.ClientSession() as http:

        async def put(i: int) -> int:
            token = issuer.mint(user.uid, dev=f"d{i}")
            async with http.put(
                f"{dm.dm_url}/v1/devices/d{i}/key", json=pub, headers=bearer(token)
            ) as r:
                return r.status

        statuses = await asyncio.gather(*(put(i) for i in range(40)))
    assert statuses.count(200) == 8 and statuses.count(403) == 32
    assert await redis.hlen(k.user_devices(user.uid)) == 8


def _public_key() -> dict[str, str]:
    key = envelope.DeviceKey.generate("x25519")
    return {"suite": key.suite, "public_key": b64url_encode(key.public_bytes())}


def test_revocation_view_bounded_by_distinct_things() -> None:
    """20,000 unsends of one message grew every edge by ~300 B per event while the metric
    said 1; repeats now hold one entry and one expiry item, and still expire."""
    now = [1000.0]
    view = RevocationView(100.0, clock=lambda: now[0])
    for i in range(5000):
        view.apply(dataclasses.replace(revocation.unsent("c_1", "1-0"), at_ms=1_000_000 + i))
    view.apply(dataclasses.replace(revocation.takedown("m_1"), at_ms=1_000_000))
    assert (len(view), view.queued) == (2, 2)
    now[0] = 1100.5  # past the first event's window, not the last repeat's
    view.expire()
    assert view.is_unsent("c_1", "1-0") and not view.is_taken_down("m_1")
    now[0] = 1106.0
    view.expire()
    assert (len(view), view.queued) == (0, 0)


async def test_conversation_list_paginates(make_dm: DmFactory) -> None:
    """The list had no pagination (a victim's reached 2,000 ids in one answer)."""
    dm = await make_dm(rate_limits={"conversation_create": (1000, 1000)})
    alice = await dm.user()
    others = [await dm.user() for _ in range(5)]
    made = sorted([(await o.create_conversation([alice.uid]))["id"] for o in others])
    first = await alice.request("GET", "/v1/conversations", params={"limit": "2"})
    assert (first["conversations"], first["more"]) == (made[:2], True)
    rest = await alice.request(
        "GET", "/v1/conversations", params={"after": first["next_cursor"], "limit": "10"}
    )
    assert (rest["conversations"], rest["more"]) == (made[2:], False)
    with pytest.raises(DmClientError) as info:
        await alice.request("GET", "/v1/conversations", params={"limit": "\u0661"})
    assert info.value.status == 400


async def test_replay_reads_only_the_callers_events(dm: DmStack, redis: Any) -> None:
    """``/v1/stream?cursor=0-0`` scanned and decoded the whole 24 h stream of every user;
    a resume now reads the caller's inbox index: a user with no events reads none."""
    alice, bob, conv = await _pair(dm)
    carol, dave = await dm.user(), await dm.user()
    other = await carol.create_conversation([dave.uid])
    for i in range(30):
        await carol.send(other["id"], text=f"noise {i}")
    sent = await alice.send(conv["id"], text="for bob")
    assert await redis.zcard(k.user_inbox(bob.uid)) == 2  # "joined" and the message
    assert await redis.zcard(k.user_inbox(dave.uid)) == 31
    events = [e async for e in dm.app[STATE].notify.replay(bob.uid, "0-0")]
    assert [e[1]["type"] for e in events] == ["joined", "message"]
    assert events[1][1]["message_id"] == sent["id"]
    # The WebSocket resume uses it: bob gets exactly his message after the joined cursor.
    got = []
    async for ev in bob.stream(cursor=events[0][0], reconnect=False):
        got.append(ev)
        break
    assert got[0]["type"] == "message" and got[0]["message"]["id"] == sent["id"]


async def test_push_mints_once_per_message_and_reader(
    dm: DmStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pushed frame minted a pointer per socket (1,000 sockets of one user x 50
    messages/s saturated dm); a reader's sockets now share one rendering."""
    state = dm.app[STATE]
    minted: list[str] = []
    original = state.minter.media_for

    def counting(media_id: str, reader: str, cid: str, message_id: str) -> dict[str, Any]:
        minted.append(reader)
        return original(media_id, reader, cid, message_id)

    monkeypatch.setattr(state.minter, "media_for", counting)
    alice, bob, conv = await _pair(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    url = f"{dm.dm_url}/v1/stream"
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(url, headers=bearer(str(bob.session_token))) for _ in range(3)]
        await asyncio.sleep(0.3)
        sent = await alice.send(conv["id"], media_id=media.id)
        frames = []
        for ws in sockets:
            while True:
                ev = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                if ev["type"] == "message":
                    frames.append(ev)
                    break
            await ws.close()
    assert all(f["message"]["id"] == sent["id"] for f in frames) and len(frames) == 3
    assert minted == [bob.uid]


async def test_block_list_is_capped(make_dm: DmFactory) -> None:
    """Block sets grew without bound; now at most DM_MAX_BLOCKS_PER_USER."""
    dm = await make_dm(max_blocks_per_user=2, rate_limits={"block": (1000, 1000)})
    alice = await dm.user()
    await alice.block("someone-1")
    await alice.block("someone-2")
    await alice.block("someone-2")  # a repeat still answers 200
    with pytest.raises(DmClientError) as info:
        await alice.block("someone-3")
    assert info.value.status == 403


async def test_held_media_queue_is_bounded(make_edge: EdgeFactory) -> None:
    """``cdn:holds`` was a plain XADD: every bank-held upload grew it for ever.  Now it
    keeps about ``holds_maxlen`` newest entries (MAXLEN ~ trims whole stream nodes, so a
    little more may remain: at most one node, 100 entries by Redis's default)."""
    edge = await make_edge(holds_maxlen=100)
    media, _ = await edge.add_media(owner="alice", size=1000)
    for at in range(1000):
        await edge.state.registry.announce_hold(media, at)
    length = await edge.state.redis.xlen(ck.MEDIA_HOLDS_STREAM)
    assert 100 <= length <= 200
    newest = stream_entries(await edge.state.redis.xrevrange(ck.MEDIA_HOLDS_STREAM, count=1))
    assert newest[0][1]["at"] == "999"  # trimmed from the old end
