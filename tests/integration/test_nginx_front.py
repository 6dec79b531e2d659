"""nginx in front (deploy/nginx/edge.conf.template + pointer_front.lua): nginx serves the
bytes, the authorizer decides, and the front's decision cache ends on every revocation.

The decision cache time here (30 s) is far longer than any wait in these tests, so a
refusal after a revocation can only come from the edge's push, never from expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import grant, revocation
from cdn_auth.app import FRONT_FEED
from cdn_auth.keyring import KeyRing
from cdn_auth.registry import MediaRegistry
from cdn_auth.revocation import RevocationLog
from dm.identity import JWKS_FILE, DevIssuer
from loadtests.stack.nginx import secure_link
from service_kernel.redis_process import free_port

from ..support.capabilities import call, derive, fetch, issued
from ..support.edge import mint
from ..support.front import Fronted, fronted, nginx_missing
from ..support.services import EdgeFactory, bearer, wait_until

AUTH_CACHE_S = 30
STALENESS_S = 1.0  # short, so the fail-closed tests are quick


def _need_nginx() -> None:
    missing = nginx_missing()
    if missing:
        pytest.skip(missing)  # .ci/run installs nginx and its Lua module, so CI runs these


@contextlib.asynccontextmanager
async def _fronted(
    make_edge: EdgeFactory, prefix: Path, *, edge_secret: str | None = None, **edge_overrides: Any
) -> AsyncIterator[Fronted]:
    _need_nginx()
    async with fronted(
        make_edge,
        prefix,
        auth_cache_s=AUTH_CACHE_S,
        edge_secret=edge_secret,
        revocation_block_ms=200,
        staleness_bound_s=STALENESS_S,
        front_push_interval_s=0.1,
        **edge_overrides,
    ) as f:
        yield f


@pytest.fixture
async def front(make_edge: EdgeFactory, tmp_path: Path) -> AsyncIterator[Fronted]:
    async with _fronted(make_edge, tmp_path / "nginx") as f:
        feed = f.edge.app[FRONT_FEED]
        await wait_until(lambda: feed.pushes > 0, 15)  # generous: a loaded CI machine
        yield f


async def _get(url: str, **headers: str) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.read(), r.headers


async def _from_cache(front: Fronted, url: str, auth: dict[str, str]) -> int:
    """Fetch once and say whether the front answered without asking the authorizer."""
    before = await front.stats()
    status, _, _ = await _get(url, **auth, Range="bytes=0-9")
    after = await front.stats()
    assert after["auth_calls"] == before["auth_calls"], "a repeat range asked the authorizer"
    assert after["hits"] == before["hits"] + 1
    return status


async def _revoked_through_front(front: Fronted, url: str, auth: dict[str, str], expected: int) -> None:
    """Warm the decision, show repeats skip the authorizer, then wait for ``expected``."""
    assert (await _get(url, **auth, Range="bytes=0-9"))[0] == 206
    assert await _from_cache(front, url, auth) == 206


async def _refused_within(front: Fronted, url: str, auth: dict[str, str], expected: int) -> None:
    before = await front.stats()

    async def refused() -> bool:
        status, body, _ = await _get(url, **auth, Range="bytes=0-9")
        assert status in (206, expected), (status, body)
        return status == expected

    await wait_until(refused, timeout_s=5.0)  # far inside AUTH_CACHE_S: the push did it
    assert (await front.stats())["invalidated"] > before["invalidated"]


async def test_authorized_range_served_by_nginx(
    front: Fronted, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, data = await front.edge.add_media(size=200_000)
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    auth = bearer(issuer.mint("bob"))
    status, body, headers = await _get(url, **auth, Range="bytes=1000-1999")
    assert (status, body) == (206, data[1000:2000])
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert "private" in headers["Cache-Control"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, body, _ = await _get(url, **auth)
    assert (status, body) == (200, data)


async def test_repeat_ranges_skip_the_authorizer(
    front: Fronted, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await front.edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    auth = bearer(issuer.mint("bob"))
    assert (await _get(url, **auth, Range="bytes=0-9"))[0] == 206
    for _ in range(3):
        assert await _from_cache(front, url, auth) == 206


@pytest.mark.parametrize("who,expected", [("carol", 403), (None, 401)])
async def test_refusals_pass_through_nginx(
    front: Fronted, issuer: DevIssuer, ring: KeyRing, who: str | None, expected: int
) -> None:
    media, _ = await front.edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    headers = bearer(issuer.mint(who)) if who else {}
    status, body, _ = await _get(url, **headers)
    assert status == expected and media.id.encode() not in body and b'"error"' in body


async def test_unsend_stops_cached_decisions_at_the_front(
    front: Fronted, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    media, _ = await front.edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media, msg='msg_ng')}"
    auth = bearer(issuer.mint("bob"))
    await _revoked_through_front(front, url, auth, 410)
    await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_ng"))
    await _refused_within(front, url, auth, 410)


async def test_leave_stops_cached_decisions_at_the_front(
    front: Fronted, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    media, _ = await front.edge.add_media()
    # (Minted a little in the past, as a pointer held across the leave would be.)
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media, now=time.time() - 2)}"
    auth = bearer(issuer.mint("bob"))
    other, _ = await front.edge.add_media()  # another member's copy stays served
    other_url = f"{front.url}/m/{other.id}?pointer={mint(ring, other, 'dave')}"
    dave = bearer(issuer.mint("dave"))
    await _revoked_through_front(front, url, auth, 403)
    assert (await _get(other_url, **dave, Range="bytes=0-9"))[0] == 206
    await RevocationLog(redis).publish(revocation.left("c_1", "bob"))
    await _refused_within(front, url, auth, 403)
    assert await _from_cache(front, other_url, dave) == 206


async def test_takedown_stops_cached_decisions_at_the_front(
    front: Fronted, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    media, _ = await front.edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    auth = bearer(issuer.mint("bob"))
    await _revoked_through_front(front, url, auth, 410)
    await RevocationLog(redis).publish(revocation.takedown(media.id))
    await _refused_within(front, url, auth, 410)


async def test_grant_revoke_stops_cached_decisions_at_the_front(
    front: Fronted, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    media, _ = await front.edge.add_media()
    token = grant.mint(
        ring.signer(),
        grant_id="g_front",
        media_id=media.id,
        max_redeemers=2,
        sharer="alice",
        now=time.time(),
    )
    url = f"{front.url}/m/{media.id}?grant={token}"
    auth = bearer(issuer.mint("bob"))
    await _revoked_through_front(front, url, auth, 410)
    await RevocationLog(redis).publish(revocation.grant_revoked("g_front"))
    await _refused_within(front, url, auth, 410)


@pytest.mark.parametrize(
    "revoker,which",
    [
        ("bob", "cap_b"),  # the holder revokes his own capability
        ("alice", "cap_b"),  # the media's owner revokes a re-sharer's capability
        ("alice", "cap_a"),  # the owner revokes the capability the re-share came through
    ],
)
async def test_capability_revoke_stops_cached_decisions_at_the_front(
    front: Fronted, issuer: DevIssuer, revoker: str, which: str
) -> None:
    """A grant derived from a share capability (docs/protocol.md, section 14): revoking the
    capability, or the one it re-shares, through the media API ends the front's copy."""
    edge = front.edge
    media, _ = await edge.add_media(owner="alice", allow_reshare=True)
    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    caps = {"cap_a": await issued(edge, issuer.mint("alice"), media.id, alice)}
    d1, _ = derive(alice, caps["cap_a"])
    assert await fetch(edge, media.id, issuer.mint("bob"), d1) == (206, "")
    caps["cap_b"] = await issued(edge, issuer.mint("bob"), media.id, bob, via_grant=d1)
    d2, _ = derive(bob, caps["cap_b"])
    url = f"{front.url}/m/{media.id}"
    auth = {**bearer(issuer.mint("carol")), "X-Grant": d2}
    await _revoked_through_front(front, url, auth, 410)
    status, doc = await call(
        edge, "DELETE", f"/v1/capabilities/{caps[which]['cap_id']}", issuer.mint(revoker)
    )
    assert status == 200, doc
    await _refused_within(front, url, auth, 410)


async def test_key_retirement_stops_cached_decisions_at_the_front(
    front: Fronted, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await front.edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"  # signed by the old key
    auth = bearer(issuer.mint("bob"))
    await _revoked_through_front(front, url, auth, 403)
    ring = ring.add().switch()
    ring, gone = ring.retire(900, now=time.time() + 905)  # as if emergency-retired
    assert gone
    await _refused_within(front, url, auth, 403)
    fresh = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    assert (await _get(fresh, **auth, Range="bytes=0-9"))[0] == 206


async def test_session_key_retirement_stops_cached_decisions_at_the_front(
    front: Fronted, issuer: DevIssuer, ring: KeyRing
) -> None:
    """A decision cached for a session depends on the key that signed it: when the identity
    provider's JWKS drops that key, the front asks again (and the edge refuses)."""
    media, _ = await front.edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    auth = bearer(issuer.mint("bob"))
    await _revoked_through_front(front, url, auth, 401)
    successor = DevIssuer.generate()
    successor.write_jwks(front.edge.tmp / "session-keys" / JWKS_FILE)  # the old key retired
    await _refused_within(front, url, auth, 401)
    assert (await _get(url, **bearer(successor.mint("bob")), Range="bytes=0-9"))[0] == 206


async def test_front_fails_closed_when_the_edge_is_gone(
    front: Fronted, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await front.edge.add_media()
    url = f"{front.url}/m/{media.id}?pointer={mint(ring, media)}"
    auth = bearer(issuer.mint("bob"))
    await _revoked_through_front(front, url, auth, 503)
    await front.edge.client.close()  # the host's edge dies: no pushes, no authorizer

    async def refused() -> bool:
        return (await _get(url, **auth, Range="bytes=0-9"))[0] == 503

    await wait_until(refused, timeout_s=STALENESS_S + 2.0)  # within the bound, or it fails
    assert (await front.stats())["alive"] is False


async def test_front_without_a_working_feed_asks_every_time(
    make_edge: EdgeFactory, tmp_path: Path, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    """The purge path is down (the edge's pushes are refused): nothing is served from cache,
    and a revocation still lands at once because every request reaches the authorizer."""
    async with _fronted(make_edge, tmp_path / "nginx", edge_secret="x" * 24) as f:
        media, _ = await f.edge.add_media()
        url = f"{f.url}/m/{media.id}?pointer={mint(ring, media, msg='msg_nf')}"
        auth = bearer(issuer.mint("bob"))
        feed = f.edge.app[FRONT_FEED]
        await wait_until(lambda: feed.failures > 0, 5)
        for _ in range(3):
            assert (await _get(url, **auth, Range="bytes=0-9"))[0] == 206
        stats = await f.stats()
        assert stats["hits"] == 0 and stats["auth_calls"] >= 3 and stats["alive"] is False
        await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_nf"))

        async def gone() -> bool:
            return (await _get(url, **auth, Range="bytes=0-9"))[0] == 410

        await wait_until(gone, timeout_s=2.0)


async def test_secure_link_baseline_location(front: Fronted) -> None:
    media, data = await front.edge.add_media()
    good = secure_link(f"/sl/{media.origin}", front.nginx.secure_link_secret, int(time.time()) + 60)
    status, body, _ = await _get(front.url + good, Range="bytes=0-99")
    assert (status, body) == (206, data[:100])
    assert (await _get(front.url + good.replace("md5=", "md5=x")))[0] == 403


async def test_decision_cache_is_keyed_by_media_and_token(
    front: Fronted, issuer: DevIssuer, ring: KeyRing
) -> None:
    a, _ = await front.edge.add_media()
    b, _ = await front.edge.add_media()
    auth = bearer(issuer.mint("bob"))
    assert (await _get(f"{front.url}/m/{a.id}?pointer={mint(ring, a)}", **auth))[0] == 200
    # Same session, cached allow for A: B without a pointer and an unknown id stay refused.
    status, body, headers = await _get(f"{front.url}/m/{b.id}", **auth)
    assert status == 403 and b'"error"' in body
    assert headers["Content-Type"].startswith("application/json")
    assert (await _get(f"{front.url}/m/{b.id}?pointer={mint(ring, a)}", **auth))[0] == 403
    status, body, _ = await _get(f"{front.url}/m/m_nope", **auth)
    assert status == 404 and b"media_not_found" in body


async def test_control_listener_refuses_without_the_secret(front: Fronted) -> None:
    url = f"http://127.0.0.1:{front.nginx.control_port}/_front/revocations"
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Front-Secret": "wrong-but-long-enough"}):
            async with http.post(url, data="alive 600000\n", headers=headers) as r:
                assert r.status == 403


# --- issue 9, finding 4: bearer material never reaches nginx's disk -----------------------


async def _exercise(front: Fronted, issuer: DevIssuer, ring: KeyRing, redis: Any) -> list[str]:
    """Allowed, cached, refused (401/403/404/410) and failed (503) requests; their tokens."""
    media, _ = await front.edge.add_media()
    ptr, session = mint(ring, media, msg="msg_log"), issuer.mint("bob")
    stranger = issuer.mint("carol")
    g = grant.mint(
        ring.signer(),
        grant_id="g_log",
        media_id=media.id,
        max_redeemers=1,
        sharer="alice",
        now=time.time(),
    )
    url = f"{front.url}/m/{media.id}?pointer={ptr}"
    for _ in range(3):
        assert (await _get(url, **bearer(session), Range="bytes=0-9"))[0] == 206
    assert (await _get(url, **bearer(stranger)))[0] == 403
    assert (await _get(url))[0] == 401
    assert (await _get(f"{front.url}/m/m_nope?pointer={ptr}", **bearer(session)))[0] == 404
    assert (await _get(f"{front.url}/m/{media.id}?grant={g}", **bearer(session)))[0] == 200
    assert (await _get(f"{front.url}/m/{media.id}?grant={g}", **bearer(stranger)))[0] == 403
    await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_log"))
    await wait_until(lambda: _status_is(url, session, 410), 5)
    await front.edge.client.close()  # the authorizer is down: nginx's own upstream errors
    assert (await _get(url, **bearer(session)))[0] == 503
    return [ptr, session, stranger, g]


async def _status_is(url: str, session: str, status: int) -> bool:
    return (await _get(url, **bearer(session)))[0] == status


def _files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.name}:{n[:12]}" for n in needles if n.encode() in data]
    return hits


async def test_nginx_logs_hold_no_tokens(
    front: Fronted, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    tokens = await _exercise(front, issuer, ring, redis)
    front.nginx.stop()  # flush the buffered access log
    logs = [front.nginx.prefix / "error.log", front.nginx.prefix / "access.log"]
    assert logs[1].read_text().count(" 206 ") >= 3  # the access log does record requests
    for log in logs:
        text = log.read_text()
        assert "pointer=" not in text and "grant=" not in text and "Bearer" not in text
        assert not [t for t in tokens if t in text]


async def test_nginx_cache_keys_hold_no_tokens(
    front: Fronted, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    tokens = await _exercise(front, issuer, ring, redis)
    assert (await front.stats())["decisions"] > 0  # decisions were cached (in shared memory)
    front.nginx.stop()
    # Nothing under nginx's prefix (logs, temp and cache directories) holds a token.
    assert _files_containing(front.nginx.prefix, tokens) == []


# --- issue 9, finding 5: one containment rule on both paths -------------------------------


async def test_nginx_origin_path_traversal_refused(
    front: Fronted, issuer: DevIssuer, ring: KeyRing
) -> None:
    origin = front.edge.state.origin.root
    secret = origin.parent / "outside-secret.txt"
    secret.write_bytes(b"TOP-SECRET-BYTES")
    honest, _ = await front.edge.add_media()
    # A tampered record, written straight into the registry: its origin leaves the root.
    tampered = dataclasses.replace(honest, id="m_tampered", origin="../outside-secret.txt")
    await MediaRegistry(front.edge.state.redis).put(tampered)
    auth = bearer(issuer.mint("bob"))
    ptr = mint(ring, tampered)
    async with front.edge.client.get(
        f"/m/{tampered.id}", params={"pointer": ptr}, headers=auth
    ) as r:  # the aiohttp byte path
        assert r.status == 503 and b"TOP-SECRET" not in await r.read()
    status, body, _ = await _get(f"{front.url}/m/{tampered.id}?pointer={ptr}", **auth)
    assert status == 503 and b"TOP-SECRET" not in body
    # The owner's public-path decision is refused the same way.
    status, body, _ = await _get(f"{front.url}/m/{tampered.id}", **bearer(issuer.mint("alice")))
    assert status == 503 and b"TOP-SECRET" not in body


def test_front_feed_sends_no_liveness_until_the_tail_is_fresh() -> None:
    """Before the revocation tail first loads its age is infinite: no "alive", no crash."""
    from cdn_auth.front_feed import FrontFeed, dep

    freshness = [float("-inf")]
    feed = FrontFeed("http://127.0.0.1:1/", "s" * 16, fresh_for_s=lambda: freshness[0])
    assert feed.body({dep("m", "m_1"): 5}) == f"{dep('m', 'm_1')} 5\n"
    freshness[0] = -0.5  # stale
    assert "alive" not in feed.body({})
    freshness[0] = 4.25
    assert feed.body({}) == "alive 4250\n"


async def test_front_feed_stops_when_a_revocation_lands_as_shutdown_begins() -> None:
    """Regression (a CI run hung 120 s in an edge's shutdown): a revocation that wakes the
    feed in the same loop turn as the cancel must not swallow the cancel.  With
    ``asyncio.wait_for`` on Python 3.11 it did, and the feed then retried its push for
    ever (here against a port nobody listens on)."""
    from cdn_auth.front_feed import FrontFeed, feeding

    feed = FrontFeed(
        f"http://127.0.0.1:{free_port()}/", "s" * 16, fresh_for_s=lambda: 1.0, interval_s=30.0
    )
    for _ in range(20):
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(0)  # the feed now waits for a wake-up (or the 30 s heartbeat)
        feed.on_revocation(revocation.RevocationEvent("takedown", media_id="m_1", at_ms=1))
        task.cancel()  # in the same loop turn as the wake-up
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done and task.cancelled(), "the cancel was swallowed"
    async with feeding(feed):  # and the context manager used by the app ends too
        await asyncio.sleep(0)
        feed.on_revocation(revocation.RevocationEvent("takedown", media_id="m_2", at_ms=2))


async def test_a_starting_edge_replays_many_revocations_in_bounded_pushes(front: Fronted) -> None:
    """An edge that starts (or catches up) may apply hours of revocations at once: they reach
    the front in pushes it accepts, and liveness only comes with the last of them."""
    feed = front.edge.app[FRONT_FEED]
    pushes, failures = feed.pushes, feed.failures  # (pushes before nginx was up failed)
    for n in range(9000):
        feed.on_revocation(revocation.RevocationEvent("takedown", media_id=f"m_x{n}", at_ms=1_000 + n))
    await wait_until(lambda: feed.queued == 0 and feed.pushes >= pushes + 3, 10)
    assert feed.failures == failures
    assert (await front.stats())["alive"] is True
