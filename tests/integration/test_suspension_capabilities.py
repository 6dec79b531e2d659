"""A suspended user makes no new shares, online or offline.

Suspension already refused a user's sends, media registrations, grants and new share
capabilities; a capability the user held before it still let their device derive grants
offline, redeemable by anyone they passed them to until it expired (up to
``max_capability_lifetime_s``, 6 h by default).  The suspension now revokes every
capability the user holds (``capability_revoked``, section 14.5 of docs/protocol.md).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import redis_keys
from dm.client import DmClient

from ..support import capabilities
from ..support.capabilities import fetch_code, last_message
from ..support.sealed import edge_url, sealed_user
from ..support.services import DmStack, wait_until


async def _suspend(mod: DmClient, reporter: DmClient, offender: DmClient) -> None:
    """``offender`` sends ``reporter`` an abusive plain message, ``reporter`` reports it and
    ``mod`` takes the suspend_user action on the report."""
    conv = await offender.create_conversation([reporter.uid])
    mid = (await offender.send(conv["id"], text="abuse"))["id"]
    await reporter.report(conv["id"], mid)
    items = (await mod.request("GET", "/v1/moderation/queue"))["items"]
    [item] = [i for i in items if i.get("message_id") == mid or mid in str(i)]
    await mod.request(
        "POST", f"/v1/moderation/items/{item['id']}/actions", json_body={"action": "suspend_user"}
    )


async def _is(coro: Any, want: tuple[int, str]) -> bool:
    return bool(await coro == want)


async def test_suspension_ends_the_capabilities_the_user_holds(dm: DmStack, redis: Any) -> None:
    alice, bob, carol = await sealed_user(dm), await sealed_user(dm), await sealed_user(dm)
    mod = await dm.user(roles=["moderator"])
    media, _ = await dm.edge.add_media(owner=alice.uid)
    other, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    await alice.obtain_capability(other.id, edge_url=edge_url(dm))
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    shared = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    url = f"{edge_url(dm)}/m/{media.id}"
    assert await fetch_code(bob, url, shared) == (206, "")
    listed = await redis.zrange(redis_keys.held_tokens_key(alice.uid), 0, -1)
    assert len(listed) == 2

    await _suspend(mod, carol, alice)

    # A grant alice's device derives offline after the suspension, handed to carol outside dm.
    offline = alice.capabilities.derive(other.id, 1)
    assert offline is not None
    other_url = f"{edge_url(dm)}/m/{other.id}"
    await wait_until(
        lambda: _is(fetch_code(carol, other_url, offline.token), (410, "capability_revoked")), 5
    )
    # As for any revoked capability, grants derived before it end too.
    await wait_until(lambda: _is(fetch_code(bob, url, shared), (410, "capability_revoked")), 5)
    # And no new capability (the suspension was already refused there).
    status, doc = await capabilities.issue(
        dm.edge, alice.session_token or "", media.id, Ed25519PrivateKey.generate()
    )
    assert (status, doc["error"]["code"]) == (403, "user_suspended")


async def test_a_capability_issued_to_a_suspended_user_is_never_handed_out(
    dm: DmStack, redis: Any
) -> None:
    """The issue lists the capability under its holder, then checks the suspension again: a
    suspension written between the request's first check and the listing is still seen."""
    alice = await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    suspended = dm.edge.state.suspended
    calls = 0
    refuse = suspended.refuse

    async def suspended_meanwhile(user_id: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the check after the listing: the suspension landed in between
            await redis.hset(redis_keys.SUSPENDED_USERS, user_id, "{}")
        await refuse(user_id)

    suspended.refuse = suspended_meanwhile  # type: ignore[method-assign]
    try:
        status, doc = await capabilities.issue(
            dm.edge, alice.session_token or "", media.id, Ed25519PrivateKey.generate()
        )
    finally:
        suspended.refuse = refuse  # type: ignore[method-assign]
    assert calls == 2
    assert (status, doc["error"]["code"]) == (403, "user_suspended")
    # It is listed: a suspension that read the list after the listing would revoke it.
    assert len(await redis.zrange(redis_keys.held_tokens_key(alice.uid), 0, -1)) == 1


async def test_the_held_list_drops_expired_tokens_and_never_shortens_its_life(
    dm: DmStack, redis: Any
) -> None:
    alice = await sealed_user(dm)
    store = dm.edge.state.grants
    key = redis_keys.held_tokens_key(alice.uid)
    await store.record_held(alice.uid, "c_old", 1_000, now_s=500)
    await store.record_held(alice.uid, "c_later", 1_000_000_000, now_s=500)
    await store.record_held(alice.uid, "c_new", 2_000_000_000, now_s=1_500)
    assert await redis.zrange(key, 0, -1) == ["c_new"]
    # Scored and kept with slack: edges honour tokens by their own clocks.
    assert await redis.expiretime(key) == 2_000_000_000 + redis_keys.HELD_SLACK_S
