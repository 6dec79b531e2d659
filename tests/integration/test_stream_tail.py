"""A stream tail outlives every failure it can meet, and loses nothing to one.

A CI run once saw the edge's revocation view go stale for good on the Redis Cluster: the
Cluster client raises ``RedisClusterException`` (not a ``RedisError``) when no node
answers its topology refresh; the tail caught only ``RedisError`` and ended, and every
pointer was refused 503 ``revocation_stale`` until a restart.  These tests put such
failures between a real Redis and the tail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import RedisClusterException

from service_kernel.redis_client import connect
from service_kernel.stream_tail import Entry, StreamTailer, running
from service_kernel.web_errors import error_middleware

from ..support.services import RedisBackend, wait_until

KEY = "test:tail"


@pytest.fixture
async def tail_client(redis_server: RedisBackend) -> AsyncIterator[Any]:
    """The tail's own client, as the services give theirs (no socket timeout: the blocking
    XREAD guards itself), apart from the client the test writes with."""
    client = connect(redis_server.url, cluster=redis_server.cluster, socket_timeout_s=None)
    yield client
    await client.aclose()


class FailingOnce:
    """A real client whose next XREADs raise the given exceptions first, one per call."""

    def __init__(self, redis: Any, *failures: Exception) -> None:
        self._redis = redis
        self.failures = list(failures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            raise self.failures.pop(0)
        return await self._redis.xread(*args, **kwargs)


async def test_the_tail_survives_a_cluster_client_exception_and_any_other(
    redis: Any, tail_client: Any
) -> None:
    client = FailingOnce(
        tail_client, RedisClusterException("Redis Cluster cannot be connected"), ValueError("a bug")
    )
    seen: list[Entry] = []
    tailer = StreamTailer(client, KEY, seen.extend, block_ms=100)  # type: ignore[arg-type]
    async with running(tailer):
        await wait_until(lambda: not client.failures, 10)
        await redis.xadd(KEY, {"e": "after"})
        await wait_until(lambda: [f for _, f in seen] == [{"e": "after"}], 10)
        assert tailer.age_s() < 1.0


async def test_a_batch_whose_handling_fails_is_read_again_not_skipped(
    redis: Any, tail_client: Any
) -> None:
    seen: list[str] = []
    calls = 0

    def handle(entries: list[Entry]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the first attempt fails")
        seen.extend(f["e"] for _, f in entries)

    tailer = StreamTailer(tail_client, KEY, handle, block_ms=100)
    async with running(tailer):
        await tailer.loaded.wait()
        await redis.xadd(KEY, {"e": "revoke-1"})
        await wait_until(lambda: seen == ["revoke-1"], 10)


async def test_a_cluster_client_exception_in_a_handler_is_a_503_not_a_500() -> None:
    async def handler(request: web.Request) -> web.Response:
        raise RedisClusterException("Redis Cluster cannot be connected")

    app = web.Application(middlewares=[error_middleware()])
    app.router.add_get("/x", handler)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/x")
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "redis_unavailable"
        assert resp.headers["Retry-After"] == "1"


async def test_a_tail_cancelled_while_retrying_stops(tail_client: Any) -> None:
    client = FailingOnce(tail_client, *(ValueError("always") for _ in range(1000)))
    tailer = StreamTailer(client, KEY, lambda e: None, block_ms=100)  # type: ignore[arg-type]
    task = asyncio.create_task(tailer.run())
    await asyncio.sleep(0.3)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
