"""The DM service end to end in plain mode: real Redis, real edge, the SDK as the client."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from dm.client import DmClient, DmClientError
from dm.sdk_types import Conversation
from dm.web_state import STATE

from ..support.messages import media_of
from ..support.services import DmStack, wait_until


async def _share(dm: DmStack, **media_kw: Any) -> tuple[DmClient, DmClient, Conversation, Any]:
    alice, bob = await dm.user(age="adult", region="GB"), await dm.user(age="adult", region="GB")
    media, data = await dm.edge.add_media(owner=alice.uid, **media_kw)
    conv = await alice.create_conversation([bob.uid])
    return alice, bob, conv, (media, data)


async def _next_message(events: Any) -> dict[str, Any]:
    async for ev in events:
        if ev["type"] == "message":
            return dict(ev)
    raise AssertionError("stream ended")


async def test_alice_shares_private_video_bob_streams_carol_refused_unsend_410(dm: DmStack) -> None:
    alice, bob, conv, (media, data) = await _share(dm)
    carol = await dm.user()
    bob_events = bob.stream()
    first = asyncio.ensure_future(_next_message(bob_events))
    await asyncio.sleep(0.1)  # let the socket connect
    sent = await alice.send(conv["id"], media_id=media.id, text="look at this")
    pushed = await asyncio.wait_for(first, 5)
    msg = pushed["message"]
    assert msg["id"] == sent["id"] and msg["text"] == "look at this"
    url = msg["media"]["url"]
    got = bytearray()
    for start in range(0, len(data), 32768):
        r = await bob.fetch_media(url, range_=(start, start + 32767))
        assert r.status == 206
        got += r.body
    assert bytes(got) == data
    with pytest.raises(DmClientError) as info:
        await carol.fetch_media(url, range_=(0, 99))
    assert (info.value.status, info.value.code) == (403, "pointer_wrong_recipient")
    await alice.unsend(conv["id"], sent["id"])

    async def gone() -> bool:
        try:
            await bob.fetch_media(url, range_=(0, 0))
        except DmClientError as err:
            return err.status == 410 and err.code == "message_unsent"
        return False

    await wait_until(gone, timeout_s=1.0)
    page = await bob.read(conv["id"])
    assert all(m["id"] != sent["id"] for m in page["messages"])
    await bob_events.aclose()


async def test_read_mints_a_pointer_for_each_reader(dm: DmStack) -> None:
    alice, bob, _, (media, _) = await _share(dm)
    carol = await dm.user()
    group = await alice.create_conversation([bob.uid, carol.uid])
    await alice.send(group["id"], media_id=media.id)
    b = media_of((await bob.read(group["id"]))["messages"][0])
    c = media_of((await carol.read(group["id"]))["messages"][0])
    assert b["pointer"] != c["pointer"]
    assert (await bob.fetch_media(b["url"], range_=(0, 9))).status == 206
    assert (await carol.fetch_media(c["url"], range_=(0, 9))).status == 206
    with pytest.raises(DmClientError):
        await carol.fetch_media(b["url"], range_=(0, 9))  # Bob's pointer is Bob's


async def test_minor_refused_adult_only_media(dm: DmStack) -> None:
    alice = await dm.user(age="adult")
    teen = await dm.user(age="minor")
    media, _ = await dm.edge.add_media(owner=alice.uid, min_age=18)
    conv = await alice.create_conversation([teen.uid])
    await alice.send(conv["id"], media_id=media.id)
    url = media_of((await teen.read(conv["id"]))["messages"][0])["url"]
    with pytest.raises(DmClientError) as info:
        await teen.fetch_media(url)
    assert (info.value.status, info.value.code) == (403, "age_restricted")


async def test_takedown_gives_410_to_everyone_and_refuses_sends(dm: DmStack) -> None:
    alice, bob, conv, (media, _) = await _share(dm)
    await alice.send(conv["id"], media_id=media.id)
    url = media_of((await bob.read(conv["id"]))["messages"][0])["url"]
    assert (await bob.fetch_media(url, range_=(0, 9))).status == 206
    mod = await dm.user(roles=["moderator"])
    async with dm.edge.client.post(
        "/v1/takedowns",
        json={"media_id": media.id},
        headers={"Authorization": f"Bearer {mod.session_token}"},
    ) as r:
        assert r.status == 200

    async def gone_for(c: DmClient, u: str) -> bool:
        try:
            await c.fetch_media(u, range_=(0, 9))
        except DmClientError as err:
            return err.status == 410
        return False

    await wait_until(lambda: gone_for(bob, url), timeout_s=1.0)
    url_a = media_of((await alice.read(conv["id"]))["messages"][0])["url"]
    assert await gone_for(alice, url_a)
    dm.app[__import__("dm.web_state").web_state.STATE].media_cache.clear()
    with pytest.raises(DmClientError) as info:
        await alice.send(conv["id"], media_id=media.id)
    assert info.value.status == 410


@pytest.mark.parametrize("allow_reshare,expected", [(False, 403), (True, 201)])
async def test_bob_reshares_alices_private_video_only_if_allowed(
    dm: DmStack, allow_reshare: bool, expected: int
) -> None:
    alice, bob, conv, (media, _) = await _share(dm, allow_reshare=allow_reshare)
    carol = await dm.user()
    await alice.send(conv["id"], media_id=media.id)
    conv2 = await bob.create_conversation([carol.uid])
    if expected == 201:
        sent = await bob.send(conv2["id"], media_id=media.id)
        url = media_of((await carol.read(conv2["id"]))["messages"][0])["url"]
        assert (await carol.fetch_media(url, range_=(0, 9))).status == 206
        assert media_of(sent)["id"] == media.id
    else:
        with pytest.raises(DmClientError) as info:
            await bob.send(conv2["id"], media_id=media.id)
        assert (info.value.status, info.value.code) == (403, "share_not_allowed")
    # A stranger who never received it may not share it either way.
    dave = await dm.user()
    conv3 = await dave.create_conversation([carol.uid])
    with pytest.raises(DmClientError):
        await dave.send(conv3["id"], media_id=media.id)


async def test_leaving_refuses_pointers_at_the_edge(dm: DmStack) -> None:
    alice, bob, _conv, (media, _) = await _share(dm)
    carol = await dm.user()
    group = await alice.create_conversation([bob.uid, carol.uid])
    await alice.send(group["id"], media_id=media.id)
    url = media_of((await carol.read(group["id"]))["messages"][0])["url"]
    await carol.leave(group["id"])

    async def refused() -> bool:
        try:
            await carol.fetch_media(url, range_=(0, 0))
        except DmClientError as err:
            return err.status == 403 and err.code == "not_a_member"
        return False

    await wait_until(refused, timeout_s=1.0)
    with pytest.raises(DmClientError) as info:
        await carol.read(group["id"])
    assert info.value.status == 403
    with pytest.raises(DmClientError) as info:
        await bob.leave(group["id"], alice.uid)  # only the creator removes others
    assert info.value.status == 403


async def test_blocked_user_cannot_message_blocker(dm: DmStack) -> None:
    alice, bob, conv, _ = await _share(dm)
    await bob.block(alice.uid)

    async def refused() -> bool:
        try:
            await alice.send(conv["id"], text="hi")
        except DmClientError as err:
            return err.code == "blocked"
        return False

    await wait_until(refused, timeout_s=3.0)
    with pytest.raises(DmClientError) as info:
        await alice.create_conversation([bob.uid])
    assert info.value.code == "blocked"
    await bob.send(conv["id"], text="the blocker may still write")


async def test_idempotency_key_replays_and_conflicts(dm: DmStack) -> None:
    alice, bob, conv, _ = await _share(dm)
    a = await alice.send(conv["id"], text="once", idempotency_key="k-1")
    b = await alice.send(conv["id"], text="once", idempotency_key="k-1")
    assert a["id"] == b["id"]
    with pytest.raises(DmClientError) as info:
        await alice.send(conv["id"], text="different", idempotency_key="k-1", retries=0)
    assert info.value.status == 409
    assert len((await bob.read(conv["id"]))["messages"]) == 1


async def test_rate_limit_is_429_with_retry_after(make_dm: Any) -> None:
    dm = await make_dm(send_rate_per_s=3)
    alice, _bob, conv, _ = await _share(dm)
    statuses = []
    for i in range(6):
        try:
            await alice.send(conv["id"], text=f"m{i}", retries=0)
            statuses.append(201)
        except DmClientError as err:
            statuses.append(err.status)
            assert err.retry_after_s is not None and err.retry_after_s >= 1
    assert statuses.count(201) == 3 and statuses.count(429) == 3


async def test_reconnecting_stream_gets_every_missed_message_exactly_once(dm: DmStack) -> None:
    alice, bob, conv, _ = await _share(dm)
    events = bob.stream(reconnect=False)
    task = asyncio.ensure_future(_next_message(events))
    await asyncio.sleep(0.1)
    await alice.send(conv["id"], text="m0")
    first = await asyncio.wait_for(task, 5)
    cursor = first["cursor"]
    await events.aclose()  # Bob goes offline
    for i in range(1, 6):
        await alice.send(conv["id"], text=f"m{i}")
    seen: list[str | None] = []
    events = bob.stream(cursor=cursor, reconnect=False)

    async def collect() -> None:
        async for ev in events:
            if ev["type"] == "message":
                seen.append(ev["message"]["text"])
                if len(seen) == 5:
                    await alice.send(conv["id"], text="m6")  # and a live one after the replay
                if len(seen) == 6:
                    return

    await asyncio.wait_for(collect(), 10)
    await events.aclose()
    assert seen == ["m1", "m2", "m3", "m4", "m5", "m6"]


async def test_report_goes_to_the_moderation_queue(dm: DmStack, redis: Any) -> None:
    alice, bob, conv, (media, _) = await _share(dm)
    sent = await alice.send(conv["id"], media_id=media.id, text="bad")
    rep = await bob.report(conv["id"], sent["id"], "abuse")
    assert rep["media_id"] == media.id and rep["sender"] == alice.uid
    entries = await redis.xrange("dm:reports")
    assert entries[-1][1]["text"] == "bad" and entries[-1][1]["media_id"] == media.id
    outsider = await dm.user()
    with pytest.raises(DmClientError) as info:
        await outsider.report(conv["id"], sent["id"])
    assert info.value.status == 403


@pytest.mark.parametrize(
    "body,ctype,status,code",
    [
        (b"{not json", "application/json", 400, "malformed_request"),
        (b'{"text": "x", "surprise": 1}', "application/json", 400, "invalid_field"),
        (b'{"text": 5}', "application/json", 400, "invalid_field"),
        (b"{}", "application/json", 400, "invalid_field"),
        (b'{"media_id": "../../x"}', "application/json", 400, "invalid_field"),
        (b'{"media_id": "m_unknown"}', "application/json", 404, "media_not_found"),
        (b'{"text": "' + b"x" * 5000 + b'"}', "application/json", 413, "too_large"),
        (b"x" * 300_000, "application/json", 413, "too_large"),
        (b'{"text": "x"}', "text/plain", 400, "malformed_request"),
    ],
)
async def test_bad_send_bodies_are_4xx_json(
    dm: DmStack, body: bytes, ctype: str, status: int, code: str
) -> None:
    alice, _bob, conv, _ = await _share(dm)
    async with alice.http.post(
        f"{dm.dm_url}/v1/conversations/{conv['id']}/messages",
        data=body,
        headers={**alice._headers(), "Content-Type": ctype},
    ) as r:
        assert r.status == status
        assert (await r.json())["error"]["code"] == code


@pytest.mark.parametrize(
    "query", ["after=nope", "after=1-2-3", "limit=0", "limit=9999", "limit=abc", "after=" + "9" * 40]
)
async def test_bad_cursors_are_400(dm: DmStack, query: str) -> None:
    alice, _bob, conv, _ = await _share(dm)
    async with alice.http.get(
        f"{dm.dm_url}/v1/conversations/{conv['id']}/messages?{query}", headers=alice._headers()
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "bad_cursor"


async def test_cursor_pagination(dm: DmStack) -> None:
    alice, bob, conv, _ = await _share(dm)
    for i in range(7):
        await alice.send(conv["id"], text=f"m{i}")
    texts, after = [], None
    while True:
        page = await bob.read(conv["id"], after=after, limit=3)
        texts += [m["text"] for m in page["messages"]]
        after = page["next_cursor"]
        if not page["more"]:
            break
    assert texts == [f"m{i}" for i in range(7)]


async def test_non_member_cannot_send_or_read(dm: DmStack) -> None:
    _alice, _bob, conv, _ = await _share(dm)
    eve = await dm.user()
    for call in (eve.send(conv["id"], text="hi", retries=0), eve.read(conv["id"])):
        with pytest.raises(DmClientError) as info:
            await call
        assert (info.value.status, info.value.code) == (403, "not_a_member")


async def test_bad_conversation_requests(dm: DmStack) -> None:
    alice = await dm.user()
    bodies: list[dict[str, Any]] = [
        {"members": []},
        {"members": [alice.uid]},
        {"members": "x"},
        {"members": ["b"], "mode": "secret"},
        {"members": ["b" * 300]},
        {"members": [f"u{i}" for i in range(100)]},
    ]
    for body in bodies:
        with pytest.raises(DmClientError) as info:
            await alice.request("POST", "/v1/conversations", json_body=body)
        assert info.value.status == 400
    with pytest.raises(DmClientError) as info:
        await alice.request("GET", "/v1/conversations/c_nope")
    assert info.value.status == 404


async def test_no_session_is_401(dm: DmStack) -> None:
    anon = dm.client()
    with pytest.raises(DmClientError) as info:
        await anon.create_conversation(["x"])
    assert info.value.status == 401
    await anon.close()


async def test_dev_issuer_off_in_production(make_dm: Any) -> None:
    dm = await make_dm(dev_issuer=False)
    c = dm.client()
    with pytest.raises(DmClientError) as info:
        await c.create_user()
    assert info.value.status == 404
    with pytest.raises(DmClientError) as info:
        await c.request(
            "POST", "/v1/dev/sessions", json_body={"user_id": "u_anyone", "sign_in_key": "k"}
        )
    assert (info.value.status, info.value.code) == (404, "dev_issuer_disabled")
    await c.close()


async def test_a_production_document_lists_no_development_route(make_dm: Any, dm: DmStack) -> None:
    """With the dev issuer off, /openapi.json describes none of its routes (they still
    answer 404 dev_issuer_disabled); with it on, all of them."""
    dev_paths = {"/v1/users", "/v1/dev/sessions", "/v1/devices", "/.well-known/jwks.json"}
    prod = await make_dm(dev_issuer=False)
    off = prod.client()
    on = dm.client()
    try:
        prod_doc = await off.request("GET", "/openapi.json")
        prod_paths = set(prod_doc["paths"])
        dev_doc_paths = set((await on.request("GET", "/openapi.json"))["paths"])
    finally:
        await off.close()
        await on.close()
    assert not prod_paths & dev_paths, prod_paths & dev_paths
    assert dev_paths <= dev_doc_paths
    assert "/v1/conversations" in prod_paths  # the rest is all there
    assert prod_paths == dev_doc_paths - dev_paths
    validate(prod_doc)  # still a valid OpenAPI 3.1 document
    ops = [op for item in prod_doc["paths"].values() for op in item.values() if isinstance(op, dict)]
    ids = {op.get("operationId") for op in ops}
    linked = {
        link.get("operationId")
        for op in ops
        for response in op.get("responses", {}).values()
        for link in response.get("links", {}).values()
    }
    assert linked and linked <= ids, linked - ids  # no link to an operation left out


async def test_dev_issuer_sign_in_again_needs_the_users_key(dm: DmStack) -> None:
    """Knowing a user's id (every conversation lists its members) is not being that user:
    signing in again takes the key the user's creation returned, so one dev user cannot
    become another (or a moderator made with the roles switch on)."""
    alice, mallory = dm.client(), dm.client()
    alice_key = (await alice.create_user())["sign_in_key"]
    mallory_key = (await mallory.create_user())["sign_in_key"]
    assert alice_key != mallory_key
    for key in (mallory_key, alice_key[:-1], "x" * 128):
        with pytest.raises(DmClientError) as info:
            await mallory.request(
                "POST", "/v1/dev/sessions", json_body={"user_id": alice.uid, "sign_in_key": key}
            )
        assert (info.value.status, info.value.code) == (403, "sign_in_refused"), key
    # Only a digest of the key is stored.
    profile = await dm.app[STATE].store.profile(str(alice.uid))
    assert profile is not None and alice_key not in json.dumps(profile)
    await alice.close()
    await mallory.close()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_dev_issuer_signs_in_again_as_a_user_it_made(dm: DmStack) -> None:
    """``POST /v1/dev/sessions``: a new device and session for an existing dev user, with the
    age and region it was made with (how the web client picks a remembered user)."""
    alice = dm.client()
    key = (await alice.create_user(age=2012, region="IE"))["sign_in_key"]
    first = _claims(str(alice.session_token))
    again = dm.client()
    doc = await again.request(
        "POST", "/v1/dev/sessions", json_body={"user_id": alice.uid, "sign_in_key": key}
    )
    assert doc["user_id"] == alice.uid and doc["device_id"] != first["dev"]
    claims = _claims(doc["session_token"])
    assert (claims["sub"], claims["age"], claims["region"]) == (alice.uid, first["age"], "IE")
    again.session_token = doc["session_token"]
    conv = await alice.create_conversation([(await dm.user()).uid])
    assert conv["id"] in (await again.request("GET", "/v1/conversations"))["conversations"]
    for body, expected in (
        ({"user_id": "u_never_made", "sign_in_key": key}, (404, "user_not_found")),
        ({"user_id": alice.uid, "sign_in_key": key, "roles": ["moderator"]}, (400, "invalid_field")),
        ({"user_id": alice.uid}, (400, "invalid_field")),
        ({}, (400, "invalid_field")),
    ):
        with pytest.raises(DmClientError) as info:
            await again.request("POST", "/v1/dev/sessions", json_body=body)
        assert (info.value.status, info.value.code) == expected, body


async def test_openapi_lists_every_dm_route(dm: DmStack) -> None:
    c = dm.client()
    doc = await c.request("GET", "/openapi.json")
    for route in dm.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        assert route.method.lower() in doc["paths"][path], (route.method, path)
    await c.close()
