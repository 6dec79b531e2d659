"""Red-team, round 2: the capability verification cache and key retirement.

Each finding's test asserts the safe behaviour (it fails while the finding is real);
the guard tests pin attacks that held.  Real edges on real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from dm.client import DmClient
from dm.identity import JWKS_FILE, DevIssuer
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
from ..support.services import DmStack, Edge, bearer, wait_until
from ..support.streams import pushes_after_a_send


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


async def _is(value: Any, expected: object) -> bool:
    return bool(await value == expected)


def _republish_with_other_material(ring_dir: Path) -> None:
    """Every kid of the edge's verify JWKS stays, with another Ed25519 public key (an
    operator re-keying a compromised kid in place); written and renamed, as rotation does."""
    path = ring_dir / VERIFY_JWKS_FILE
    doc: dict[str, Any] = json.loads(path.read_text())
    for jwk in doc["keys"]:
        assert jwk["kty"] == "OKP"
        jwk["x"] = b64url_encode(_key().public_key().public_bytes_raw())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


# --- Findings -------------------------------------------------------------------------


async def test_ring_kid_republished_with_other_material_ends_cached_capabilities(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """Finding: the edge counts a ring-key retirement only when a kid *leaves* the JWKS
    (Authorizer._on_keys compares kid names).  A kid republished with other key material
    (the session JWKS treats that as a retirement, commit 81c3de8) leaves every derived
    grant, capability, pointer and grant verified under the old material in the caches:
    the holder of a share fetched once keeps fetching, while the same token would fail a
    fresh verification."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cached_cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=4)
    cached, _ = derive(alice, cached_cap, n=4)
    bob = issuer.mint("bob")
    assert await fetch(edge, media.id, bob, cached) == (206, "")  # verified and cached

    _republish_with_other_material(ring.path)

    async def reloaded() -> bool:
        # A capability the edge signs now (its signer still holds the old material) and
        # nobody fetched before: refused once the edge verifies with the new keys.
        probe_cap = await issued(edge, issuer.mint("alice"), media.id, alice)
        probe, _ = derive(alice, probe_cap)
        return await fetch(edge, media.id, issuer.mint("carol"), probe) == (403, "token_bad_signature")

    await wait_until(reloaded, 5)
    # The share verified under the old material must fail too, for anyone.
    assert (await fetch(edge, media.id, bob, cached))[0] == 403
    assert (await fetch(edge, media.id, issuer.mint("dave"), cached))[0] == 403


async def test_held_websocket_ends_when_its_session_kid_is_republished_with_other_material(
    dm: DmStack, issuer: DevIssuer, tmp_path: Path
) -> None:
    """Finding: dm's held-socket check (DmState.session_key_retired) asks only whether the
    session's kid is still *named* in the JWKS.  A kid republished with other key material
    is a retirement (JwksSource drops cached sessions for it, commit 81c3de8), yet a socket
    opened under the old material keeps receiving pushes, each minting a fresh pointer."""
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    assert bob.session_token is not None
    async with bob.http.ws_connect(dm.dm_url + "/v1/stream", headers=bearer(bob.session_token)) as ws:
        await alice.send(conv["id"], text="before")
        while True:  # the socket works: the message arrives
            event = await ws.receive_json(timeout=10)
            if event.get("type") == "message":
                break
        # The same kid, other key material: every session signed before is retired.
        successor = DevIssuer(_key(), issuer.kid, issuer=issuer.issuer, audience=issuer.audience)
        successor.write_jwks(tmp_path / "session-keys" / JWKS_FILE)
        alice2 = DmClient(dm.dm_url, session_token=successor.mint(alice.uid), http=alice.http)

        pushed, msg = await pushes_after_a_send(ws, alice2, conv["id"])
        assert not any('"after"' in p for p in pushed), pushed
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.POLICY_VIOLATION)


async def test_owner_revocation_ends_a_resharers_capabilities_minted_earlier_on_the_same_proof(
    edge: Edge, issuer: DevIssuer
) -> None:
    """Finding: the re-issue denial (cdn:cap:denied:{source}) only stops capabilities asked
    for *after* the owner's revocation.  A re-sharer who minted a second capability on the
    same proof beforehand keeps re-sharing with it, although protocol 14.5 says he "may
    re-share only through another proof"; the owner has no list of a holder's capabilities
    to find the sibling, and revoking the proof also cuts the holder's (and others') viewing."""
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    alice, bob = _key(), _key()
    cap_a = await issued(edge, issuer.mint("alice"), media.id, alice)
    d1, _ = derive(alice, cap_a, n=3)
    bob_s = issuer.mint("bob")
    assert await fetch(edge, media.id, bob_s, d1) == (206, "")
    seen = await issued(edge, bob_s, media.id, bob, via_grant=d1)  # the one alice finds
    spare = await issued(edge, bob_s, media.id, bob, via_grant=d1)  # kept in reserve
    status, doc = await call(edge, "DELETE", f"/v1/capabilities/{seen['cap_id']}", issuer.mint("alice"))
    assert status == 200, doc
    await wait_until(lambda: revoked_at_edge(edge, doc["revocation_id"]), 5)
    assert (await issue(edge, bob_s, media.id, bob, via_grant=d1))[0] == 403  # the fix held
    assert await fetch(edge, media.id, bob_s, d1) == (206, "")  # bob still views by the proof
    token, _ = derive(bob, spare)
    assert (await fetch(edge, media.id, issuer.mint("carol"), token))[0] in (403, 410)


async def test_capability_issued_during_a_revocation_is_revoked_or_refused(
    edge: Edge, issuer: DevIssuer
) -> None:
    """Guard for the fix above: capabilities asked for on the same proof while the owner's
    revocation runs are each either refused (403) or revoked with it; none escapes.  The
    issue records its id and checks the denial in one script on the proof's slot, and the
    revocation denies and reads the ids in one script on that slot."""
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    alice, bob = _key(), _key()
    cap_a = await issued(edge, issuer.mint("alice"), media.id, alice)
    d1, _ = derive(alice, cap_a, n=3)
    bob_s = issuer.mint("bob")
    assert await fetch(edge, media.id, bob_s, d1) == (206, "")
    seen = await issued(edge, bob_s, media.id, bob, via_grant=d1)
    revoke = call(edge, "DELETE", f"/v1/capabilities/{seen['cap_id']}", issuer.mint("alice"))
    asks = [issue(edge, bob_s, media.id, bob, via_grant=d1) for _ in range(8)]
    (status, doc), *answers = await asyncio.gather(revoke, *asks)
    assert status == 200, doc
    assert all(code in (201, 403) for code, _ in answers), answers
    await wait_until(lambda: revoked_at_edge(edge, doc["revocation_id"]), 5)
    for code, cap in answers:
        if code == 201:
            token, _ = derive(bob, cap)
            assert (await fetch(edge, media.id, issuer.mint("carol"), token))[0] in (403, 410)
    # The two orders, one after the other: ids recorded before a denial are returned by it;
    # an id recorded after it is refused.
    grants, source = edge.state.grants, "g_" + "A" * 22
    assert await grants.record_issued(source, "dave", "c_1", int(time.time()) + 600)
    assert await grants.deny_reissue(source, "dave", int(time.time()) + 600) == {"c_1"}
    assert not await grants.record_issued(source, "dave", "c_2", int(time.time()) + 600)
    assert await grants.record_issued(source, "erin", "c_3", int(time.time()) + 600)


async def test_a_retirement_written_in_place_after_a_torn_read_is_not_lost(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """Finding (low): ReloadingFile remembers a bad version by (inode, mtime, size) and
    never reads that stamp again.  A JWKS rewritten in place (same inode) whose torn
    intermediate state the edge happened to read has the same size and, within one
    coarse mtime tick (Linux stamps mtime from a jiffy clock; simulated here with utime),
    the same mtime as the finished file: the finished retirement is then never loaded and
    the retired key is honoured until the file changes again.  Before d9dd5fd a failed
    read was simply retried."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    old_cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=9)
    old_kid = ring.signing_kid
    ring = ring.add().switch()  # published by rename: the edge loads both keys
    keyset = edge.state.authorizer._keys
    await wait_until(lambda: len(keyset.keys) == 2, 5)
    path = ring.path / VERIFY_JWKS_FILE
    doc = json.loads(path.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["kid"] != old_kid]
    good = json.dumps(doc).encode()
    torn = good[:-1] + b" "  # the last block not yet written: same size, not JSON
    with path.open("r+b") as f:  # in place, as a careless tool writes
        f.write(torn)
        f.truncate()
    torn_stamp = os.stat(path)
    await wait_until(lambda: keyset._file.failed_stamp is not None, 5)  # the edge read it
    with path.open("r+b") as f:
        f.write(good)
    os.utime(path, ns=(torn_stamp.st_atime_ns, torn_stamp.st_mtime_ns))  # the same tick

    async def retired() -> bool:
        token, _ = derive(alice, old_cap)
        return await fetch(edge, media.id, issuer.mint("bob"), token) == (403, "token_unknown_key")

    await wait_until(retired, 5)


# --- Guards (attacks that held) -------------------------------------------------------


async def test_guard_cached_capability_does_not_outlive_its_revocation(
    edge: Edge, issuer: DevIssuer
) -> None:
    """A capability cached by one share's fetch: a new share derived from it after the
    capability is revoked is refused (revocation is checked per request, not cached)."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=4)
    first, _ = derive(alice, cap)
    assert await fetch(edge, media.id, issuer.mint("bob"), first) == (206, "")
    status, doc = await call(edge, "DELETE", f"/v1/capabilities/{cap['cap_id']}", issuer.mint("alice"))
    assert status == 200, doc
    await wait_until(lambda: revoked_at_edge(edge, doc["revocation_id"]), 5)
    later, _ = derive(alice, cap)  # derived offline after the revocation
    assert await fetch(edge, media.id, issuer.mint("carol"), later) == (410, "capability_revoked")
    assert await fetch(edge, media.id, issuer.mint("bob"), first) == (410, "capability_revoked")


async def test_guard_cached_capability_cannot_be_spliced_to_other_media_or_holder(
    edge: Edge, issuer: DevIssuer
) -> None:
    """With alice's capability cached, mallory cannot reuse its bytes under her own holder
    key, nor splice her own (verified, cached) capability onto alice's media."""
    media, _ = await edge.add_media(owner="alice")
    alice, mallory = _key(), _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=4)
    assert await fetch(edge, media.id, issuer.mint("bob"), derive(alice, cap)[0]) == (206, "")
    forged = forge_derived(mallory, cap["capability"], n=1)
    assert await fetch(edge, media.id, issuer.mint("mallory"), forged) == (403, "token_bad_signature")
    own_media, _ = await edge.add_media(owner="mallory")
    own = await issued(edge, issuer.mint("mallory"), own_media.id, mallory)
    assert await fetch(edge, own_media.id, issuer.mint("bob"), derive(mallory, own)[0]) == (206, "")
    token, _ = derive(mallory, own)
    assert await fetch(edge, media.id, issuer.mint("bob"), token) == (403, "grant_media_mismatch")


async def test_guard_edge_drops_sessions_of_a_kid_republished_with_other_material(
    edge: Edge, issuer: DevIssuer, tmp_path: Path
) -> None:
    """The edge's session cache does end on a session kid republished with other material:
    a cached session of the old material gets 401 on its next media read."""
    media, _ = await edge.add_media(owner="alice")
    old = issuer.mint("alice")

    async def read(session: str) -> int:
        headers = {**bearer(session), "Range": "bytes=0-9"}
        async with edge.client.get(f"/m/{media.id}", headers=headers) as r:
            await r.read()
            return r.status

    assert await read(old) == 206  # verified and cached
    successor = DevIssuer(_key(), issuer.kid, issuer=issuer.issuer, audience=issuer.audience)
    successor.write_jwks(tmp_path / "session-keys" / JWKS_FILE)
    fresh = successor.mint("alice")
    await wait_until(lambda: _is(read(fresh), 206), 5)
    assert await read(old) == 401


async def test_guard_ring_retirement_ends_a_cached_capability_for_new_shares(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """The capability cache, not only the derived-grant cache, ends on a retirement: a share
    derived after the key left the JWKS from a capability verified (and cached) before is
    refused, although its holder signature is good."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice, max_redeemers=9)
    assert await fetch(edge, media.id, issuer.mint("bob"), derive(alice, cap)[0]) == (206, "")
    ring = ring.add().switch()
    _, gone = ring.retire(60, now=time.time() + 3600)
    assert gone

    async def refused() -> bool:  # each poll a share the edge has never seen
        token, _ = derive(alice, cap)
        return await fetch(edge, media.id, issuer.mint("carol"), token) == (403, "token_unknown_key")

    await wait_until(refused, 5)
