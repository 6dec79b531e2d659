"""nginx in front (deploy/nginx/edge.conf.template): nginx serves bytes, the authorizer decides."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cdn_auth import revocation
from cdn_auth.keyring import KeyRing
from cdn_auth.redis_process import free_port
from cdn_auth.revocation import RevocationLog
from dm.identity import DevIssuer
from loadtests.nginx_front import NginxFront, NginxUnavailable, find_nginx, secure_link

from .conftest import Edge, bearer, wait_until
from .test_edge_authorization import mint

AUTH_CACHE_S = 1


@pytest.fixture
def front(edge: Edge, tmp_path: Path) -> Iterator[NginxFront]:
    try:
        find_nginx()
    except NginxUnavailable as exc:
        pytest.skip(str(exc))  # .ci/run installs nginx, so CI always runs this
    authorizer = f"127.0.0.1:{edge.client.port}"
    with NginxFront(tmp_path / "nginx", port=free_port(), authorizer=authorizer,
                    origin=edge.state.origin.root, auth_cache_s=AUTH_CACHE_S) as nginx:
        yield nginx


async def _get(url: str, **headers: str) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.read(), r.headers


async def test_authorized_range_served_by_nginx(front: NginxFront, edge: Edge,
                                                issuer: DevIssuer, ring: KeyRing) -> None:
    media, data = await edge.add_media(size=200_000)
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    auth = bearer(issuer.mint("bob"))
    status, body, headers = await _get(url, **auth, Range="bytes=1000-1999")
    assert (status, body) == (206, data[1000:2000])
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert "private" in headers["Cache-Control"]
    status, body, _ = await _get(url, **auth)
    assert (status, body) == (200, data)


@pytest.mark.parametrize("who,expected", [("carol", 403), (None, 401)])
async def test_refusals_pass_through_nginx(front: NginxFront, edge: Edge, issuer: DevIssuer,
                                           ring: KeyRing, who: str | None, expected: int) -> None:
    media, _ = await edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    headers = bearer(issuer.mint(who)) if who else {}
    status, body, _ = await _get(url, **headers)
    assert status == expected and media.id.encode() not in body


async def test_unsend_reaches_nginx_within_the_decision_cache_time(
        front: NginxFront, edge: Edge, issuer: DevIssuer, ring: KeyRing, redis: Any) -> None:
    media, _ = await edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media, msg='msg_ng')}"
    auth = bearer(issuer.mint("bob"))
    assert (await _get(url, **auth, Range="bytes=0-9"))[0] == 206
    await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_ng"))

    async def gone() -> bool:
        return (await _get(url, **auth, Range="bytes=0-9"))[0] == 410

    # Bounded by nginx's decision cache (AUTH_CACHE_S) plus the edge's own propagation.
    await wait_until(gone, timeout_s=AUTH_CACHE_S + 1.0)


async def test_secure_link_baseline_location(front: NginxFront, edge: Edge) -> None:
    media, data = await edge.add_media()
    good = secure_link(f"/sl/{media.origin}", front.secure_link_secret, int(time.time()) + 60)
    status, body, _ = await _get(front.url + good, Range="bytes=0-99")
    assert (status, body) == (206, data[:100])
    assert (await _get(front.url + good.replace("md5=", "md5=x")))[0] == 403


async def test_decision_cache_is_keyed_by_media_and_token(front: NginxFront, edge: Edge,
                                                          issuer: DevIssuer,
                                                          ring: KeyRing) -> None:
    a, _ = await edge.add_media()
    b, _ = await edge.add_media()
    auth = bearer(issuer.mint("bob"))
    assert (await _get(f"{front.url}/m/{a.id}?pointer={mint(ring, a)}", **auth))[0] == 200
    # Same session, cached allow for A: B without a pointer and an unknown id stay refused.
    status, body, headers = await _get(f"{front.url}/m/{b.id}", **auth)
    assert status == 403 and b'"error"' in body
    assert headers["Content-Type"].startswith("application/json")
    assert (await _get(f"{front.url}/m/{b.id}?pointer={mint(ring, a)}", **auth))[0] == 403
    status, body, _ = await _get(f"{front.url}/m/m_nope", **auth)
    assert status == 404 and b"media_not_found" in body
