"""Red-team review of share capabilities and the restructured plumbing, as an attacker.

The edge's promise: only a *current* recipient, under the *current* rules, gets the bytes,
and a revocation outlives every way to obtain or honour a token.  Each test is named after
a finding and asserts the safe behaviour, so it fails while the finding is real; the last
tests guard attacks the code already resists.  Real edges, dm and Redis (single and
cluster); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import grant as grant_mod
from cdn_auth.capability import is_derived
from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.token_format import Alg
from dm import envelope
from dm.client import DmClient, DmClientError
from dm.identity import JWKS_FILE, DevIssuer
from service_kernel.encoding import b64url_encode
from service_kernel.files import atomic_write

from ..support.capabilities import (
    call,
    derive,
    fetch,
    fetch_code,
    forge_derived,
    issue,
    issued,
    last_message,
    revoked_at_edge,
)
from ..support.sealed import edge_url, sealed_user
from ..support.services import DmStack, Edge, EdgeFactory, bearer, wait_until


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


async def _revoke(edge: Edge, path: str, session: str, body: dict[str, Any] | None = None) -> None:
    status, doc = await call(edge, "DELETE", path, session, body)
    assert status == 200, doc
    await wait_until(lambda: revoked_at_edge(edge, doc["revocation_id"]), 5)


async def _get(edge: Edge, media_id: str, session: str, **headers: str) -> int:
    async with edge.client.get(
        f"/m/{media_id}", headers={**bearer(session), "Range": "bytes=0-9", **headers}
    ) as r:
        await r.read()
        return r.status


# --- Findings (each fails while the finding is real) ------------------------------------


async def test_retired_session_key_ends_sessions_the_edge_already_cached(
    edge: Edge, issuer: DevIssuer
) -> None:
    """Finding: the edge caches a verified session per token until the session's own
    ``exp`` (up to 24 h) and never drops that cache when the identity provider's JWKS
    loses a key.  Pointer, grant and derived-grant caches are cleared on a retirement;
    the session cache is not, so a session signed by a retired (e.g. compromised) key
    keeps fetching for hours after every verifier has stopped trusting the key."""
    media, _ = await edge.add_media(owner="alice")
    cached = issuer.mint("alice")
    assert await _get(edge, media.id, cached) == 206  # verified once, now cached
    # The identity provider retires its key: the JWKS now holds only a new one.
    successor = DevIssuer.generate()
    successor.write_jwks(edge.tmp / "session-keys" / JWKS_FILE)
    # The edge picks the new key set up (an unknown kid re-reads it, at most every 5 s).
    await wait_until(lambda: _get_ok(edge, media.id, successor.mint("alice")), 15, 0.5)
    # A session of the retired key the edge has not seen before: refused, as it should be.
    assert await _get(edge, media.id, issuer.mint("alice", dev="d2")) == 401
    # The one it had cached must be refused too.
    assert await _get(edge, media.id, cached) == 401


async def _get_ok(edge: Edge, media_id: str, session: str) -> bool:
    return await _get(edge, media_id, session) == 206


async def test_retired_session_key_ends_sessions_dm_already_cached(dm: DmStack, tmp_path: Path) -> None:
    """The same finding in dm (its ``CachedLookup`` of sessions is never cleared on a
    JWKS change): a session of a retired key keeps reading, sending and, through reads
    and pushes, getting fresh pointers until it expires."""
    alice = await dm.user()
    await alice.request("GET", "/v1/conversations")  # verified once, now cached
    successor = DevIssuer.generate()
    successor.write_jwks(tmp_path / "session-keys" / JWKS_FILE)
    fresh = DmClient(dm.dm_url, session_token=successor.mint("alice2"), http=alice.http)

    async def new_key_in_use() -> bool:
        try:
            await fresh.request("GET", "/v1/conversations")
        except DmClientError:
            return False
        return True

    await wait_until(new_key_in_use, 15, 0.5)
    with pytest.raises(DmClientError) as refused:
        await alice.request("GET", "/v1/conversations")
    assert refused.value.status == 401


async def test_resharer_cannot_escape_a_revoked_source_through_a_minted_grant(
    edge: Edge, issuer: DevIssuer
) -> None:
    """Finding: section 14.5 says revoking the capability a re-sharer received the media
    through ends the re-sharer's capability (its ``sources`` name the chain).  But the
    re-sharer can launder the chain in two requests: ``POST /v1/grants`` with the derived
    grant as ``via_grant`` mints a *minted* grant (not cut to the derived grant's expiry,
    no chain recorded), the re-sharer redeems it himself, and ``POST /v1/capabilities``
    with that minted grant gives a capability whose only source is the laundered grant.
    Revoking the owner's capability then ends nothing of it, and it lives 6 h however
    short the derived grant was."""
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    alice, bob = _key(), _key()
    alice_s, bob_s = issuer.mint("alice"), issuer.mint("bob")
    cap_a = await issued(edge, alice_s, media.id, alice)
    d1, _ = derive(alice, cap_a, ttl_s=600)  # bob gets a ten-minute share
    assert await fetch(edge, media.id, bob_s, d1) == (206, "")
    status, g = await call(
        edge, "POST", "/v1/grants", bob_s, {"media_id": media.id, "redeemers": 1, "via_grant": d1}
    )
    if status != 201:  # safe: no minted grant from a derived one (a capability keeps the chain)
        assert (status, g["error"]["code"]) == (403, "share_not_allowed"), g
        return
    assert await fetch(edge, media.id, bob_s, g["grant"]) == (206, "")  # bob redeems his own
    laundered = await issued(edge, bob_s, media.id, bob, via_grant=g["grant"])
    # alice revokes the capability bob's whole re-share right came from
    await _revoke(edge, f"/v1/capabilities/{cap_a['cap_id']}", alice_s)
    assert await fetch(edge, media.id, bob_s, d1) == (410, "capability_revoked")
    token, _ = derive(bob, laundered)
    code = await fetch(edge, media.id, issuer.mint("dave"), token)
    assert code[0] in (403, 410), code


@pytest.mark.parametrize("revoker", ["owner", "moderator"])
async def test_revoked_resharer_capability_is_not_reissued_on_the_same_proof(
    edge: Edge, issuer: DevIssuer, revoker: str
) -> None:
    """Finding: the owner (or a moderator) revokes a re-sharer's capability, and the
    re-sharer gets a fresh one at once with the very proof (``via_grant``) the revoked one
    was issued on: a capability revocation by anyone but its holder does not outlive one
    ``POST /v1/capabilities``.  (The only lasting lever, revoking the proof, also cuts the
    re-sharer's own viewing and every other recipient of that grant.)"""
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    alice = _key()
    cap_a = await issued(edge, issuer.mint("alice"), media.id, alice)
    d1, _ = derive(alice, cap_a, n=3)
    bob_s = issuer.mint("bob")
    assert await fetch(edge, media.id, bob_s, d1) == (206, "")
    cap_b = await issued(edge, bob_s, media.id, _key(), via_grant=d1)
    who = issuer.mint("alice") if revoker == "owner" else issuer.mint("mod", roles=["moderator"])
    await _revoke(edge, f"/v1/capabilities/{cap_b['cap_id']}", who)
    status, doc = await issue(edge, bob_s, media.id, _key(), via_grant=d1)
    assert status in (403, 410), doc


IDENTITY_POINT = bytes([1]) + bytes(31)  # order 1: R = identity, S = 0 verifies anything
ORDER_2_POINT = bytes([0xEC]) + bytes([0xFF]) * 30 + bytes([0x7F])


@pytest.mark.parametrize("point", [IDENTITY_POINT, ORDER_2_POINT], ids=["order1", "order2"])
async def test_small_order_holder_key_is_refused(edge: Edge, issuer: DevIssuer, point: bytes) -> None:
    """Finding: ``POST /v1/capabilities`` accepts any 32 bytes as ``holder_key``.  For a
    small-order point the holder signature check passes for *any* body with the signature
    R = the identity, S = 0 (the verifier is cofactorless and does not reject such keys),
    so every recipient of one derived grant can forge others from the capability inside:
    new grant ids (so revoking one derived grant revokes nothing), N up to the
    capability's, until ``max_grants``.  The route must refuse a small-order key."""
    media, _ = await edge.add_media(owner="alice")
    alice_s = issuer.mint("alice")
    status, doc = await call(
        edge,
        "POST",
        "/v1/capabilities",
        alice_s,
        {"media_id": media.id, "holder_key": b64url_encode(point)},
    )
    if status == 201 and point == IDENTITY_POINT:  # what a recipient gets: grants nobody signed
        forged = _forge_with_null_signature(doc["capability"], n=doc["max_redeemers"])
        assert await fetch(edge, media.id, issuer.mint("mallory"), forged) == (206, "")
    assert (status, doc.get("error", {}).get("code")) == (400, "invalid_field"), doc


def _forge_with_null_signature(capability: str, *, n: int) -> str:
    """A derived grant 'signed' R = identity, S = 0 (any message, for a small-order key)."""
    body_b64 = forge_derived(_key(), capability, n=n).partition(".")[0]
    return body_b64 + "." + b64url_encode(IDENTITY_POINT + bytes(32))


async def test_sdk_revoke_capability_retried_after_a_failure_still_revokes(dm: DmStack) -> None:
    """Finding: ``DmClient.revoke_capability`` forgets the capability *before* asking the
    edge to revoke it.  If that request fails (an edge unreachable for a moment, a 503),
    the wallet no longer holds it, and the caller's retry returns silently having revoked
    nothing: the capability, and every grant derived from it, stay live while the app
    believes them revoked.  (``unsend`` keeps a derived grant until its revocation
    succeeds; this path should do the same.)"""
    alice, bob = await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    derived = alice.capabilities.derive(media.id, 1)
    assert derived is not None
    url = f"{edge_url(dm)}/m/{media.id}"
    assert await fetch_code(bob, url, derived.token) == (206, "")
    with pytest.raises((aiohttp.ClientError, DmClientError)):
        await alice.revoke_capability(media.id, edge_url="http://127.0.0.1:9")  # a blip
    await alice.revoke_capability(media.id, edge_url=edge_url(dm))  # the retry

    async def refused() -> bool:
        return await fetch_code(bob, url, derived.token) == (410, "capability_revoked")

    await wait_until(refused, 5, 0.2)


async def test_unsend_from_the_senders_other_device_ends_a_derived_grant_share(dm: DmStack) -> None:
    """Finding: a sealed share whose grant was derived from a capability is revoked on
    unsend only by the very client object that derived it (``DmClient._derived_sent``, in
    memory).  Unsent from the sender's other device (or after the app restarted) dm
    accepts the unsend, every recipient keeps fetching for the grant's whole life (6 h by
    default), and the documented way out, "revoke the capability then", is not open to
    that device: its wallet is empty and no route lists a user's capabilities.  Yet the
    sender's other devices hold the sealed payload, derived grant included, and the
    grant's holder is this user, so ``DELETE /v1/grants/{d_...}`` would accept it."""
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    laptop = await alice.link_device()
    laptop.use_device_key(envelope.DeviceKey.generate("x25519"))
    await laptop.publish_key()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    grant = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    assert is_derived(grant)
    url = f"{edge_url(dm)}/m/{media.id}"
    assert await fetch_code(bob, url, grant) == (206, "")
    await laptop.unsend(conv["id"], sent["id"])  # the sender, from her other device

    async def refused() -> bool:
        return (await fetch_code(bob, url, grant))[0] == 410

    await wait_until(refused, 5, 0.2)


async def test_verify_jwks_that_is_not_an_object_does_not_stop_the_edge(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """Finding: the reloading key set promises that a bad file keeps the last good keys.
    A JWKS that is valid JSON but not an object (``[]``, ``null``, ``{"keys": [1]}``)
    raises ``AttributeError``, which ``ReloadingFile`` does not catch; the key set is
    re-read from the revocation tailer's tick, so the exception kills the tailer task.
    The view then goes stale for good: every grant and pointer fetch is
    ``503 revocation_stale`` until the process restarts, even after the file is fixed."""
    media, _ = await edge.add_media(owner="alice")
    status, g = await call(
        edge, "POST", "/v1/grants", issuer.mint("alice"), {"media_id": media.id, "redeemers": 1}
    )
    assert status == 201
    bob_s = issuer.mint("bob")
    assert await fetch(edge, media.id, bob_s, g["grant"]) == (206, "")
    jwks: Path = ring.path / VERIFY_JWKS_FILE
    good = jwks.read_bytes()
    atomic_write(jwks, b"[]", 0o644)  # a careless tool writes the wrong document
    await asyncio.sleep(2.5)  # the tail ticks about once a second and re-reads the file
    atomic_write(jwks, good, 0o644)  # fixed
    await asyncio.sleep(edge.state.settings.staleness_bound_s + 1.5)

    async def serves() -> bool:
        return await fetch(edge, media.id, bob_s, g["grant"]) == (206, "")

    await wait_until(serves, 5, 0.2)


async def test_unknown_kid_flood_does_not_reparse_a_bad_jwks_per_request(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding: a token naming an unknown kid makes the verifier re-check the JWKS at once
    (``refresh_for_unknown_kid``), "a stat, parsed again only if changed".  But a reload
    that fails does not record the bad file's stamp, so while the file is unreadable
    (half-written, corrupt) *every* such request parses it again and logs an ERROR: an
    attacker with any token-shaped string and a made-up kid turns an operator's slip into
    unbounded JWKS reloads and a log flood."""
    media, _ = await edge.add_media(owner="alice")
    stranger = KeyRing.create(tmp_path / "stranger", Alg.ED25519)  # a kid the edge never saw
    token = grant_mod.mint(
        stranger.signer(),
        grant_id="g_unknownkid000000000000",
        media_id=media.id,
        max_redeemers=1,
        sharer="mallory",
        now=time.time(),
        ttl_s=600,
    )
    jwks: Path = ring.path / VERIFY_JWKS_FILE
    good = jwks.read_bytes()
    atomic_write(jwks, b'{"keys": [', 0o644)  # a half-written file
    try:
        bob_s = issuer.mint("bob")
        with caplog.at_level(logging.ERROR, logger="service_kernel.reloading_file"):
            for _ in range(60):
                assert await fetch(edge, media.id, bob_s, token) == (403, "token_unknown_key")
        reloads = [r for r in caplog.records if "unreadable" in r.getMessage()]
    finally:
        atomic_write(jwks, good, 0o644)
    # The tail's own re-check (about once a second) may add a few; not one per request.
    assert len(reloads) < 20, len(reloads)


# --- Attacks the code resists (regression guards) ---------------------------------------


async def test_bare_capability_is_no_proof_of_receipt(edge: Edge, issuer: DevIssuer) -> None:
    """A capability ('C') is not a grant: it opens nothing and proves no receipt, on
    either re-share route (type confusion between C, D and G)."""
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    cap = await issued(edge, issuer.mint("alice"), media.id, _key())
    bob_s = issuer.mint("bob")
    status, doc = await issue(edge, bob_s, media.id, _key(), via_grant=cap["capability"])
    assert (status, doc["error"]["code"]) == (403, "token_wrong_type")
    status, doc = await call(
        edge,
        "POST",
        "/v1/grants",
        bob_s,
        {"media_id": media.id, "redeemers": 1, "via_grant": cap["capability"]},
    )
    assert (status, doc["error"]["code"]) == (403, "token_wrong_type")


async def test_capability_revocation_reaches_an_edge_started_after_it(
    edge: Edge, make_edge: EdgeFactory, issuer: DevIssuer
) -> None:
    """A capability minted and revoked on one edge is refused by an edge that starts later
    (it reads the stream back over the capability window, not the token window)."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    alice_s = issuer.mint("alice")
    cap = await issued(edge, alice_s, media.id, alice)
    token, _ = derive(alice, cap)
    assert await fetch(edge, media.id, issuer.mint("bob"), token) == (206, "")
    await _revoke(edge, f"/v1/capabilities/{cap['cap_id']}", alice_s)
    later = await make_edge(keyring_dir=None)  # a verify-only edge, started afterwards
    assert await fetch(later, media.id, issuer.mint("bob"), token) == (410, "capability_revoked")
    assert await fetch(later, media.id, issuer.mint("carol"), derive(alice, cap)[0]) == (
        410,
        "capability_revoked",
    )


async def test_future_dated_or_overlong_derived_grant_is_refused(edge: Edge, issuer: DevIssuer) -> None:
    """A holder cannot pre-date a grant past the leeway (so it would outlive a revocation
    remembered for the token window) nor give it more than the token lifetime."""
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    now = int(time.time())
    later = forge_derived(alice, cap["capability"], n=1, iat=now + 3600, exp=now + 3900)
    assert await fetch(edge, media.id, issuer.mint("bob"), later) == (403, "token_not_yet_valid")
    lifetime = edge.state.settings.max_token_lifetime_s
    overlong = forge_derived(alice, cap["capability"], n=1, iat=now - 60, exp=now - 60 + lifetime + 1)
    assert (await fetch(edge, media.id, issuer.mint("bob"), overlong))[0] == 403


async def test_derived_grant_revoked_on_one_edge_stops_on_another(
    edge: Edge, make_edge: EdgeFactory, issuer: DevIssuer
) -> None:
    """A user already bound to a derived grant on edge B (its binding cached there) is
    refused on B once the holder revokes that grant through edge A."""
    other = await make_edge()
    media, _ = await edge.add_media(owner="alice")
    alice = _key()
    cap = await issued(edge, issuer.mint("alice"), media.id, alice)
    token, grant_id = derive(alice, cap)
    bob_s = issuer.mint("bob")
    assert await fetch(other, media.id, bob_s, token) == (206, "")
    status, doc = await call(
        edge, "DELETE", f"/v1/grants/{grant_id}", issuer.mint("alice"), {"grant": token}
    )
    assert status == 200
    await wait_until(lambda: revoked_at_edge(other, doc["revocation_id"]), 5)
    assert await fetch(other, media.id, bob_s, token) == (410, "grant_revoked")


async def test_open_response_with_a_derived_grant_stops_when_its_capability_is_revoked(
    edge: Edge, issuer: DevIssuer
) -> None:
    """A player already streaming with a derived grant is cut off within a window or so
    when the capability is revoked (the long response re-checks the chain between
    windows), not at the end of the file."""
    size = 16 * 1024 * 1024
    media, _ = await edge.add_media(owner="alice", size=size)
    alice = _key()
    alice_s = issuer.mint("alice")
    cap = await issued(edge, alice_s, media.id, alice)
    token, _ = derive(alice, cap)
    got = 0
    async with edge.client.get(
        f"/m/{media.id}", headers={**bearer(issuer.mint("bob")), "X-Grant": token}
    ) as r:
        assert r.status == 200
        got += len(await r.content.readexactly(1024 * 1024))
        await _revoke(edge, f"/v1/capabilities/{cap['cap_id']}", alice_s)
        try:
            while chunk := await r.content.read(1024 * 1024):
                got += len(chunk)
        except aiohttp.ClientPayloadError:
            pass  # the edge closed the response early: what we want
    assert got < size


async def test_openapi_documents_name_no_secret_or_local_path(
    make_edge: EdgeFactory, tmp_path: Path
) -> None:
    """``/openapi.json`` carries limits from the running settings; it must carry nothing
    else of them: no secret, no Redis address, no key or origin path."""
    secret = "front-secret-7c1d3f0a9b2e"
    edge = await make_edge(
        front_control_url="http://127.0.0.1:9/control",
        front_control_secret=secret,
        playback_secret_path=tmp_path / "playback.key",
    )
    async with edge.client.get("/openapi.json") as r:
        assert r.status == 200
        text = json.dumps(await r.json())
    s = edge.state.settings
    needles: list[str] = [
        secret,
        str(s.redis_url),
        str(s.pointer_jwks),
        str(s.session_jwks),
        str(s.origin_dir),
        str(tmp_path),
        str(s.keyring_dir),
    ]
    assert [n for n in needles if n in text] == []
