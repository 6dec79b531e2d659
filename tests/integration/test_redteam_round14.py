"""Red-team round 14: sign-out ends the browser media cookie at every edge (commit bb08d73).

``DELETE /v1/playback-session`` publishes ``playback_ended`` (user, device); every edge
refuses that device's cookies with ``iat`` at or before the event (401 playback_ended), the
nginx front drops cached allows that depend on ``b``(user, device), and cookies are honoured
only while the revocation tail is fresh.  Attacked with real edges (aiohttp servers, some
with a skewed clock, as round 11 does) on a real Redis and a real Redis Cluster.

Findings, each fixed and kept as a test:

1. A cookie minted by an edge whose clock runs ahead of Redis's (by less than the token
   leeway the edges tolerate, 5 s) outlives its device's sign-out for its whole lifetime,
   at every edge: ``_check_cookie_live`` compares the cookie's ``iat`` (the minting edge's
   clock) with the event's stream time (Redis's clock), with no allowance for skew.
   Fixed: the comparison allows the token leeway (cookies issued up to 5 s after the
   sign-out are refused too; signing in again makes a new device).
2. An open media response served on a cookie is not stopped by the sign-out:
   ``Authorizer.still_allowed`` re-checks takedowns, unsends, leaves and grant revocations
   between windows, but not ``playback_ended`` (nor, for public and own media, the tail's
   freshness that the change requires of cookies).  A copied cookie started before the
   sign-out keeps streaming the whole file afterwards.  Fixed: ``still_allowed`` re-checks
   a cookie's device and the tail's freshness.
3. A sign-out can be refused (429) by the sign-ins before it: ``DELETE`` shares the
   ``playback_session`` bucket with ``POST``, and the web client ignores a failed ``DELETE``
   (``catch (e) { /* expired */ }``), so the cookie is neither ended at the edges nor
   cleared in the browser, and the user is told nothing.  Fixed: ``DELETE`` has a budget of
   its own (``playback_sign_out``, 1/s after a burst of 10).
4. The view remembers a sign-out for this edge's ``CDN_AUTH_PLAYBACK_COOKIE_TTL_S`` (or the
   token lifetime), but the edge accepts cookies of any lifetime up to 3600 s (the
   verifier's bound, ``MAX_PLAYBACK_TTL_S``): with edges configured with different cookie
   lifetimes (a rolling change of the setting), an edge forgets the sign-out while a
   cookie another edge minted still lives, and honours it again.  Fixed: the window
   covers ``MAX_PLAYBACK_TTL_S`` whatever this edge mints.
5. docs/protocol.md section 5.4 ("Codes the edge routes can return") lists neither
   ``401 playback_ended`` nor the new ``503 revocation_stale`` for public media (it still
   says "private media only").  Fixed (the doc).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cdn_auth.keyring import KeyRing
from cdn_auth.playback import COOKIE_NAME
from dm.identity import DevIssuer

from ..support.edge import mint
from ..support.playback import cookie_for
from ..support.services import Edge, EdgeFactory, bearer, wait_until

ROOT = Path(__file__).resolve().parents[2]

ClockedEdge = Callable[..., Any]


@pytest.fixture
def clocked_edge(make_edge: EdgeFactory, tmp_path: Path) -> ClockedEdge:
    """Start edges with their own clock (a host whose clock is off), browser playback on,
    sharing the playback secret with ``playback_edge``."""

    async def factory(clock: Callable[[], float], **overrides: Any) -> Edge:
        overrides.setdefault("playback_secret_path", tmp_path / "playback.key")
        return await make_edge(clock=clock, **overrides)

    return factory


@pytest.fixture
async def playback_edge(make_edge: EdgeFactory, tmp_path: Path) -> Edge:
    return await make_edge(playback_secret_path=tmp_path / "playback.key")


async def get_media(edge: Edge, media_id: str, cookie: str, ptr: str | None = None) -> tuple[int, str]:
    """GET with only the media cookie (and a pointer): the status and the error code."""
    async with edge.client.get(
        f"/m/{media_id}",
        params={"pointer": ptr} if ptr else {},
        headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
    ) as r:
        if r.content_type == "application/json":
            return r.status, str((await r.json())["error"]["code"])
        await r.read()
        return r.status, ""


async def sign_out(edge: Edge, session: str) -> int:
    async with edge.client.delete("/v1/playback-session", headers=bearer(session)) as r:
        await r.read()
        edge.client.session.cookie_jar.clear()
        return r.status


def _ended(edge: Edge, user: str, dev: str) -> Callable[[], bool]:
    view = edge.state.authorizer.tailer.view
    return lambda: view.playback_ended_at(user, dev) is not None


# -- 1. clock skew between the minting edge and Redis ---------------------------------------


async def test_a_cookie_minted_on_an_edge_with_a_fast_clock_survives_the_sign_out(
    clocked_edge: ClockedEdge, playback_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    # The minting edge's clock is 4 s ahead of Redis and the other edges: less than the
    # token leeway (CDN_AUTH_TOKEN_LEEWAY_S = 5) the edges tolerate between hosts.
    fast = await clocked_edge(lambda: time.time() + 4)
    media, _ = await playback_edge.add_media()
    ptr = mint(ring, media, "bob")
    copied, _ = await cookie_for(fast, issuer.mint("bob", dev="laptop"))  # then copied
    assert await get_media(playback_edge, media.id, copied, ptr) == (200, "")
    # Bob signs out (at once, or any time within the next 3 s).
    assert await sign_out(playback_edge, issuer.mint("bob", dev="laptop")) == 200
    await wait_until(_ended(playback_edge, "bob", "laptop"), 5)
    await wait_until(_ended(fast, "bob", "laptop"), 5)
    # The copy was issued before the sign-out: every edge must refuse it (docs/protocol.md
    # 13.1, "every cookie of that device issued at or before that second").
    assert await get_media(playback_edge, media.id, copied, ptr) == (401, "playback_ended")
    assert await get_media(fast, media.id, copied, ptr) == (401, "playback_ended")


# -- 2. an open response on the cookie ------------------------------------------------------


async def _open_cookie_stream(
    edge: Edge, media_id: str, cookie: str, ptr: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    await wait_until(edge.state.authorizer.tail_fresh, 10)
    url = edge.client.make_url("/")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a player reads slowly
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    writer.write(
        (
            f"GET /m/{media_id}?pointer={ptr} HTTP/1.1\r\nHost: x\r\n"
            f"Cookie: {COOKIE_NAME}={cookie}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return reader, writer


async def _read_to_end(reader: asyncio.StreamReader, most: int, timeout_s: float) -> int:
    """Body bytes until the edge drops the connection or ``most`` arrived (a whole body
    leaves a keep-alive connection open)."""
    got = 0
    with contextlib.suppress(ConnectionError, TimeoutError):
        while got < most and (chunk := await asyncio.wait_for(reader.read(256 * 1024), timeout_s)):
            got += len(chunk)
    return got


async def test_an_open_response_on_a_copied_cookie_streams_on_after_the_sign_out(
    make_edge: EdgeFactory, tmp_path: Path, issuer: DevIssuer, ring: KeyRing
) -> None:
    edge = await make_edge(
        playback_secret_path=tmp_path / "playback.key", stream_window_bytes=256 * 1024
    )
    size = 12 * 1024 * 1024
    media, _ = await edge.add_media(owner="alice", size=size)
    copied, _ = await cookie_for(edge, issuer.mint("bob", dev="laptop"))
    reader, writer = await _open_cookie_stream(edge, media.id, copied, mint(ring, media, "bob"))
    try:
        first = await reader.readexactly(512 * 1024)  # the stream is flowing
        assert await sign_out(edge, issuer.mint("bob", dev="laptop")) == 200
        await wait_until(_ended(edge, "bob", "laptop"), 5)
        rest = await _read_to_end(reader, size - len(first), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    # A takedown, unsend, leave or grant revocation cuts such a response within a window
    # (tests/integration/test_slow_peers.py); a sign-out must too.
    assert len(first) + rest < size


# -- 3. the sign-out shares its rate limit with the sign-ins --------------------------------


async def test_page_loads_before_a_sign_out_make_it_fail_and_the_cookie_live_on(
    playback_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await playback_edge.add_media()
    ptr = mint(ring, media, "bob")
    session = issuer.mint("bob", dev="laptop")
    # The web client POSTs once per page load, and once per video whose cookie lapsed (its
    # error handler renews once per video, dm/webapp/app.js): a conversation of twenty
    # videos opened after a laptop's sleep ...
    copied = ""
    for _ in range(20):
        copied, _ = await cookie_for(playback_edge, session)
    assert await get_media(playback_edge, media.id, copied, ptr) == (200, "")
    # ... then "Sign out" (app.js signOut swallows any failure of this call).
    status = await sign_out(playback_edge, session)
    await asyncio.sleep(1.5)  # propagation (about a second) had it been published
    assert (status, await get_media(playback_edge, media.id, copied, ptr)) == (
        200,
        (401, "playback_ended"),
    )


# -- 4. cookie lifetimes differ between edges -----------------------------------------------


async def test_an_edge_with_a_shorter_cookie_ttl_forgets_a_sign_out_a_longer_cookie_outlives(
    clocked_edge: ClockedEdge, issuer: DevIssuer
) -> None:
    # Both edges keep pointers for 10 min (CDN_AUTH_MAX_TOKEN_LIFETIME_S = 600); one mints
    # hour-long cookies, the other (mid-way through a rolling change of the setting, or
    # just configured otherwise) 10-minute ones.
    offset = [0.0]
    long_ttl = await clocked_edge(time.time, max_token_lifetime_s=600, playback_cookie_ttl_s=3600)
    short_ttl = await clocked_edge(
        lambda: time.time() + offset[0], max_token_lifetime_s=600, playback_cookie_ttl_s=600
    )
    media, _ = await long_ttl.add_media(visibility="public")
    copied, _ = await cookie_for(long_ttl, issuer.mint("bob", dev="laptop", ttl_s=7200))
    assert await sign_out(long_ttl, issuer.mint("bob", dev="laptop")) == 200
    await wait_until(_ended(short_ttl, "bob", "laptop"), 5)
    assert await get_media(short_ttl, media.id, copied) == (401, "playback_ended")
    # Twelve minutes later (the short edge's window is 600 + 5 + 60 s), the cookie still
    # has 48 minutes to live.
    offset[0] = 12 * 60
    view = short_ttl.state.authorizer.tailer.view
    await wait_until(short_ttl.state.authorizer.tail_fresh, 10)
    view.expire()  # what the tail's tick does: a window of 600 + 5 + 60 s forgot it here
    assert view.playback_ended_at("bob", "laptop") is not None
    assert await get_media(short_ttl, media.id, copied) == (401, "playback_ended")


# -- 5. the documented error codes ----------------------------------------------------------


def test_the_edge_error_table_lists_the_sign_outs_codes() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    section = text.split("### 5.4 Errors", 1)[1].split("\n## 6.", 1)[0]
    assert re.search(r"\| 401 \| `playback_ended` \|", section)
    stale = re.search(r"\| 503 \| `revocation_stale` \| ([^|]*)\|", section)
    assert stale is not None and "private media only" not in stale.group(1)


# -- guarantees that held -------------------------------------------------------------------


async def test_a_sign_out_reaches_an_edge_started_after_it_and_another_process(
    clocked_edge: ClockedEdge, playback_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """A copy replayed at a second edge, at an edge that starts after the sign-out (it loads
    the window), and a cookie minted in the sign-out's own second: all refused; the user's
    other device, and the same device's bearer session, keep playing."""
    media, _ = await playback_edge.add_media()
    ptr = mint(ring, media, "bob")
    second = await clocked_edge(time.time)
    copied, _ = await cookie_for(playback_edge, issuer.mint("bob", dev="laptop"))
    phone, _ = await cookie_for(second, issuer.mint("bob", dev="phone"))
    assert await sign_out(second, issuer.mint("bob", dev="laptop")) == 200
    await wait_until(_ended(playback_edge, "bob", "laptop"), 5)
    ended = playback_edge.state.authorizer.tailer.view.playback_ended_at("bob", "laptop")
    assert ended is not None
    same_second = ""
    if time.time() < int(ended) + 1:
        same_second, _ = await cookie_for(playback_edge, issuer.mint("bob", dev="laptop"))
    late = await clocked_edge(time.time)  # starts after the sign-out
    for edge in (playback_edge, second, late):
        assert await get_media(edge, media.id, copied, ptr) == (401, "playback_ended")
        assert await get_media(edge, media.id, phone, ptr) == (200, "")
        async with edge.client.get(
            f"/m/{media.id}", params={"pointer": ptr}, headers=bearer(issuer.mint("bob", dev="laptop"))
        ) as r:
            assert r.status == 200
        if same_second:
            assert await get_media(edge, media.id, same_second, ptr) == (401, "playback_ended")


async def test_a_sign_out_needs_the_bearer_session_not_the_cookie_nor_a_cross_site_page(
    playback_edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    """The cookie alone cannot end anything (401), and a cross-site form post cannot send
    the bearer: only the device's own session ends its cookies."""
    media, _ = await playback_edge.add_media()
    ptr = mint(ring, media, "bob")
    bobs, _ = await cookie_for(playback_edge, issuer.mint("bob", dev="laptop"))
    async with playback_edge.client.delete(
        "/v1/playback-session",
        headers={"Cookie": f"{COOKIE_NAME}={bobs}", "Origin": "https://evil.example"},
    ) as r:
        assert r.status == 401
    # Mallory's own sign-out with device "laptop" ends only her cookies.
    assert await sign_out(playback_edge, issuer.mint("mallory", dev="laptop")) == 200
    await wait_until(_ended(playback_edge, "mallory", "laptop"), 5)
    assert await get_media(playback_edge, media.id, bobs, ptr) == (200, "")
