"""Revocation: the stream, each edge's view, staleness failing closed, catching up after a cut."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cdn_auth import revocation
from cdn_auth.keyring import KeyRing
from cdn_auth.revocation import RevocationEvent, RevocationLog
from cdn_auth.revocation_view import RevocationView
from dm.identity import DevIssuer
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisProcess

from ..support.edge import fetch, mint
from ..support.services import Edge, EdgeFactory, RedisBackend, wait_until
from ..support.tcp_proxy import TcpProxy


async def test_unsend_visible_at_edge_within_one_second(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    media, _ = await edge.add_media()
    bob, ptr = issuer.mint("bob"), mint(ring, media, msg="msg_9")
    assert (await fetch(edge, media.id, bob, ptr))[0] == 200
    await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_9"))

    async def refused() -> bool:
        status, body = await fetch(edge, media.id, bob, ptr)
        return status == 410 and body["error"]["code"] == "message_unsent"

    await wait_until(refused, timeout_s=1.0)
    other = mint(ring, media, msg="msg_10")  # another message in the conversation still plays
    assert (await fetch(edge, media.id, bob, other))[0] == 200


async def test_member_left_denies_pointers_minted_before_and_after(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    media, _ = await edge.add_media()
    bob, ptr = issuer.mint("bob"), mint(ring, media, now=time.time() - 5)
    await RevocationLog(redis).publish(revocation.left("c_1", "bob"))

    async def refused() -> bool:
        status, body = await fetch(edge, media.id, bob, ptr)
        return status == 403 and body["error"]["code"] == "not_a_member"

    await wait_until(refused, timeout_s=1.0)
    # Conversations have no re-add: a pointer minted after the leave (a replay, a stale
    # cache) is refused too (issue 9, finding 2: the old rule compared iat with the leave).
    status, body = await fetch(edge, media.id, bob, mint(ring, media, now=time.time() + 2))
    assert (status, body["error"]["code"]) == (403, "not_a_member")
    # Another member of the same conversation is unaffected.
    carol = issuer.mint("carol")
    assert (await fetch(edge, media.id, carol, mint(ring, media, sub="carol")))[0] == 200


async def test_starting_edge_loads_the_window(
    make_edge: EdgeFactory, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_old"))
    edge = await make_edge()  # starts after the event was written
    media, _ = await edge.add_media()
    status, body = await fetch(edge, media.id, issuer.mint("bob"), mint(ring, media, msg="msg_old"))
    assert (status, body["error"]["code"]) == (410, "message_unsent")


async def test_redis_stopped_serves_cache_within_bound_then_503(
    make_edge: EdgeFactory, issuer: DevIssuer, ring: KeyRing, tmp_path: Path
) -> None:
    server = RedisProcess(tmp_path / "own-redis").start()
    restarted = RedisProcess(server.data_dir, port=server.port)
    try:
        edge = await make_edge(redis_url=server.url, staleness_bound_s=1.5, revocation_block_ms=100)
        private, _ = await edge.add_media()
        public, _ = await edge.add_media(visibility="public")
        bob, ptr = issuer.mint("bob"), mint(ring, private)
        assert (await fetch(edge, private.id, bob, ptr))[0] == 200
        assert (await fetch(edge, public.id, bob))[0] == 200
        server.stop()
        # Within the staleness bound the cached decision still serves.
        assert (await fetch(edge, private.id, bob, ptr))[0] == 200

        async def stale() -> bool:
            return (await fetch(edge, private.id, bob, ptr))[0] == 503

        await wait_until(stale, timeout_s=5.0)
        async with edge.client.get(
            f"/m/{private.id}", params={"pointer": ptr}, headers={"Authorization": f"Bearer {bob}"}
        ) as r:
            assert r.headers["Retry-After"]
            assert (await r.json())["error"]["code"] == "revocation_stale"
        assert (await fetch(edge, public.id, bob))[0] == 200  # public media is still served
        async with edge.client.get("/readyz") as r:
            assert r.status == 503
        # A cache miss needs Redis: 503, never 500.
        status, body = await fetch(edge, "m_notcached", bob)
        assert (status, body["error"]["code"]) == (503, "redis_unavailable")

        restarted.start()  # same port, same append-only file

        async def recovered() -> bool:
            return (await fetch(edge, private.id, bob, ptr))[0] == 200

        await wait_until(recovered, timeout_s=5.0)
    finally:
        server.stop()
        restarted.stop()


async def test_edge_catches_up_on_revocations_written_while_cut_off(
    make_edge: EdgeFactory, issuer: DevIssuer, ring: KeyRing, redis: Any, redis_server: RedisBackend
) -> None:
    proxy = await TcpProxy(redis_server.port).start()
    edge = await make_edge(redis_url=proxy.url, staleness_bound_s=1.0, revocation_block_ms=100)
    media, _ = await edge.add_media()
    bob, ptr = issuer.mint("bob"), mint(ring, media, msg="msg_cut")
    assert (await fetch(edge, media.id, bob, ptr))[0] == 200
    await proxy.cut()
    await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_cut"))  # edge cannot see it

    async def stale() -> bool:
        return (await fetch(edge, media.id, bob, ptr))[0] == 503

    await wait_until(stale, timeout_s=5.0)  # fails closed rather than serve a revoked pointer
    await proxy.start()

    async def caught_up() -> bool:
        status, body = await fetch(edge, media.id, bob, ptr)
        return status == 410 and body["error"]["code"] == "message_unsent"

    await wait_until(caught_up, timeout_s=5.0)
    await proxy.cut()


def test_view_forgets_entries_after_the_window() -> None:
    now = [1000.0]
    view = RevocationView(window_s=60, clock=lambda: now[0])
    view.apply(RevocationEvent("unsent", conversation_id="c", message_id="m", at_ms=1_000_000))
    view.apply(RevocationEvent("left", conversation_id="c", user_id="u", at_ms=1_000_000))
    view.apply(RevocationEvent("grant_revoked", grant_id="g", at_ms=1_030_000))
    assert view.is_unsent("c", "m") and view.left_at("c", "u") == 1000.0
    now[0] = 1061.0
    assert view.expire() == 2
    assert not view.is_unsent("c", "m") and view.left_at("c", "u") is None
    assert view.is_grant_revoked("g")
    now[0] = 1091.0
    view.expire()
    assert len(view) == 0


async def test_stream_is_trimmed_to_retention(redis: Any) -> None:
    log = RevocationLog(redis, retention_s=0)
    for i in range(300):
        await log.publish(revocation.takedown(f"m_{i}"))
    # approximate MINID trimming keeps at most a partial macro node
    assert await redis.xlen("cdn:revocations") < 300


async def test_malformed_stream_entry_is_skipped(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    await redis.xadd("cdn:revocations", {"kind": "bogus"})
    await RevocationLog(redis).publish(revocation.unsent("c_1", "msg_after"))
    media, _ = await edge.add_media()
    ptr = mint(ring, media, msg="msg_after")

    async def refused() -> bool:
        return (await fetch(edge, media.id, issuer.mint("bob"), ptr))[0] == 410

    await wait_until(refused, timeout_s=1.0)


def test_redis_client_factory_builds_cluster_client() -> None:
    client = connect("redis://127.0.0.1:1/0", cluster=True)
    assert type(client).__name__ == "RedisCluster"


async def test_cluster_client_accepts_a_list_of_seed_nodes(redis_server: RedisBackend) -> None:
    if not redis_server.cluster:
        pytest.skip("seed-node lists are a cluster feature; a single server takes one URL")
    seeds = f"redis://127.0.0.1:1/0,{redis_server.url}"  # the first seed is down: still works
    client = connect(seeds, cluster=True)
    try:
        await client.set("k:{x}", "v")
        assert await client.get("k:{x}") == "v"
    finally:
        await client.aclose()
