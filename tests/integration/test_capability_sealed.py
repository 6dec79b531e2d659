"""Sealed shares with a capability, end to end through the real dm and edge: the sender's
SDK asks once per media and derives each share's grant on the device (no grants round
trip); recipients fetch with it as with any grant; unsend and the re-share chain hold."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from cdn_auth import capability as cap_mod
from cdn_auth import token_format as tf
from dm import envelope
from dm.client import DmClientError

from ..support.capabilities import fetch_code, last_message, redis_values
from ..support.sealed import edge_url, sealed_user
from ..support.services import DmStack, wait_until


async def test_sealed_share_with_a_capability(dm: DmStack, redis: Any) -> None:
    alice, bob, carol = (await sealed_user(dm), await sealed_user(dm), await sealed_user(dm))
    media, data = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid, carol.uid], mode="sealed")
    cap = await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    assert alice.capabilities.held(media.id) == cap
    secret = "the capability share 41c9"
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id, text=secret)
    stored = await last_message(bob, conv["id"])
    assert stored["id"] == sent["id"] and "grant_id" not in stored  # dm never sees it
    payload = bob.open_message(stored)
    assert payload.text == secret and cap_mod.is_derived(payload.grant or "")
    url = f"{edge_url(dm)}/m/{media.id}"
    assert payload.grant is not None
    r = await bob.fetch_media(url, grant=payload.grant, range_=(0, 99))
    assert (r.status, r.body) == (206, data[:100])
    assert await fetch_code(carol, url, payload.grant) == (206, "")
    dave = await sealed_user(dm)  # N = the two other members: a forwardee gets nothing
    assert await fetch_code(dave, url, payload.grant) == (403, "grant_exhausted")
    # No grant was minted for it, and neither the media id nor the text is in Redis
    # outside the registry (the capability's record names holder and owner only).
    leaks, grants = [], []
    async for key in redis.scan_iter(count=1000):
        grants += [key] if key.startswith("cdn:grant:") else []
        if key == f"cdn:media:{{{media.id}}}":
            continue
        blob = key + " " + repr(await redis_values(redis, key))
        leaks += [(key, n) for n in (media.id, secret) if n in blob]
    assert (leaks, grants) == ([], [])


async def test_one_capability_request_serves_every_share(dm: DmStack, redis: Any) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    grants = set()
    for _ in range(3):
        await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id, capability=True)
        grants.add(bob.open_message(await last_message(bob, conv["id"])).grant)
    assert len(grants) == 3
    caps = [k async for k in redis.scan_iter(match="cdn:cap:*:meta")]
    assert len(caps) == 1
    # capability=False keeps the grants path.
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id, capability=False)
    grant = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    assert tf.parse_unverified(grant).type is tf.TokenType.GRANT


async def test_unsend_revokes_the_derived_grant(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    grant = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    url = f"{edge_url(dm)}/m/{media.id}"
    assert await fetch_code(bob, url, grant) == (206, "")
    await alice.unsend(conv["id"], sent["id"])
    await wait_until(lambda: _is(fetch_code(bob, url, grant), (410, "grant_revoked")), 2)


async def test_the_next_shares_grant_is_made_ahead_and_behaves_as_any(dm: DmStack) -> None:
    """After a sealed send the SDK derives the next share's grant while idle (a spare, off
    the next share's critical path): the next share carries it, it binds its N, it is
    never carried twice, and unsending that share revokes it."""
    alice, bob, dave = await sealed_user(dm), await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    first = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    await asyncio.sleep(0)  # the spare is made once the send's caller has moved on
    spare = alice.capabilities._spares[(media.id, 1)][0]
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    second = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    assert second == spare.token and second != first
    url = f"{edge_url(dm)}/m/{media.id}"
    assert await fetch_code(bob, url, second) == (206, "")
    assert await fetch_code(dave, url, second) == (403, "grant_exhausted")
    await alice.unsend(conv["id"], sent["id"])
    await wait_until(lambda: _is(fetch_code(bob, url, second), (410, "grant_revoked")), 2)
    assert await fetch_code(bob, url, first) == (206, "")


async def test_unsend_from_another_device_retries_a_failed_revocation(dm: DmStack) -> None:
    """Unsent from the sender's other device, the derived grant found in that device's
    envelope is revoked; if the revocation fails, the unsend raises (dm has unsent) and a
    retry revokes it (the message can no longer be read, the grant is kept)."""
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    laptop = await alice.link_device()
    laptop.use_device_key(envelope.DeviceKey.generate("x25519"))
    await laptop.publish_key()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    grant = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    url = f"{edge_url(dm)}/m/{media.id}"
    assert await fetch_code(bob, url, grant) == (206, "")
    laptop.edge_url = "http://127.0.0.1:9"  # the edge unreachable for a moment
    with pytest.raises(aiohttp.ClientError):
        await laptop.unsend(conv["id"], sent["id"])
    assert (await bob.read(conv["id"]))["messages"] == []  # dm did unsend
    assert await fetch_code(bob, url, grant) == (206, "")
    laptop.edge_url = edge_url(dm)
    await laptop.unsend(conv["id"], sent["id"])  # the retry
    await wait_until(lambda: _is(fetch_code(bob, url, grant), (410, "grant_revoked")), 2)


async def _is(result: Any, expected: tuple[int, str]) -> bool:
    return bool(await result == expected)


@pytest.mark.parametrize("alice_uses", ["capability", "grant"])
async def test_a_resharers_capability_ends_when_its_source_is_unsent(
    dm: DmStack, alice_uses: str
) -> None:
    alice, bob, carol = (await sealed_user(dm), await sealed_user(dm), await sealed_user(dm))
    media, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    first = await alice.create_conversation([bob.uid], mode="sealed")
    second = await bob.create_conversation([carol.uid], mode="sealed")
    url = f"{edge_url(dm)}/m/{media.id}"
    sent = await alice.send_sealed(
        first["id"], edge_url=edge_url(dm), media_id=media.id, capability=alice_uses == "capability"
    )
    received = bob.open_message(await last_message(bob, first["id"])).grant or ""
    assert await fetch_code(bob, url, received) == (206, "")
    cap = await bob.obtain_capability(media.id, edge_url=edge_url(dm), via_grant=received)
    # A re-sharer's capability never outlives the grant it came through (so a member who
    # leaves keeps no more than the grant they received gave them).
    assert cap["expires_at"] <= tf.parse_unverified(received).exp
    await bob.send_sealed(second["id"], edge_url=edge_url(dm), media_id=media.id)
    reshared = carol.open_message(await last_message(carol, second["id"])).grant or ""
    assert cap_mod.is_derived(reshared)
    assert await fetch_code(carol, url, reshared) == (206, "")
    # Alice unsends (for a minted grant dm revokes it; for a derived one her client does).
    await alice.unsend(first["id"], sent["id"])
    await wait_until(
        lambda: _is(fetch_code(carol, url, reshared), (410, "capability_source_revoked")), 2
    )


async def test_resharing_a_derived_grant_goes_through_a_capability(dm: DmStack) -> None:
    """``send_sealed`` with a derived grant as ``via_grant`` obtains a capability on it
    (POST /v1/grants refuses one), so the re-share keeps the chain."""
    alice, bob, carol = (await sealed_user(dm), await sealed_user(dm), await sealed_user(dm))
    media, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    first = await alice.create_conversation([bob.uid], mode="sealed")
    second = await bob.create_conversation([carol.uid], mode="sealed")
    url = f"{edge_url(dm)}/m/{media.id}"
    await alice.send_sealed(first["id"], edge_url=edge_url(dm), media_id=media.id, capability=True)
    received = bob.open_message(await last_message(bob, first["id"])).grant or ""
    assert await fetch_code(bob, url, received) == (206, "")
    with pytest.raises(DmClientError) as refused:
        await bob.request_grant(edge_url(dm), media.id, 1, via_grant=received)
    assert (refused.value.status, refused.value.code) == (403, "share_not_allowed")
    await bob.send_sealed(second["id"], edge_url=edge_url(dm), media_id=media.id, via_grant=received)
    held = bob.capabilities.held(media.id)
    assert held is not None and held["sources"][0] == cap_mod.peek_derived(received).grant_id
    reshared = carol.open_message(await last_message(carol, second["id"])).grant or ""
    assert cap_mod.is_derived(reshared)
    assert await fetch_code(carol, url, reshared) == (206, "")


async def test_dm_refuses_a_derived_grant_id(dm: DmStack) -> None:
    """dm revokes the grant id a sealed message names on unsend; a derived grant has no
    record saying whose it is, so naming one (say, a recipient naming the grant it got,
    to have it revoked for everyone by unsending) is refused."""
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id, capability=True)
    derived = alice.derived_grant_of(conv["id"], sent["id"])
    assert derived is not None
    assert bob.open_message(await last_message(bob, conv["id"])).grant == derived.token
    grant_id = derived.grant_id
    assert bob.device_id is not None
    body = envelope.seal_body(
        conv["id"],
        bob.uid,
        bob.device_id,
        envelope.new_client_message_id(),
        envelope.Payload(None, None, "hi", envelope.new_franking_key()),
        {u: await bob.devices_of(u) for u in (alice.uid, bob.uid)},
    )
    body["grant_id"] = grant_id
    with pytest.raises(DmClientError) as info:
        await bob.request("POST", f"/v1/conversations/{conv['id']}/messages", json_body=body)
    assert (info.value.status, info.value.code) == (403, "forbidden")
