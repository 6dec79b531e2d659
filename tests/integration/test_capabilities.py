"""Share capabilities at the edge (docs/protocol.md, section 14): a holder derives grants
offline and the edge verifies them at the first fetch.  One test per attack the design
lists, plus the routes' own rules.  Real edges on real Redis (single and cluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from cdn_auth import redis_keys
from cdn_auth import token_format as tf
from cdn_auth.keyring import KeyRing
from cdn_auth.registry import MediaRegistry
from dm.identity import DevIssuer
from service_kernel.encoding import b64url_encode

from ..support.capabilities import (
    call,
    derive,
    fetch,
    forge_derived,
    issue,
    issued,
    revoked_at_edge,
)
from ..support.services import Edge, wait_until


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


async def _revoke(
    edge: Edge, method: str, path: str, session: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    status, doc = await call(edge, method, path, session, body)
    assert status == 200, doc
    await wait_until(lambda: revoked_at_edge(edge, doc["revocation_id"]), 5)
    return dict(doc)


async def test_derived_grant_opens_media_for_its_first_n_users(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=4)
    assert cap["holder"] == "alice" and cap["sources"] == []
    token, grant_id = derive(alice, cap, n=2)
    assert grant_id.startswith("d_")
    assert await fetch(edge, media.id, issuer.mint("bob"), token) == (206, "")
    assert await fetch(edge, media.id, issuer.mint("carol"), token) == (206, "")
    assert await fetch(edge, media.id, issuer.mint("bob", dev="d2"), token) == (206, "")
    assert await fetch(edge, media.id, issuer.mint("dave"), token) == (403, "grant_exhausted")
    # No grant was minted for the share: no grant record exists anywhere.
    assert [k async for k in edge.state.redis.scan_iter(match="cdn:grant:*")] == []


async def test_forged_holder_signature_is_refused(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice, mallory = _key(), _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    with pytest.raises(ValueError, match="another holder"):
        derive(mallory, cap)  # the SDK will not; a hand-built one is refused at the edge
    forged = forge_derived(mallory, cap["capability"], n=1)
    assert await fetch(edge, media.id, issuer.mint("mallory"), forged) == (403, "token_bad_signature")
    # Mallory's own capability (for her own key) cannot be re-pointed at alice's media.
    mine, _ = await edge.add_media(owner="mallory")
    own = await issued(edge, issuer.mint("mallory"), mine.id, mallory)
    token, _ = derive(mallory, own)
    assert await fetch(edge, media.id, issuer.mint("bob"), token) == (403, "grant_media_mismatch")


async def test_n_and_expiry_above_the_capability_are_refused(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=2, ttl_s=600)
    bob = issuer.mint("bob")
    assert await fetch(edge, media.id, bob, forge_derived(alice, cap["capability"], n=3)) == (
        403,
        "capability_bounds",
    )
    now = int(time.time())
    late = forge_derived(alice, cap["capability"], n=1, iat=now, exp=cap["expires_at"] + 60)
    assert await fetch(edge, media.id, bob, late) == (403, "capability_bounds")
    # A capability whose bounds the holder raised keeps the ring's old signature: refused.
    env = tf.parse_unverified(cap["capability"])
    assert await fetch(edge, media.id, bob, forge_derived(alice, cap["capability"], n=2)) == (206, "")
    raised = cap_mod.mint(
        ring.signer(),
        cap_id="c_raised",
        media_id=media.id,
        holder="alice",
        holder_key=alice.public_key().public_bytes_raw(),
        max_redeemers=1024,
        max_grants=10,
        now=now,
        ttl_s=600,
    )
    body = tf.parse_unverified(raised).signed[len(tf.SIGNING_CONTEXT) :]
    spliced = b64url_encode(body) + "." + b64url_encode(env.signature)
    assert await fetch(edge, media.id, bob, forge_derived(alice, spliced, n=5)) == (
        403,
        "token_bad_signature",
    )


async def test_max_grants_holds_under_concurrent_first_redemptions(
    edge: Edge, issuer: DevIssuer
) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_grants=3, max_redeemers=1)
    grants = [derive(alice, cap, n=1)[0] for _ in range(12)]
    users = [issuer.mint(f"u{i}") for i in range(12)]
    results = await asyncio.gather(
        *(fetch(edge, media.id, u, g) for u, g in zip(users, grants, strict=True))
    )
    assert sorted(results) == [(206, "")] * 3 + [(403, "capability_exhausted")] * 9
    won = [i for i, r in enumerate(results) if r[0] == 206]
    redis = edge.state.redis
    assert await redis.scard(redis_keys.capability_grants_key(cap["cap_id"])) == 3
    for i in won:  # the winners keep their grants; a repeat is not a new grant
        assert await fetch(edge, media.id, users[i], grants[i]) == (206, "")


async def test_concurrent_users_of_one_derived_grant_bind_exactly_n(
    edge: Edge, issuer: DevIssuer
) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    token, _ = derive(alice, cap, n=3)
    results = await asyncio.gather(
        *(fetch(edge, media.id, issuer.mint(f"u{i}"), token) for i in range(10))
    )
    assert sorted(results) == [(206, "")] * 3 + [(403, "grant_exhausted")] * 7


async def test_refused_redemptions_use_no_slot(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice", min_age=18)
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_grants=1)
    first, second = derive(alice, cap)[0], derive(alice, cap)[0]
    assert await fetch(edge, media.id, issuer.mint("kid", age=12), first) == (403, "age_restricted")
    assert await fetch(edge, media.id, issuer.mint("bob"), second) == (206, "")
    assert await fetch(edge, media.id, issuer.mint("carol"), first) == (403, "capability_exhausted")


async def test_derived_grant_replayed_after_capability_revocation(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    alice_s = issuer.mint("alice")
    cap = await issued(edge, alice_s, media.id, alice, max_redeemers=3)
    token, _ = derive(alice, cap, n=3)
    bob = issuer.mint("bob")
    assert await fetch(edge, media.id, bob, token) == (206, "")
    status, doc = await call(edge, "DELETE", f"/v1/capabilities/{cap['cap_id']}", issuer.mint("mallory"))
    assert (status, doc["error"]["code"]) == (403, "forbidden")
    await _revoke(edge, "DELETE", f"/v1/capabilities/{cap['cap_id']}", alice_s)
    assert await fetch(edge, media.id, bob, token) == (410, "capability_revoked")  # bound
    assert await fetch(edge, media.id, issuer.mint("carol"), token) == (410, "capability_revoked")
    assert await fetch(edge, media.id, bob, derive(alice, cap)[0]) == (410, "capability_revoked")
    status, doc = await call(edge, "DELETE", "/v1/capabilities/c_nothing", alice_s)
    assert (status, doc["error"]["code"]) == (404, "capability_not_found")


async def test_one_derived_grant_is_revoked_by_its_holder_only(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    (one, one_id), (other, _) = derive(alice, cap), derive(alice, cap)
    path = f"/v1/grants/{one_id}"
    status, doc = await call(edge, "DELETE", path, issuer.mint("bob"), {"grant": one})
    assert (status, doc["error"]["code"]) == (403, "forbidden")
    status, doc = await call(edge, "DELETE", path, issuer.mint("alice"), {"grant": other})
    assert (status, doc["error"]["code"]) == (400, "invalid_field")
    await _revoke(edge, "DELETE", path, issuer.mint("alice"), {"grant": one})
    assert await fetch(edge, media.id, issuer.mint("bob"), one) == (410, "grant_revoked")
    assert await fetch(edge, media.id, issuer.mint("bob"), other) == (206, "")


async def test_capability_for_another_media_is_refused(edge: Edge, issuer: DevIssuer) -> None:
    mine, _ = await edge.add_media(owner="alice")
    theirs, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), mine.id, alice)
    token, _ = derive(alice, cap)
    assert await fetch(edge, theirs.id, issuer.mint("bob"), token) == (403, "grant_media_mismatch")
    # nor does a grant for one media prove receipt of another
    assert await fetch(edge, mine.id, issuer.mint("bob"), token) == (206, "")
    status, doc = await issue(edge, issuer.mint("bob"), theirs.id, _key(), via_grant=token)
    assert (status, doc["error"]["code"]) == (403, "grant_media_mismatch")


async def test_a_capability_is_not_a_grant_nor_a_pointer(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    assert await fetch(edge, media.id, issuer.mint("bob"), cap["capability"]) == (
        403,
        "token_wrong_type",
    )
    token, _ = derive(alice, cap)
    async with edge.client.get(
        f"/m/{media.id}",
        params={"pointer": token},
        headers={"Authorization": f"Bearer {issuer.mint('bob')}"},
    ) as r:
        assert r.status == 403


async def test_only_who_may_share_gets_a_capability(
    edge: Edge, issuer: DevIssuer, make_edge: Any
) -> None:
    media, _ = await edge.add_media(owner="alice", allow_reshare=True, min_age=18)
    status, doc = await issue(edge, issuer.mint("bob"), media.id, _key())
    assert (status, doc["error"]["code"]) == (403, "share_not_allowed")  # no proof of receipt
    status, doc = await issue(edge, issuer.mint("alice", age=12), media.id, _key())
    assert (status, doc["error"]["code"]) == (403, "age_restricted")
    status, doc = await call(
        edge,
        "POST",
        "/v1/capabilities",
        issuer.mint("alice"),
        {"media_id": media.id, "holder_key": "AAAA"},
    )
    assert (status, doc["error"]["code"]) == (400, "invalid_field")
    status, doc = await issue(edge, issuer.mint("alice"), media.id, _key(), max_grants=0)
    assert (status, doc["error"]["code"]) == (400, "invalid_field")
    status, doc = await issue(edge, issuer.mint("alice"), media.id, _key(), ttl_s=10**6)
    assert (status, doc["error"]["code"]) == (400, "invalid_field")
    verify_only = await make_edge(keyring_dir=None)
    status, doc = await issue(verify_only, issuer.mint("alice"), media.id, _key())
    assert (status, doc["error"]["code"]) == (503, "minting_disabled")


async def _reshare_chain(edge: Edge, issuer: DevIssuer, media_id: str) -> dict[str, Any]:
    """alice (owner) shares with bob by a derived grant; bob fetches, takes a capability
    through it, and shares with carol by a grant derived from his."""
    alice, bob = _key(), _key()
    cap_a = await issued(edge, issuer.mint("alice"), media_id, alice)
    d1, d1_id = derive(alice, cap_a)
    assert await fetch(edge, media_id, issuer.mint("bob"), d1) == (206, "")
    cap_b = await issued(edge, issuer.mint("bob"), media_id, bob, via_grant=d1)
    assert cap_b["sources"] == [d1_id, cap_a["cap_id"]]
    d2, _ = derive(bob, cap_b)
    assert await fetch(edge, media_id, issuer.mint("carol"), d2) == (206, "")
    return {"cap_a": cap_a, "d1": d1, "d1_id": d1_id, "cap_b": cap_b, "d2": d2, "bob": bob}


@pytest.mark.parametrize("revoke", ["derived_grant", "capability"])
async def test_a_revoked_source_is_honoured_nowhere(edge: Edge, issuer: DevIssuer, revoke: str) -> None:
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    c = await _reshare_chain(edge, issuer, media.id)
    # Before: bob's proof is checked on both routes; POST /v1/grants then refuses it (a
    # minted grant would drop the chain: a derived grant is re-shared by capability).
    status, doc = await call(
        edge,
        "POST",
        "/v1/grants",
        issuer.mint("bob"),
        {"media_id": media.id, "redeemers": 1, "via_grant": c["d1"]},
    )
    assert (status, doc["error"]["code"]) == (403, "share_not_allowed")
    if revoke == "derived_grant":  # alice unsends: her client revokes the derived grant
        await _revoke(
            edge, "DELETE", f"/v1/grants/{c['d1_id']}", issuer.mint("alice"), {"grant": c["d1"]}
        )
        source_code = "grant_revoked"
    else:
        await _revoke(edge, "DELETE", f"/v1/capabilities/{c['cap_a']['cap_id']}", issuer.mint("alice"))
        source_code = "capability_revoked"
    bob_s, carol_s = issuer.mint("bob"), issuer.mint("carol")
    assert await fetch(edge, media.id, bob_s, c["d1"]) == (410, source_code)
    # carol, already bound to bob's re-share, and anyone new: refused
    assert await fetch(edge, media.id, carol_s, c["d2"]) == (410, "capability_source_revoked")
    fresh, _ = derive(c["bob"], c["cap_b"])
    assert await fetch(edge, media.id, issuer.mint("dave"), fresh) == (410, "capability_source_revoked")
    # and the revoked proof makes no new capability, nor a new grant
    status, doc = await issue(edge, bob_s, media.id, _key(), via_grant=c["d1"])
    assert (status, doc["error"]["code"]) == (410, source_code)
    status, doc = await call(
        edge, "POST", "/v1/grants", bob_s, {"media_id": media.id, "redeemers": 1, "via_grant": c["d1"]}
    )
    assert (status, doc["error"]["code"]) == (410, source_code)


async def test_revoked_resharer_may_not_ask_again_on_the_same_proof_unless_it_revoked(
    edge: Edge, issuer: DevIssuer
) -> None:
    """The owner's revocation of bob's re-share capability is remembered against bob and
    the grant it was issued on (bob still views with that grant); bob revoking his own
    capability may ask again."""
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    c = await _reshare_chain(edge, issuer, media.id)
    bob_s = issuer.mint("bob")
    own = await issued(edge, bob_s, media.id, _key(), via_grant=c["d1"])
    await _revoke(edge, "DELETE", f"/v1/capabilities/{own['cap_id']}", bob_s)
    again = await issued(edge, bob_s, media.id, _key(), via_grant=c["d1"])  # his own choice
    await _revoke(edge, "DELETE", f"/v1/capabilities/{again['cap_id']}", issuer.mint("alice"))
    status, doc = await issue(edge, bob_s, media.id, _key(), via_grant=c["d1"])
    assert (status, doc["error"]["code"]) == (403, "share_not_allowed")
    assert await fetch(edge, media.id, bob_s, c["d1"]) == (206, "")  # he still views it


async def test_revoked_minted_grant_ends_the_capability_made_from_it(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    status, g = await call(
        edge, "POST", "/v1/grants", issuer.mint("alice"), {"media_id": media.id, "redeemers": 1}
    )
    assert status == 201
    bob_s, bob = issuer.mint("bob"), _key()
    assert await fetch(edge, media.id, bob_s, g["grant"]) == (206, "")
    cap = await issued(edge, bob_s, media.id, bob, via_grant=g["grant"])
    # A re-sharer's capability never outlives the grant it came through.
    assert cap["sources"] == [g["grant_id"]] and cap["expires_at"] <= g["expires_at"]
    token, _ = derive(bob, cap)
    assert await fetch(edge, media.id, issuer.mint("carol"), token) == (206, "")
    await _revoke(edge, "DELETE", f"/v1/grants/{g['grant_id']}", issuer.mint("alice"))
    assert await fetch(edge, media.id, issuer.mint("carol"), token) == (410, "capability_source_revoked")


async def test_resharer_who_never_redeemed_gets_no_capability(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    d1, _ = derive(alice, cap)
    status, doc = await issue(edge, issuer.mint("bob"), media.id, _key(), via_grant=d1)
    assert (status, doc["error"]["code"]) == (403, "share_not_allowed")


async def test_capability_of_a_user_who_lost_reshare_rights(make_edge: Any, issuer: DevIssuer) -> None:
    edge = await make_edge(media_cache_ttl_s=0)
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    c = await _reshare_chain(edge, issuer, media.id)
    # The owner switches re-sharing off: read at every redemption, not only at issue.
    await MediaRegistry(edge.state.redis).put(dataclasses.replace(media, allow_reshare=False))
    assert await fetch(edge, media.id, issuer.mint("carol"), c["d2"]) == (403, "share_not_allowed")
    assert await fetch(edge, media.id, issuer.mint("dave"), derive(c["bob"], c["cap_b"])[0]) == (
        403,
        "share_not_allowed",
    )
    # The owner's own capability is unaffected.
    assert await fetch(edge, media.id, issuer.mint("bob"), c["d1"]) == (206, "")
    status, doc = await issue(edge, issuer.mint("bob"), media.id, _key(), via_grant=c["d1"])
    assert (status, doc["error"]["code"]) == (403, "share_not_allowed")


async def test_takedown_ends_every_derived_grant(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    token, _ = derive(alice, cap)
    assert await fetch(edge, media.id, issuer.mint("bob"), token) == (206, "")
    status, doc = await call(
        edge, "POST", "/v1/takedowns", issuer.mint("mod", roles=["moderator"]), {"media_id": media.id}
    )
    assert status == 200
    await wait_until(lambda: revoked_at_edge(edge, doc["revocation_id"]), 5)
    assert await fetch(edge, media.id, issuer.mint("bob"), token) == (410, "media_taken_down")
    status, doc = await issue(edge, issuer.mint("alice"), media.id, _key())
    assert (status, doc["error"]["code"]) == (410, "media_taken_down")


async def test_owner_and_moderator_may_revoke_a_resharers_capability(
    edge: Edge, issuer: DevIssuer
) -> None:
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    c = await _reshare_chain(edge, issuer, media.id)
    await _revoke(edge, "DELETE", f"/v1/capabilities/{c['cap_b']['cap_id']}", issuer.mint("alice"))
    assert await fetch(edge, media.id, issuer.mint("carol"), c["d2"]) == (410, "capability_revoked")
    c2 = await _reshare_chain(edge, issuer, media.id)
    await _revoke(
        edge,
        "DELETE",
        f"/v1/capabilities/{c2['cap_b']['cap_id']}",
        issuer.mint("mod", roles=["moderator"]),
    )
    assert await fetch(edge, media.id, issuer.mint("carol"), c2["d2"]) == (410, "capability_revoked")


async def test_retiring_the_ring_key_ends_its_capabilities(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """A derived grant verified (and cached) under a key is refused once the key leaves
    the JWKS: the edge drops its derived-grant cache on a retirement."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    token, _ = derive(alice, cap)
    bob = issuer.mint("bob")
    assert await fetch(edge, media.id, bob, token) == (206, "")
    ring = ring.add().switch()
    _, gone = ring.retire(60, now=time.time() + 3600)
    assert gone

    async def refused() -> bool:  # the edge re-reads its JWKS about once a second
        return await fetch(edge, media.id, bob, token) == (403, "token_unknown_key")

    await wait_until(refused, 5)
    fresh = await issued(edge, issuer.mint("alice"), media.id, alice)  # the new key signs
    assert await fetch(edge, media.id, bob, derive(alice, fresh)[0]) == (206, "")


async def test_a_capability_is_verified_once_for_all_its_shares(edge: Edge, issuer: DevIssuer) -> None:
    """Every share derived from one capability carries the same capability bytes: the edge
    checks the ring's signature on them once and then only each share's holder signature."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=1)
    registry = edge.state.metrics.registry

    def lookups(result: str) -> float:
        value = registry.get_sample_value(
            "cdn_auth_cache_lookups_total", {"cache": "capability", "result": result}
        )
        return value or 0.0

    for reader in ("bob", "carol", "dave"):
        token, _ = derive(alice, cap, n=1)
        assert await fetch(edge, media.id, issuer.mint(reader), token) == (206, "")
    assert (lookups("miss"), lookups("hit")) == (1, 2)
    # A forged holder signature is still refused with the capability cached.
    forged = forge_derived(_key(), cap["capability"], n=1)  # not the holder's key
    assert (await fetch(edge, media.id, issuer.mint("erin"), forged))[0] == 403
