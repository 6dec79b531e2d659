"""Browser playback at the edge: the media cookie, its binding and its limits, and CORS.

Real edges (aiohttp servers) on a real Redis.  Cookies are sent by hand (the
test client's own jar is cleared) so each test says exactly what the
"browser" holds.  One test per attack, named for it.
"""

from __future__ import annotations

import dataclasses
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cdn_auth.errors import SessionExpired
from cdn_auth.keyring import KeyRing
from cdn_auth.playback import COOKIE_NAME, PlaybackTokens
from cdn_auth.session import Session
from cdn_auth.settings import EdgeSettings
from dm.identity import DevIssuer

from ..support.edge import mint
from ..support.playback import APP_ORIGIN, cookie_for
from ..support.services import Edge, EdgeFactory, bearer, wait_until


@pytest.fixture
async def web_edge(make_edge: EdgeFactory, tmp_path: Path) -> Edge:
    return await make_edge(playback_secret_path=tmp_path / "playback.key", cors_origins=(APP_ORIGIN,))


async def get_media(
    edge: Edge,
    media_id: str,
    *,
    cookie: str | None = None,
    ptr: str | None = None,
    session: str | None = None,
    **headers: str,
) -> tuple[int, Any, Any]:
    h = dict(headers)
    if cookie is not None:
        h["Cookie"] = f"{COOKIE_NAME}={cookie}"
    if session is not None:
        h.update(bearer(session))
    async with edge.client.get(f"/m/{media_id}", params={"pointer": ptr} if ptr else {}, headers=h) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body, r.headers


def code(body: Any) -> str:
    return str(body["error"]["code"])


async def test_playback_cookie_plays_pointer_for_its_recipient(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, data = await web_edge.add_media()
    value, morsel = await cookie_for(web_edge, issuer.mint("bob"))
    assert morsel["httponly"] and morsel["path"] == "/m/" and morsel["samesite"] == "Strict"
    assert not morsel["secure"]  # plain http here; Secure on https or when configured
    assert 0 < int(morsel["max-age"]) <= 600
    status, body, headers = await get_media(
        web_edge, media.id, cookie=value, ptr=mint(ring, media, "bob"), Range="bytes=100-199"
    )
    assert (status, body) == (206, data[100:200])
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert "Cookie" in headers["Vary"]


async def test_forwarded_pointer_denied_with_another_users_cookie(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media()
    carol, _ = await cookie_for(web_edge, issuer.mint("carol"))
    status, body, _ = await get_media(web_edge, media.id, cookie=carol, ptr=mint(ring, media, "bob"))
    assert (status, code(body)) == (403, "pointer_wrong_recipient")


async def test_forwarded_pointer_denied_without_cookie(web_edge: Edge, ring: KeyRing) -> None:
    media, _ = await web_edge.add_media()
    status, body, _ = await get_media(web_edge, media.id, ptr=mint(ring, media, "bob"))
    assert (status, code(body)) == (401, "session_missing")


async def test_tampered_playback_cookie_rejected(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media()
    value, _ = await cookie_for(web_edge, issuer.mint("bob"))
    body_b64, _, sig = value.partition(".")
    forged = body_b64 + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    status, body, _ = await get_media(web_edge, media.id, cookie=forged, ptr=mint(ring, media, "bob"))
    assert (status, code(body)) == (401, "session_invalid")


async def test_session_jwt_as_cookie_rejected(web_edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    """The raw session is never a media cookie (nor is a pointer: type and key differ)."""
    media, _ = await web_edge.add_media()
    ptr = mint(ring, media, "bob")
    for wrong in (issuer.mint("bob"), ptr):
        status, body, _ = await get_media(web_edge, media.id, cookie=wrong, ptr=ptr)
        assert (status, code(body)) == (401, "session_invalid")


async def test_cookie_from_another_edge_secret_rejected(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media()
    session = await web_edge.state.authorizer.session(issuer.mint("bob"))
    other, _ = PlaybackTokens(b"\x01" * 32, ttl_s=600).mint(session)
    status, body, _ = await get_media(web_edge, media.id, cookie=other, ptr=mint(ring, media, "bob"))
    assert (status, code(body)) == (401, "session_invalid")


def test_expired_playback_token_rejected() -> None:
    tokens = PlaybackTokens(b"\x02" * 32, ttl_s=60, leeway_s=5)
    session = Session("bob", "d1", 30, "GB", frozenset(), 0, 10_000)
    token, exp = tokens.mint(session, now=1000)
    assert tokens.verify(token, now=1030).sub == "bob"
    with pytest.raises(SessionExpired):
        tokens.verify(token, now=exp + 6)


def test_playback_cookie_never_outlives_session() -> None:
    tokens = PlaybackTokens(b"\x03" * 32, ttl_s=600)
    session = Session("bob", "d1", None, None, frozenset({"moderator"}), 1000, 1100)
    token, exp = tokens.mint(session, now=1000)
    assert exp == 1100
    got = tokens.verify(token, now=1050)
    assert (got.sub, got.dev, got.age, got.region, got.exp) == ("bob", "d1", None, None, 1100)
    assert got.roles == frozenset(), "a cookie never carries moderator powers"


async def test_playback_cookie_keeps_age_and_region_rules(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media(min_age=18, blocked=frozenset({"FR"}))
    minor, _ = await cookie_for(web_edge, issuer.mint("bob", age="minor"))
    status, body, _ = await get_media(web_edge, media.id, cookie=minor, ptr=mint(ring, media, "bob"))
    assert (status, code(body)) == (403, "age_restricted")
    french, _ = await cookie_for(web_edge, issuer.mint("bob", region="FR"))
    status, body, _ = await get_media(web_edge, media.id, cookie=french, ptr=mint(ring, media, "bob"))
    assert (status, code(body)) == (403, "region_restricted")


async def test_playback_cookie_not_accepted_on_state_changing_routes(
    web_edge: Edge, issuer: DevIssuer
) -> None:
    """No CSRF path: a cross-site form or fetch that carries the cookie changes nothing."""
    value, _ = await cookie_for(web_edge, issuer.mint("mod", roles=["moderator", "publisher"]))
    cookie = {"Cookie": f"{COOKIE_NAME}={value}", "Origin": "https://evil.example"}
    for method, path, body in (
        ("POST", "/v1/media", {"origin_path": "x.mp4"}),
        ("POST", "/v1/takedowns", {"media_id": "m_x", "reason": "csrf"}),
        ("POST", "/v1/grants", {"media_id": "m_x", "max_redeemers": 1}),
        ("DELETE", "/v1/grants/g_x", None),
        ("POST", "/v1/playback-session", None),
        ("DELETE", "/v1/playback-session", None),
    ):
        async with web_edge.client.request(method, path, json=body, headers=cookie) as r:
            assert r.status == 401, (method, path, r.status)
            assert (await r.json())["error"]["code"] == "session_missing"
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_auth_honours_cookie_only_for_media_reads(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """nginx forwards the cookie to /auth; it counts only when the original method is GET/HEAD."""
    media, _ = await web_edge.add_media()
    value, _ = await cookie_for(web_edge, issuer.mint("bob"))
    uri = f"/m/{media.id}?pointer={mint(ring, media, 'bob')}"
    for method, expected in (("GET", 204), ("HEAD", 204), ("POST", 401), (None, 401)):
        headers = {"X-Original-URI": uri, "Cookie": f"{COOKIE_NAME}={value}"}
        if method is not None:
            headers["X-Original-Method"] = method
        async with web_edge.client.get("/auth", headers=headers) as r:
            assert r.status == expected, (method, r.status)


async def test_playback_disabled_without_secret(edge: Edge, issuer: DevIssuer, ring: KeyRing) -> None:
    async with edge.client.post("/v1/playback-session", headers=bearer(issuer.mint("bob"))) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (404, "playback_disabled")
    media, _ = await edge.add_media()
    forged = PlaybackTokens(b"\x04" * 32, ttl_s=600).mint(
        Session("bob", "d1", 30, "GB", frozenset(), int(time.time()), int(time.time()) + 600)
    )[0]
    status, body, _ = await get_media(edge, media.id, cookie=forged, ptr=mint(ring, media, "bob"))
    assert (status, code(body)) == (401, "session_missing")


async def test_clear_playback_cookie(web_edge: Edge, issuer: DevIssuer) -> None:
    async with web_edge.client.delete("/v1/playback-session", headers=bearer(issuer.mint("bob"))) as r:
        assert r.status == 200
        morsel = SimpleCookie(r.headers["Set-Cookie"])[COOKIE_NAME]
        assert morsel.value == "" and morsel["path"] == "/m/" and int(morsel["max-age"]) == 0


async def test_a_signed_out_cookie_is_refused_everywhere_copies_included(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """DELETE /v1/playback-session ends the device's cookies on every edge (a revocation
    event), not only in the browser that cleared it: a copied cookie stops working too."""
    media, _ = await web_edge.add_media()
    ptr = mint(ring, media, "bob")
    copied, _ = await cookie_for(web_edge, issuer.mint("bob", dev="laptop"))
    other_device, _ = await cookie_for(web_edge, issuer.mint("bob", dev="phone"))
    assert (await get_media(web_edge, media.id, cookie=copied, ptr=ptr))[0] == 200
    async with web_edge.client.delete(
        "/v1/playback-session", headers=bearer(issuer.mint("bob", dev="laptop"))
    ) as r:
        assert r.status == 200

    async def refused() -> bool:
        return (await get_media(web_edge, media.id, cookie=copied, ptr=ptr))[0] == 401

    await wait_until(refused, 3)
    status, body, _ = await get_media(web_edge, media.id, cookie=copied, ptr=ptr)
    assert (status, code(body)) == (401, "playback_ended")
    # nginx's subrequest path refuses it too; an unknown media id learns nothing either.
    headers = {"X-Original-URI": f"/m/{media.id}?pointer={ptr}", "X-Original-Method": "GET"}
    async with web_edge.client.get(
        "/auth", headers={**headers, "Cookie": f"{COOKIE_NAME}={copied}"}
    ) as r:
        assert r.status == 401
    assert (await get_media(web_edge, "m_" + "x" * 22, cookie=copied))[0] == 401
    # Only that device: the user's other device keeps playing.
    assert (await get_media(web_edge, media.id, cookie=other_device, ptr=ptr))[0] == 200
    # The same device's cookies minted within the token leeway after it are refused too
    # (the minting edge's clock may run ahead of Redis's); signing in again makes a new
    # device (the web client does), whose cookie works at once.
    soon, _ = await cookie_for(web_edge, issuer.mint("bob", dev="laptop"))
    status, body, _ = await get_media(web_edge, media.id, cookie=soon, ptr=ptr)
    assert (status, code(body)) == (401, "playback_ended")
    fresh, _ = await cookie_for(web_edge, issuer.mint("bob", dev="laptop-2"))
    assert (await get_media(web_edge, media.id, cookie=fresh, ptr=ptr))[0] == 200


async def test_a_cookie_is_not_honoured_on_a_stale_revocation_view(
    web_edge: Edge, issuer: DevIssuer
) -> None:
    """A sign-out the edge has not heard of must not be outlived: with the revocation tail
    stale, a cookie is refused (503) even for public media, as pointers are."""
    media, _ = await web_edge.add_media(visibility="public")
    value, _ = await cookie_for(web_edge, issuer.mint("bob"))
    assert (await get_media(web_edge, media.id, cookie=value))[0] == 200
    authorizer = web_edge.state.authorizer
    authorizer.config = dataclasses.replace(authorizer.config, staleness_bound_s=-1.0)
    status, body, _ = await get_media(web_edge, media.id, cookie=value)
    assert (status, code(body)) == (503, "revocation_stale")
    assert (await get_media(web_edge, media.id, session=issuer.mint("bob")))[0] == 200


# -- CORS -----------------------------------------------------------------------------------


async def test_cors_for_configured_origin_on_media_and_refusals(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media()
    value, _ = await cookie_for(web_edge, issuer.mint("bob"))
    for ptr, expected in ((mint(ring, media, "bob"), 206), (mint(ring, media, "carol"), 403)):
        status, _, h = await get_media(
            web_edge, media.id, cookie=value, ptr=ptr, Origin=APP_ORIGIN, Range="bytes=0-9"
        )
        assert status == expected
        assert h["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert h["Access-Control-Allow-Credentials"] == "true"
        exposed = {x.strip() for x in h["Access-Control-Expose-Headers"].split(",")}
        assert {"Content-Range", "Accept-Ranges", "Content-Length"} <= exposed
        assert "Origin" in h["Vary"]


async def test_cors_origin_not_reflected_for_unlisted_origin(
    web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media()
    value, _ = await cookie_for(web_edge, issuer.mint("bob"))
    for origin in ("https://evil.example", "http://app.example.test:8091", "null"):
        status, _, h = await get_media(
            web_edge, media.id, cookie=value, ptr=mint(ring, media, "bob"), Origin=origin
        )
        assert status == 200
        assert "Access-Control-Allow-Origin" not in h
        assert "Access-Control-Allow-Credentials" not in h


async def test_cors_preflight(web_edge: Edge) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with web_edge.client.options(
        "/v1/playback-session", headers={**ask, "Origin": APP_ORIGIN}
    ) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    async with web_edge.client.options("/m/m_x", headers={**ask, "Origin": "https://evil.example"}) as r:
        assert r.status == 403
        assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://app.example.com/",
        "https://APP.example.com",
        "https://app.example.com/path",
        "app.example.com",
    ],
)
def test_cors_origin_setting_must_be_exact(origin: str) -> None:
    with pytest.raises(ValidationError):
        EdgeSettings.load(cors_origins=(origin,))
