"""Browser playback through the nginx front: the media cookie reaches /auth, CORS at nginx."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cdn_auth.app import FRONT_FEED
from cdn_auth.keyring import KeyRing
from cdn_auth.playback import COOKIE_NAME
from dm.identity import DevIssuer
from loadtests.stack.nginx import NginxFront, NginxUnavailable, check_lua_module, find_nginx
from service_kernel.redis_process import free_port

from ..support.edge import mint
from ..support.playback import APP_ORIGIN, cookie_for
from ..support.services import Edge, EdgeFactory, bearer, wait_until

AUTH_CACHE_S = 30  # long on purpose: a cached decision must never serve another cookie


@pytest.fixture
def control() -> tuple[int, str]:
    """Where the edge feeds the front's decision cache (docs/operations.md, section 10.2)."""
    return free_port(), secrets.token_urlsafe(24)


@pytest.fixture
async def web_edge(make_edge: EdgeFactory, tmp_path: Path, control: tuple[int, str]) -> Edge:
    return await make_edge(
        playback_secret_path=tmp_path / "playback.key",
        cors_origins=(APP_ORIGIN,),
        front_control_url=f"http://127.0.0.1:{control[0]}/_front/revocations",
        front_control_secret=control[1],
        front_push_interval_s=0.1,
    )


@pytest.fixture
async def front(web_edge: Edge, tmp_path: Path, control: tuple[int, str]) -> AsyncIterator[NginxFront]:
    try:
        find_nginx()
        check_lua_module()
    except NginxUnavailable as exc:
        pytest.skip(str(exc))  # .ci/run installs nginx, so CI always runs this
    with NginxFront(
        tmp_path / "nginx",
        port=free_port(),
        authorizer=f"127.0.0.1:{web_edge.client.port}",
        origin=web_edge.state.origin.root,
        auth_cache_s=AUTH_CACHE_S,
        cors_origins=(APP_ORIGIN,),
        control_port=control[0],
        control_secret=control[1],
    ) as nginx:
        feed = web_edge.app[FRONT_FEED]
        await wait_until(lambda: feed.pushes > 0, 15)  # the decision cache is live
        yield nginx


async def _req(
    method: str, url: str, cookie: str | None = None, **headers: str
) -> tuple[int, bytes, Any]:
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE_NAME}={cookie}"
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as r:
        return r.status, await r.read(), r.headers


async def test_cookie_plays_through_nginx_with_cors(
    front: NginxFront, web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, data = await web_edge.add_media(size=50_000)
    bob, _ = await cookie_for(web_edge, issuer.mint("bob"))
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media, 'bob')}"
    status, body, h = await _req("GET", url, bob, Origin=APP_ORIGIN, Range="bytes=10-19")
    assert (status, body) == (206, data[10:20])
    assert h["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert h["Access-Control-Allow-Credentials"] == "true"
    exposed = {x.strip() for x in h["Access-Control-Expose-Headers"].split(",")}
    assert {"Content-Range", "Accept-Ranges", "Content-Length"} <= exposed
    logs = "".join(p.read_text(errors="replace") for p in front.prefix.glob("*.log"))
    assert bob not in logs, "the media cookie must never reach nginx's logs"


async def test_cached_decision_not_shared_across_cookies(
    front: NginxFront, web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """nginx caches allow decisions; the key includes the cookie, so Carol never rides
    on Bob's cached 204 for the very same URL."""
    media, _ = await web_edge.add_media()
    bob, _ = await cookie_for(web_edge, issuer.mint("bob"))
    carol, _ = await cookie_for(web_edge, issuer.mint("carol"))
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media, 'bob')}"
    assert (await _req("GET", url, bob))[0] == 200
    hits = front.stats()["hits"]
    assert (await _req("GET", url, bob))[0] == 200
    assert front.stats()["hits"] == int(hits) + 1  # Bob's allow is cached
    status, _, h = await _req("GET", url, carol, Origin=APP_ORIGIN)
    assert status == 403
    assert h["Access-Control-Allow-Origin"] == APP_ORIGIN, "the page must be able to read why"
    assert (await _req("GET", url))[0] == 401


async def test_a_signed_out_cookie_loses_its_cached_allow_at_nginx(
    front: NginxFront, web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """nginx caches Bob's allow for 30 s here; his sign-out (``playback_ended``) must end
    it at once, for a copy of the cookie replayed straight at the front too."""
    media, _ = await web_edge.add_media()
    bob, _ = await cookie_for(web_edge, issuer.mint("bob"))
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media, 'bob')}"
    assert (await _req("GET", url, bob))[0] == 200
    hits = front.stats()["hits"]
    assert (await _req("GET", url, bob))[0] == 200
    assert front.stats()["hits"] == int(hits) + 1  # the allow is cached
    async with web_edge.client.delete("/v1/playback-session", headers=bearer(issuer.mint("bob"))) as r:
        assert r.status == 200

    async def refused() -> bool:
        return (await _req("GET", url, bob))[0] == 401

    await wait_until(refused, 3)


async def test_cookie_ignored_for_post_through_nginx(
    front: NginxFront, web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media()
    bob, _ = await cookie_for(web_edge, issuer.mint("bob"))
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media, 'bob')}"
    assert (await _req("POST", url, bob))[0] == 401


async def test_nginx_cors_preflight_and_unlisted_origin(
    front: NginxFront, web_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await web_edge.add_media()
    url = f"{front.url}/m/{media.id}"
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"}
    status, _, h = await _req("OPTIONS", url, Origin=APP_ORIGIN, **ask)
    assert status == 204
    assert h["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Range" in h["Access-Control-Allow-Headers"]
    status, _, h = await _req("OPTIONS", url, Origin="https://evil.example", **ask)
    assert "Access-Control-Allow-Origin" not in h
    bob, _ = await cookie_for(web_edge, issuer.mint("bob"))
    status, _, h = await _req(
        "GET", f"{url}?pointer={mint(ring, media, 'bob')}", bob, Origin="https://evil.example"
    )
    assert status == 200
    assert "Access-Control-Allow-Origin" not in h
    assert "Access-Control-Allow-Credentials" not in h
