"""The edge's decisions over HTTP, against a real Redis: one test per attack and per rule."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cdn_auth import pointer
from cdn_auth.keyring import KeyRing
from cdn_auth.media import Media
from dm.identity import DevIssuer

from ..support.edge import fetch, mint
from ..support.services import Edge, EdgeFactory, bearer


async def test_recipient_fetches_private_media(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, data = await edge.add_media()
    status, body = await fetch(edge, media.id, issuer.mint("bob"), mint(ring, media))
    assert (status, body) == (200, data)


async def test_forwarded_pointer_denied(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media()
    status, body = await fetch(edge, media.id, issuer.mint("carol"), mint(ring, media, "bob"))
    assert status == 403
    assert body["error"]["code"] == "pointer_wrong_recipient"


async def test_pointer_for_other_media_denied(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media()
    other, _ = await edge.add_media()
    status, body = await fetch(edge, other.id, issuer.mint("bob"), mint(ring, media))
    assert (status, body["error"]["code"]) == (403, "pointer_media_mismatch")


async def test_private_media_without_pointer_denied(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media()
    status, body = await fetch(edge, media.id, issuer.mint("bob"))
    assert (status, body["error"]["code"]) == (403, "pointer_required")


async def test_owner_and_public_need_no_pointer(edge: Edge, issuer: DevIssuer) -> None:
    private, _ = await edge.add_media(owner="alice")
    public, _ = await edge.add_media(owner="alice", visibility="public")
    assert (await fetch(edge, private.id, issuer.mint("alice")))[0] == 200
    assert (await fetch(edge, public.id, issuer.mint("zed")))[0] == 200


async def test_no_session_is_401(edge: Edge, ring: KeyRing) -> None:
    media, _ = await edge.add_media(visibility="public")
    async with edge.client.get(f"/m/{media.id}") as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await r.json())["error"]["code"] == "session_missing"


def _bad_pointers(ring: KeyRing, media: Media) -> dict[str, str]:
    good = mint(ring, media)
    body, sig = good.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    other_ring = KeyRing.create(ring.path.parent / "other-ring")
    return {
        "tampered": body + "." + flipped,
        "expired": mint(ring, media, now=time.time() - 3600, ttl_s=60),
        "future_dated": mint(ring, media, now=time.time() + 3600),
        "unknown_kid": pointer.mint(
            other_ring.signer(),
            media_id=media.id,
            sub="bob",
            conversation_id="c",
            message_id="m",
            now=time.time(),
        ),
        "garbage": "not-a-token",
        "empty_sig": body + ".",
    }


@pytest.mark.parametrize(
    "case", ["tampered", "expired", "future_dated", "unknown_kid", "garbage", "empty_sig"]
)
async def test_bad_pointer_rejected_never_500(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, case: str
) -> None:
    media, _ = await edge.add_media()
    status, body = await fetch(edge, media.id, issuer.mint("bob"), _bad_pointers(ring, media)[case])
    assert status == 403, body
    assert body["error"]["code"].startswith("token_")


@pytest.mark.parametrize("case", ["expired", "future_dated", "unknown_kid", "garbage", "alg_none"])
async def test_bad_session_rejected_never_500(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, case: str
) -> None:
    media, _ = await edge.add_media()
    sessions = {
        "expired": issuer.mint("bob", now=time.time() - 7200, ttl_s=60),
        "future_dated": issuer.mint("bob", now=time.time() + 3600),
        "unknown_kid": DevIssuer.generate().mint("bob"),
        "garbage": "garbage",
        "alg_none": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.",
    }
    status, body = await fetch(edge, media.id, sessions[case], mint(ring, media))
    assert status == 401, body
    assert body["error"]["code"].startswith("session_")


async def test_minor_denied_adult_only_media(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media(min_age=18)
    status, body = await fetch(edge, media.id, issuer.mint("bob", age="minor"), mint(ring, media))
    assert (status, body["error"]["code"]) == (403, "age_restricted")
    status, _ = await fetch(edge, media.id, issuer.mint("bob", age="adult"), mint(ring, media))
    assert status == 200


async def test_blocked_region_denied(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media(blocked=frozenset({"FR"}))
    status, body = await fetch(edge, media.id, issuer.mint("bob", region="FR"), mint(ring, media))
    assert (status, body["error"]["code"]) == (403, "region_restricted")
    assert (await fetch(edge, media.id, issuer.mint("bob", region="GB"), mint(ring, media)))[0] == 200


async def test_region_outside_allow_list_denied(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media(visibility="public", allowed=frozenset({"GB", "IE"}))
    status, body = await fetch(edge, media.id, issuer.mint("bob", region="US"))
    assert (status, body["error"]["code"]) == (403, "region_restricted")


async def test_takedown_is_410_for_everyone(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media()
    ptr, bob = mint(ring, media), issuer.mint("bob")
    assert (await fetch(edge, media.id, bob, ptr))[0] == 200  # now cached at the edge
    async with edge.client.post(
        "/v1/takedowns", json={"media_id": media.id}, headers=bearer(issuer.mint("bob"))
    ) as r:
        assert r.status == 403  # not a moderator
    async with edge.client.post(
        "/v1/takedowns",
        json={"media_id": media.id, "reason": "abuse"},
        headers=bearer(issuer.mint("mod", roles=["moderator"])),
    ) as r:
        assert r.status == 200
    for session, p in ((bob, ptr), (issuer.mint("alice"), None)):
        status, body = await fetch(edge, media.id, session, p)
        assert (status, body["error"]["code"]) == (410, "media_taken_down")


@pytest.mark.parametrize(
    "path", ["/m/..%2F..%2Fetc%2Fpasswd", "/m/" + "a" * 65, "/m/a%00b", "/m/%7Bslot%7D", "/m/a.mp4"]
)
async def test_bad_media_ids_are_4xx(edge: Edge, issuer: DevIssuer, path: str) -> None:
    async with edge.client.get(path, headers=bearer(issuer.mint("bob"))) as r:
        assert 400 <= r.status < 500
        assert "error" in await r.json()


async def test_oversize_token_and_headers_are_4xx(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media()
    status, _ = await fetch(edge, media.id, issuer.mint("bob"), "A" * 3000)
    assert status == 403
    status, _ = await fetch(edge, media.id, "x" * 6000, mint(ring, media))
    assert status == 401
    async with edge.client.get(f"/m/{media.id}", headers={"X-Big": "y" * 20000}) as r:
        assert 400 <= r.status < 500


async def test_unknown_media_is_404(edge: Edge, issuer: DevIssuer) -> None:
    status, body = await fetch(edge, "m_nope", issuer.mint("bob"))
    assert (status, body["error"]["code"]) == (404, "media_not_found")


async def test_pointer_in_header(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, data = await edge.add_media()
    status, body = await fetch(
        edge, media.id, issuer.mint("bob"), None, **{"X-Pointer": mint(ring, media)}
    )
    assert (status, body) == (200, data)


@pytest.mark.parametrize("who,expected", [("bob", 204), ("carol", 403), ("none", 401)])
async def test_nginx_auth_endpoint(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, who: str, expected: int
) -> None:
    media, _ = await edge.add_media()
    headers = {"X-Original-URI": f"/m/{media.id}?pointer={mint(ring, media)}"}
    if who != "none":
        headers.update(bearer(issuer.mint(who)))
    async with edge.client.get("/auth", headers=headers) as r:
        assert r.status == expected
        if expected == 204:
            assert r.headers["X-Origin-Path"] == media.origin
            assert r.headers["X-Media-ETag"] == media.etag


async def test_nginx_auth_gone_after_takedown(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    media, _ = await edge.add_media()
    await edge.state.registry.set_status(media.id, "taken_down")
    edge.state.authorizer.media_cache.evict(media.id)
    headers = {
        "X-Original-URI": f"/m/{media.id}?pointer={mint(ring, media)}",
        **bearer(issuer.mint("bob")),
    }
    async with edge.client.get("/auth", headers=headers) as r:
        assert r.status == 410


@pytest.mark.parametrize("uri", ["", "/etc/passwd", "/m/" + "x" * 3000])
async def test_nginx_auth_bad_uri_is_4xx(edge: Edge, issuer: DevIssuer, uri: str) -> None:
    async with edge.client.get(
        "/auth", headers={"X-Original-URI": uri, **bearer(issuer.mint("bob"))}
    ) as r:
        assert 400 <= r.status < 500


async def test_hmac_ring_edge(make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Any) -> None:
    from cdn_auth.keyring import VERIFY_JWKS_FILE
    from cdn_auth.token_format import Alg

    hring = KeyRing.create(tmp_path / "hmac-ring", Alg.HMAC_SHA256)
    edge = await make_edge(pointer_jwks=hring.path / VERIFY_JWKS_FILE)
    media, data = await edge.add_media()
    assert await fetch(edge, media.id, issuer.mint("bob"), mint(hring, media)) == (200, data)
    assert (hring.path / VERIFY_JWKS_FILE).stat().st_mode & 0o077 == 0  # secrets: owner only


async def test_nginx_auth_many_query_fields_is_400_not_500(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await edge.add_media()
    junk = "&".join(f"f{i}=x" for i in range(40))
    headers = {"X-Original-URI": f"/m/{media.id}?{junk}", **bearer(issuer.mint("bob"))}
    async with edge.client.get("/auth", headers=headers) as r:
        assert r.status == 400


async def test_nginx_auth_decodes_the_path_like_the_edge(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await edge.add_media()
    encoded = media.id.replace("_", "%5F")
    headers = {
        "X-Original-URI": f"/m/{encoded}?pointer={mint(ring, media)}",
        **bearer(issuer.mint("bob")),
    }
    async with edge.client.get("/auth", headers=headers) as r:
        assert r.status == 204
    status, _ = await fetch(edge, encoded, issuer.mint("bob"), mint(ring, media))
    assert status == 200


async def test_tampered_origin_record_cannot_escape_the_origin(
    edge: Edge, issuer: DevIssuer, redis: Any
) -> None:
    media, _ = await edge.add_media(visibility="public")
    await redis.hset(f"cdn:media:{{{media.id}}}", "origin", "../../../etc/passwd")
    edge.state.authorizer.media_cache.evict(media.id)
    status, body = await fetch(edge, media.id, issuer.mint("bob"))
    assert (status, body["error"]["code"]) == (503, "origin_unavailable")
