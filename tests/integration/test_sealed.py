"""Sealed (encrypted-pointer) mode end to end: HPKE envelopes, grants at the edge, franking."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from dm import envelope
from dm.client import DmClient, DmClientError
from dm.web_state import STATE as STATE_DM

from ..support.sealed import edge_url, sealed_user
from ..support.services import DmStack, wait_until

SUITES = ["x25519", "mlkem768-x25519"]


async def first_message(c: DmClient, cid: str) -> dict[str, Any]:
    return dict((await c.read(cid))["messages"][-1])


@pytest.mark.parametrize("suite", SUITES)
async def test_sealed_share_end_to_end(dm: DmStack, suite: str) -> None:
    alice, bob = await sealed_user(dm, suite), await sealed_user(dm, suite)
    media, data = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    events = bob.stream()
    nxt = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.1)
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id, text="hi")
    pushed = (await asyncio.wait_for(nxt, 5))["message"]
    await events.aclose()
    assert pushed["kind"] == "sealed" and "text" not in pushed and "media" not in pushed
    payload = bob.open_message(pushed)
    assert (payload.media_id, payload.text) == (media.id, "hi")
    url = f"{edge_url(dm)}/m/{media.id}"
    got = bytearray()
    for start in range(0, len(data), 40_000):
        r = await bob.fetch_media(url, grant=payload.grant, range_=(start, start + 39_999))
        assert r.status == 206
        got += r.body
    assert bytes(got) == data


async def test_no_redis_key_or_value_holds_media_id_or_text(dm: DmStack, redis: Any) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    secret_text = "meet at the usual place 7f3a"
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id, text=secret_text)
    payload = bob.open_message(await first_message(bob, conv["id"]))
    await bob.fetch_media(f"{edge_url(dm)}/m/{media.id}", grant=payload.grant, range_=(0, 9))
    registry_key = f"cdn:media:{{{media.id}}}"  # registered before any sharing; not the send's
    leaks = []
    async for key in redis.scan_iter(count=1000):
        if key == registry_key:
            continue
        blob = key + " " + repr(await _dump(redis, key))
        for needle in (media.id, secret_text, secret_text[:12]):
            if needle in blob:
                leaks.append((key, needle))
    assert leaks == []


async def _dump(redis: Any, key: str) -> Any:
    kind = await redis.type(key)
    if kind == "none":
        return None  # expired between SCAN and TYPE (rate-limit keys live for milliseconds)
    if kind == "string":
        return await redis.get(key)
    if kind == "hash":
        return await redis.hgetall(key)
    if kind == "set":
        return await redis.smembers(key)
    if kind == "stream":
        return await redis.xrange(key)
    if kind == "list":
        return await redis.lrange(key, 0, -1)
    if kind == "zset":
        return await redis.zrange(key, 0, -1, withscores=True)
    raise AssertionError(f"unexpected type {kind} for {key}")


async def test_envelope_moved_to_another_conversation_or_message_fails(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    other = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), text="original")
    msg = await first_message(bob, conv["id"])
    assert bob.open_message(msg).text == "original"
    for field, value in (
        ("conversation_id", other["id"]),
        ("client_message_id", "s_other"),
        ("sender", bob.uid),
    ):
        moved = copy.deepcopy(msg)
        moved[field] = value
        with pytest.raises(envelope.EnvelopeError):
            bob.open_message(moved)
    # Replayed through the server into the other conversation: it no longer opens.
    body = {
        "client_message_id": msg["client_message_id"],
        "franking_commitment": msg["franking"]["commitment"],
        "envelopes": [
            {
                "user_id": bob.uid,
                "device_id": bob.device_id,
                "suite": "x25519",
                "ciphertext": msg["envelope"],
            }
        ],
    }
    await alice.request("POST", f"/v1/conversations/{other['id']}/messages", json_body=body)
    with pytest.raises(envelope.EnvelopeError):
        bob.open_message(await first_message(bob, other["id"]))


async def test_grant_binds_first_n_users_then_refuses(dm: DmStack) -> None:
    alice, bob, carol = [await sealed_user(dm) for _ in range(3)]
    dave = await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    group = await alice.create_conversation([bob.uid, carol.uid], mode="sealed")
    await alice.send_sealed(group["id"], edge_url=edge_url(dm), media_id=media.id)
    grant = bob.open_message(await first_message(bob, group["id"])).grant
    url = f"{edge_url(dm)}/m/{media.id}"
    assert (await bob.fetch_media(url, grant=grant, range_=(0, 9))).status == 206
    assert (await carol.fetch_media(url, grant=grant, range_=(0, 9))).status == 206
    with pytest.raises(DmClientError) as info:  # Bob forwarded the grant to Dave
        await dave.fetch_media(url, grant=grant, range_=(0, 9))
    assert (info.value.status, info.value.code) == (403, "grant_exhausted")
    assert (await bob.fetch_media(url, grant=grant, range_=(0, 9))).status == 206


async def test_concurrent_redeemers_never_exceed_the_limit(dm: DmStack) -> None:
    alice = await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    grant = (await alice.request_grant(edge_url(dm), media.id, 3))["grant"]
    users = [await dm.user() for _ in range(10)]
    url = f"{edge_url(dm)}/m/{media.id}"

    async def fetch(u: DmClient) -> int:
        try:
            return (await u.fetch_media(url, grant=grant, range_=(0, 0))).status
        except DmClientError as err:
            return err.status

    statuses = await asyncio.gather(*(fetch(u) for u in users))
    assert sorted(statuses) == [206] * 3 + [403] * 7


async def test_unsend_revokes_the_grant_410(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    grant = bob.open_message(await first_message(bob, conv["id"])).grant
    url = f"{edge_url(dm)}/m/{media.id}"
    assert (await bob.fetch_media(url, grant=grant, range_=(0, 9))).status == 206
    await alice.unsend(conv["id"], sent["id"])

    async def revoked() -> bool:
        try:
            await bob.fetch_media(url, grant=grant, range_=(0, 9))
        except DmClientError as err:
            return err.status == 410 and err.code == "grant_revoked"
        return False

    await wait_until(revoked, timeout_s=1.0)
    assert (await bob.read(conv["id"]))["messages"] == []


async def test_grant_revocation_by_sharer_only(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    g = await alice.request_grant(edge_url(dm), media.id, 1)
    with pytest.raises(DmClientError) as info:
        await bob.revoke_grant(edge_url(dm), g["grant_id"])
    assert info.value.status == 403
    await alice.revoke_grant(edge_url(dm), g["grant_id"])

    async def gone() -> bool:
        try:
            await bob.fetch_media(f"{edge_url(dm)}/m/{media.id}", grant=g["grant"])
        except DmClientError as err:
            return err.status == 410
        return False

    await wait_until(gone, timeout_s=1.0)


async def test_grant_needs_the_right_to_share(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    private, _ = await dm.edge.add_media(owner=alice.uid)
    reshareable, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    with pytest.raises(DmClientError) as info:
        await bob.request_grant(edge_url(dm), private.id, 1)
    assert info.value.code == "share_not_allowed"
    g = await alice.request_grant(edge_url(dm), reshareable.id, 1)
    with pytest.raises(DmClientError):  # not yet redeemed: no proof Bob received it
        await bob.request_grant(edge_url(dm), reshareable.id, 1, via_grant=g["grant"])
    await bob.fetch_media(f"{edge_url(dm)}/m/{reshareable.id}", grant=g["grant"], range_=(0, 0))
    assert (await bob.request_grant(edge_url(dm), reshareable.id, 1, via_grant=g["grant"]))["grant"]
    g2 = await alice.request_grant(edge_url(dm), private.id, 1)
    await bob.fetch_media(f"{edge_url(dm)}/m/{private.id}", grant=g2["grant"], range_=(0, 0))
    with pytest.raises(DmClientError):  # received, but the owner did not allow re-sharing
        await bob.request_grant(edge_url(dm), private.id, 1, via_grant=g2["grant"])


async def test_minor_refused_adult_media_by_grant_without_using_a_slot(dm: DmStack) -> None:
    alice, teen, bob = await dm.user(), await dm.user(age="minor"), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid, min_age=18)
    g = (await alice.request_grant(edge_url(dm), media.id, 1))["grant"]
    with pytest.raises(DmClientError) as info:
        await teen.fetch_media(f"{edge_url(dm)}/m/{media.id}", grant=g)
    assert info.value.code == "age_restricted"
    assert (await bob.fetch_media(f"{edge_url(dm)}/m/{media.id}", grant=g, range_=(0, 0))).status == 206


async def test_genuine_report_verified_forged_rejected(dm: DmStack, redis: Any) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id, text="abuse")
    msg = await first_message(bob, conv["id"])
    payload = bob.open_message(msg)
    forged = envelope.Payload(payload.media_id, payload.grant, "something else", payload.franking_key)
    with pytest.raises(DmClientError) as info:
        await bob.report_sealed(msg, forged)
    assert (info.value.status, info.value.code) == (403, "report_unverified")
    bad_sig = copy.deepcopy(msg)
    bad_sig["franking"]["ts_ms"] += 1
    with pytest.raises(DmClientError) as info:
        await bob.report_sealed(bad_sig, payload)
    assert info.value.code == "report_unverified"
    rep = await bob.report_sealed(msg, payload, "harassment")
    assert rep["verified"] and rep["media_id"] == media.id and rep["sender"] == alice.uid
    mod = await dm.user(roles=["moderator"])
    async with dm.edge.client.post(
        "/v1/takedowns",
        json={"media_id": rep["media_id"]},
        headers={"Authorization": f"Bearer {mod.session_token}"},
    ) as r:
        assert r.status == 200

    async def gone() -> bool:
        try:
            await bob.fetch_media(f"{edge_url(dm)}/m/{media.id}", grant=payload.grant)
        except DmClientError as err:
            return err.code == "media_taken_down"
        return False

    await wait_until(gone, timeout_s=1.0)


async def test_sender_cannot_frame_with_a_wrong_commitment(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), text="real")
    msg = await first_message(bob, conv["id"])
    msg["franking"]["commitment"] = "A" * 43
    with pytest.raises(envelope.EnvelopeError):
        bob.open_message(msg)  # the recipient's client rejects a message whose commitment lies


async def test_new_device_gets_409_until_included(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    stale = await alice.devices_of(bob.uid)
    bob2 = await bob.link_device()
    bob2.use_device_key(envelope.DeviceKey.generate("mlkem768-x25519"))
    await bob2.publish_key()
    payload = envelope.Payload(None, None, "hello", envelope.new_franking_key())
    body = alice._seal_all(
        conv["id"], "s_stale", payload, {bob.uid: stale, alice.uid: await alice.devices_of(alice.uid)}
    )
    with pytest.raises(DmClientError) as info:
        await alice.request("POST", f"/v1/conversations/{conv['id']}/messages", json_body=body)
    assert (info.value.status, info.value.code) == (409, "device_mismatch")
    async with alice.http.post(
        f"{dm.dm_url}/v1/conversations/{conv['id']}/messages", json=body, headers=alice._headers()
    ) as r:
        err = (await r.json())["error"]
    assert err["missing_devices"] == [f"{bob.uid}/{bob2.device_id}"] and err["extra_devices"] == []
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), text="hello")  # refreshes
    assert bob2.open_message(await first_message(bob2, conv["id"])).text == "hello"
    assert bob.open_message(await first_message(bob, conv["id"])).text == "hello"


@pytest.mark.parametrize(
    "suite,key,code",
    [
        ("x25519", "A" * 10, 400),
        ("x25519", "A" * 1622, 400),
        ("rot13", "A" * 43, 400),
        ("mlkem768-x25519", "A" * 43, 400),
        ("x25519", "not base64!", 400),
    ],
)
async def test_bad_device_keys_are_400(dm: DmStack, suite: str, key: str, code: int) -> None:
    c = await dm.user()
    with pytest.raises(DmClientError) as info:
        await c.request(
            "PUT", f"/v1/devices/{c.device_id}/key", json_body={"suite": suite, "public_key": key}
        )
    assert info.value.status == code


async def test_device_publishes_only_its_own_key(dm: DmStack) -> None:
    a, b = await dm.user(), await dm.user()
    key = envelope.DeviceKey.generate()
    from service_kernel.encoding import b64url_encode

    with pytest.raises(DmClientError) as info:
        await a.request(
            "PUT",
            f"/v1/devices/{b.device_id}/key",
            json_body={"suite": "x25519", "public_key": b64url_encode(key.public_bytes())},
        )
    assert info.value.status == 403


async def test_malformed_sealed_sends_are_4xx(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm, "mlkem768-x25519")
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    good = alice._seal_all(
        conv["id"],
        "s_1",
        envelope.Payload(None, None, "x", envelope.new_franking_key()),
        {bob.uid: await alice.devices_of(bob.uid)},
    )
    env = good["envelopes"][0]
    wrong_suite = {**env, "suite": "x25519"}
    x_env = envelope.seal(
        "x25519",
        envelope.DeviceKey.generate().public_bytes(),
        envelope.Binding("c", "s", "m", "u", "d"),
        envelope.Payload(None, None, "x", envelope.new_franking_key()),
    )
    from service_kernel.encoding import b64url_encode

    cases: list[tuple[dict[str, Any], int]] = [
        ({"media_id": "m_x"}, 400),
        ({**good, "text": "plaintext"}, 400),
        ({**good, "envelopes": [wrong_suite]}, 400),
        ({**good, "envelopes": [{**env, "suite": "x25519", "ciphertext": b64url_encode(x_env)}]}, 400),
        ({**good, "envelopes": [{**env, "ciphertext": "@@@"}]}, 400),
        ({**good, "envelopes": [{**env, "ciphertext": "AQID"}]}, 400),
        ({**good, "envelopes": [env, env]}, 400),
        ({**good, "envelopes": "nope"}, 400),
        ({**good, "franking_commitment": "AAAA"}, 400),
        ({**good, "client_message_id": "../x"}, 400),
        ({**good, "surprise": 1}, 400),
        ({**good, "envelopes": []}, 409),
    ]
    for body, status in cases:
        with pytest.raises(DmClientError) as info:
            await alice.request("POST", f"/v1/conversations/{conv['id']}/messages", json_body=body)
        assert info.value.status == status, (body.keys(), info.value)


@pytest.mark.parametrize("text", ["k", ""])
async def test_shortest_sealed_texts_are_accepted(dm: DmStack, text: str) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm, "mlkem768-x25519")
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), text=text)
    assert bob.open_message(await first_message(bob, conv["id"])).text == text


async def test_recipient_cannot_attach_someone_elses_grant(dm: DmStack) -> None:
    """Unsend revokes the message's grant, so a message may only carry its sender's grant."""
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    alices = await alice.request_grant(edge_url(dm), media.id, 1)
    payload = envelope.Payload(None, None, "x", envelope.new_franking_key())
    body = bob._seal_all(conv["id"], "s_steal", payload, {alice.uid: await bob.devices_of(alice.uid)})
    body["grant_id"] = alices["grant_id"]
    with pytest.raises(DmClientError) as info:
        await bob.request("POST", f"/v1/conversations/{conv['id']}/messages", json_body=body)
    assert info.value.status == 403


async def test_retried_unsend_revokes_the_grant_again(dm: DmStack, redis: Any) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    # The first attempt stored the unsend and died before announcing it (issue 15: a
    # finished unsend is not re-announced by repeats, but an unfinished one is by retries).
    await dm.app[STATE_DM].store.unsend(conv["id"], sent["id"], alice.uid)
    await alice.unsend(conv["id"], sent["id"])  # the retry
    await alice.unsend(conv["id"], sent["id"])  # a repeat of the finished unsend
    kinds = [f["kind"] for _, f in await redis.xrange("cdn:revocations")]
    assert kinds.count("grant_revoked") == 1 and kinds.count("unsent") == 1


async def test_idempotent_sealed_replay_returns_the_stored_franking(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    payload = envelope.Payload(None, None, "once", envelope.new_franking_key())
    body = alice._seal_all(conv["id"], "s_once", payload, {bob.uid: await alice.devices_of(bob.uid)})
    path = f"/v1/conversations/{conv['id']}/messages"
    first = await alice.request("POST", path, json_body=body)
    await asyncio.sleep(0.01)
    again = await alice.request("POST", path, json_body=body)
    assert again["id"] == first["id"] and again["franking"] == first["franking"]
    assert len((await bob.read(conv["id"]))["messages"]) == 1


async def test_device_key_can_be_withdrawn(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    assert len(await alice.devices_of(bob.uid)) == 1
    await bob.request("DELETE", f"/v1/devices/{bob.device_id}/key")
    assert await alice.devices_of(bob.uid) == []
    with pytest.raises(DmClientError) as info:
        await bob.request("DELETE", f"/v1/devices/{bob.device_id}/key")
    assert info.value.status == 404
