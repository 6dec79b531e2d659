"""The edge's hot-path machinery: single-flight media reads, the decision cache,
pre-bound metrics, memoized media values and the off-loop access log.

Concurrency is made deterministic with gates (an event the registry read waits
on), never with sleeps; no test asserts anything about time taken.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cdn_auth import revocation
from cdn_auth.errors import MediaNotFound, RedisUnavailable
from cdn_auth.keyring import KeyRing
from cdn_auth.media import Media
from cdn_auth.metrics import Metrics
from dm.identity import DevIssuer
from service_kernel import logs
from service_kernel.cache import ExpiringCache

from ..support.edge import mint
from ..support.services import Edge, bearer, wait_until


class GatedGet:
    """Wraps ``MediaRegistry.get``: counts calls, holds each at a gate, can fail on release."""

    def __init__(self, edge: Edge) -> None:
        self.registry = edge.state.registry
        self.original: Callable[[str], Awaitable[Media]] = edge.state.registry.get
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self, media_id: str) -> Media:
        self.calls.append(media_id)
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return await self.original(media_id)

    def __enter__(self) -> GatedGet:
        self.registry.get = self  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.registry.get  # back to the class's method


def sample(edge: Edge, name: str, **labels: str) -> float:
    return edge.state.metrics.registry.get_sample_value(name, labels) or 0.0


def media_misses(edge: Edge) -> float:
    return sample(edge, "cdn_auth_cache_lookups_total", cache="media", result="miss")


async def get_media(edge: Edge, media_id: str, session: str, ptr: str) -> tuple[int, bytes]:
    async with edge.client.get(f"/m/{media_id}", params={"pointer": ptr}, headers=bearer(session)) as r:
        return r.status, await r.read()


async def all_waiting(edge: Edge, gated: GatedGet, before: float, n: int) -> None:
    """Every one of ``n`` requests has missed the media cache (and so joined the read,
    which is synchronous after the miss) and the one read has started."""
    await wait_until(lambda: media_misses(edge) - before >= n and gated.calls, 10)


# -- single flight over HTTP ---------------------------------------------------------------


async def test_concurrent_misses_share_one_registry_read(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, data = await edge.add_media()
    session, ptr = issuer.mint("bob"), mint(ring, media)
    n = 24
    before = media_misses(edge)
    with GatedGet(edge) as gated:
        requests = [asyncio.ensure_future(get_media(edge, media.id, session, ptr)) for _ in range(n)]
        await all_waiting(edge, gated, before, n)
        gated.gate.set()
        results = await asyncio.gather(*requests)
        assert results == [(200, data)] * n
        assert gated.calls == [media.id]  # one read for all n
        assert await get_media(edge, media.id, session, ptr) == (200, data)
        assert gated.calls == [media.id]  # and then cached
    assert edge.state.authorizer.media_lookup.in_flight == 0


async def test_concurrent_misses_send_one_hgetall_to_redis(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, redis: Any
) -> None:
    """The same, with the reads counted by the real Redis server (the wrapper only gates)."""
    media, data = await edge.add_media()
    session, ptr = issuer.mint("bob"), mint(ring, media)
    n = 32
    before, calls_before = media_misses(edge), await hgetall_calls(redis)
    with GatedGet(edge) as gated:
        requests = [asyncio.ensure_future(get_media(edge, media.id, session, ptr)) for _ in range(n)]
        await all_waiting(edge, gated, before, n)
        gated.gate.set()
        assert await asyncio.gather(*requests) == [(200, data)] * n
    assert await hgetall_calls(redis) - calls_before == 1


async def hgetall_calls(redis: Any) -> int:
    """HGETALL calls served, from INFO commandstats (summed over a cluster's nodes)."""
    from redis.asyncio.cluster import RedisCluster

    if isinstance(redis, RedisCluster):
        replies = await redis.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
        infos = list(replies.values())
    else:
        infos = [await redis.info("commandstats")]
    return sum(int(i.get("cmdstat_hgetall", {}).get("calls", 0)) for i in infos)


async def test_error_in_shared_read_reaches_every_waiter_and_is_not_cached(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, data = await edge.add_media()
    session, ptr = issuer.mint("bob"), mint(ring, media)
    n = 12
    before = media_misses(edge)
    with GatedGet(edge) as gated:
        gated.error = RedisUnavailable("injected")
        requests = [
            asyncio.ensure_future(
                edge.client.get(f"/m/{media.id}", params={"pointer": ptr}, headers=bearer(session))
            )
            for _ in range(n)
        ]
        await all_waiting(edge, gated, before, n)
        gated.gate.set()
        for resp in await asyncio.gather(*requests):
            async with resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["code"] == "redis_unavailable"
        assert gated.calls == [media.id]
        assert sample(edge, "cdn_auth_decisions_total", outcome="error", reason="redis_unavailable") == n
        # Not cached: the next request reads again, and succeeds.
        gated.error = None
        assert await get_media(edge, media.id, session, ptr) == (200, data)
        assert gated.calls == [media.id, media.id]


async def test_shared_read_errors_are_raised_to_each_caller(edge: Edge) -> None:
    authorizer = edge.state.authorizer
    with GatedGet(edge) as gated:
        waiters = [asyncio.ensure_future(authorizer.media("m_missing")) for _ in range(5)]
        await wait_until(lambda: gated.calls, 5)
        gated.gate.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, MediaNotFound) for r in results), results
    assert gated.calls == ["m_missing"]
    assert authorizer.media_cache.get("m_missing") is None
    assert authorizer.media_lookup.in_flight == 0


async def test_cancelled_waiter_does_not_cancel_the_shared_read(edge: Edge) -> None:
    media, _ = await edge.add_media()
    authorizer = edge.state.authorizer
    with GatedGet(edge) as gated:
        first = asyncio.ensure_future(authorizer.media(media.id))
        others = [asyncio.ensure_future(authorizer.media(media.id)) for _ in range(3)]
        await wait_until(lambda: gated.calls, 5)
        first.cancel()  # e.g. the client that caused the read went away
        with pytest.raises(asyncio.CancelledError):
            await first
        gated.gate.set()
        assert await asyncio.gather(*others) == [media] * 3
    assert gated.calls == [media.id]
    assert authorizer.media_cache.get(media.id) == media


async def test_takedown_during_a_read_keeps_the_read_out_of_the_cache(edge: Edge) -> None:
    media, _ = await edge.add_media()
    authorizer = edge.state.authorizer
    with GatedGet(edge) as gated:
        waiter = asyncio.ensure_future(authorizer.media(media.id))
        await wait_until(lambda: gated.calls, 5)
        await edge.state.revocations.publish(revocation.takedown(media.id))
        await wait_until(lambda: authorizer.tailer.view.is_taken_down(media.id), 5)
        gated.gate.set()
        assert (await waiter).id == media.id  # its waiters still get their answer
    assert authorizer.media_cache.get(media.id) is None  # read before the takedown: dropped


# -- the decision cache --------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_cache_entries_live_until_their_own_expiry() -> None:
    clock = FakeClock()
    c: ExpiringCache[str] = ExpiringCache("t", 10, clock)
    c.put("a", "A", 1010)
    c.put("b", "B", 1020)
    clock.now = 1009.9
    assert (c.get("a"), c.get("b"), len(c)) == ("A", "B", 2)
    clock.now = 1010  # live while now < expires_at
    assert (c.get("a"), c.get("b"), len(c)) == (None, "B", 1)
    c.put("b", "B2", 1000)  # an already expired value removes the key
    assert (c.get("b"), len(c)) == (None, 0)


def test_cache_evicts_expired_entries_before_the_least_recently_used() -> None:
    clock = FakeClock()
    c: ExpiringCache[int] = ExpiringCache("t", 3, clock)
    c.put("short", 1, 1005)
    c.put("old", 2, 2000)
    c.put("new", 3, 2000)
    assert c.get("short") == 1  # now the most recently used, "old" the least
    clock.now = 1006
    c.put("x", 4, 2000)  # full: the expired entry goes, not the least recently used
    assert [c.get(k) for k in ("short", "old", "new", "x")] == [None, 2, 3, 4]
    c.put("y", 5, 2000)  # full again, nothing expired: the least recently used ("old") goes
    assert [c.get(k) for k in ("old", "new", "x", "y")] == [None, 3, 4, 5]


def test_cache_replacing_a_key_keeps_one_entry_and_its_new_expiry() -> None:
    clock = FakeClock()
    c: ExpiringCache[int] = ExpiringCache("t", 4, clock)
    for i in range(100):
        c.put("k", i, 1001 + i)
    clock.now = 1050
    assert (c.get("k"), len(c)) == (99, 1)
    c.evict("k")
    c.evict("absent")
    assert (c.get("k"), len(c)) == (None, 0)


def test_cache_lookups_are_counted() -> None:
    seen: list[tuple[str, bool]] = []
    c: ExpiringCache[int] = ExpiringCache("t", 4, FakeClock(), lambda n, h: seen.append((n, h)))
    c.put("a", 1, 2000)
    c.get("a")
    c.get("b")
    assert seen == [("t", True), ("t", False)]
    m = Metrics()
    hits = ExpiringCache[int](
        "pointer",
        4,
        FakeClock(),
        on_hit=m.cache_counters("pointer").hit,
        on_miss=m.cache_counters("pointer").miss,
    )
    hits.put("a", 1, 2000)
    for key in ("a", "a", "b"):
        hits.get(key)
    value = m.registry.get_sample_value
    assert value("cdn_auth_cache_lookups_total", {"cache": "pointer", "result": "hit"}) == 2
    assert value("cdn_auth_cache_lookups_total", {"cache": "pointer", "result": "miss"}) == 1


# -- memoized media values -----------------------------------------------------------------


async def test_media_derived_values_are_memoized_and_not_part_of_the_record(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, data = await edge.add_media()
    assert await get_media(edge, media.id, issuer.mint("bob"), mint(ring, media)) == (200, data)
    cached = edge.state.authorizer.media_cache.get(media.id)
    assert cached is not None and cached == media
    path = cached.origin_file(edge.state.origin)
    assert path == edge.state.origin.root / media.origin
    assert cached.origin_file(edge.state.origin) is path
    assert cached.last_modified is cached.last_modified
    assert "_etag" not in repr(cached)
    assert set(cached.public_view()) == set(media.public_view())
    assert not any(k.startswith("_") for k in cached.public_view())


# -- the access log, written off the loop --------------------------------------------------


async def test_queued_json_log_has_access_lines_without_tokens(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    import aiohttp
    from aiohttp import web

    from service_kernel.redis_process import free_port

    media, _ = await edge.add_media()
    session, ptr = issuer.mint("bob"), mint(ring, media)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out = io.StringIO()
    runner = web.AppRunner(edge.app, access_log_class=logs.AccessLogger)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        logs.configure("INFO", stream=out)
        async with aiohttp.ClientSession() as http:
            for who in (session, issuer.mint("eve")):
                async with http.get(
                    f"http://127.0.0.1:{port}/m/{media.id}", params={"pointer": ptr}, headers=bearer(who)
                ) as r:
                    await r.read()
        try:
            raise ValueError("kept")
        except ValueError:
            logging.getLogger("t").exception("with %s", "args")
    finally:
        await site.stop()
        logs.shutdown()  # drains the queue
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    access = [d for d in lines if d["msg"] == "access"]
    assert [d["status"] for d in access] == [200, 403]
    assert {d["path"] for d in access} == {f"/m/{media.id}"}
    error = next(d for d in lines if d["logger"] == "t")
    assert error["msg"] == "with args" and "ValueError: kept" in error["exc"]
    text = out.getvalue()
    assert ptr not in text and session not in text and ptr[:20] not in text
