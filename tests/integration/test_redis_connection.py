"""LeanConnection on a real redis-server: the write that spawns no task and the batch's
one read deadline still end in redis-py's errors (a 503 upstream), never a hang, and the
client recovers once the server answers again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio.connection as redis_connection
from redis.exceptions import TimeoutError as RedisTimeout

from service_kernel.redis_client import RedisFailure, connect
from service_kernel.redis_connection import LeanConnection
from service_kernel.redis_process import RedisProcess

from ..support.redis_faults import stopped, warm


class _NoWaitFor:
    """redis-py's connection module's view of asyncio, with ``wait_for`` refused."""

    def __init__(self, wait_for: Any) -> None:
        self.wait_for = wait_for

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


async def test_the_services_client_uses_it_and_writes_without_a_task(
    single_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    c: Any = connect(single_redis.url)
    try:
        assert c.connection_pool.connection_class is LeanConnection
        await warm(c)  # connecting may wait_for; the writes after it must not

        def no_wait_for(*a: Any, **k: Any) -> Any:
            raise AssertionError("a write that lands in the buffer must not go through wait_for")

        monkeypatch.setattr(redis_connection, "asyncio", _NoWaitFor(no_wait_for))
        assert await c.set("k", "v") is True
        assert await asyncio.gather(*(c.get("k") for _ in range(20))) == ["v"] * 20
    finally:
        monkeypatch.undo()
        await c.aclose()


async def test_a_write_the_server_does_not_take_times_out(single_redis: RedisProcess) -> None:
    c = connect(single_redis.url, socket_timeout_s=0.5)
    try:
        await c.set("k", "v")
        with stopped(single_redis):
            # 32 MB fills the socket buffers, so drain() has to wait for a reader that is gone.
            async with asyncio.timeout(30):  # a hang fails the test instead of the suite
                with pytest.raises(RedisTimeout):
                    await c.set("big", "x" * (32 << 20))
        assert await c.get("k") == "v"  # a fresh connection; the broken one was dropped
    finally:
        await c.aclose()


async def test_a_batch_past_its_deadline_fails_every_caller_then_recovers(
    single_redis: RedisProcess,
) -> None:
    c: Any = connect(single_redis.url, socket_timeout_s=0.5)
    try:
        await c.set("k", "v")
        await warm(c)  # the batch's connection is open before the server stops
        before = c.batches
        with stopped(single_redis):
            async with asyncio.timeout(30):
                results = await asyncio.gather(*(c.get("k") for _ in range(20)), return_exceptions=True)
        assert c.batches > before  # the overlapping GETs went as a batch
        assert all(isinstance(r, RedisTimeout) for r in results), results  # redis-py's: a 503
        assert all(isinstance(r, RedisFailure) for r in results)
        assert await asyncio.gather(*(c.get("k") for _ in range(20))) == ["v"] * 20
    finally:
        await c.aclose()


async def test_batches_reuse_the_clients_held_connections(single_redis: RedisProcess) -> None:
    c: Any = connect(single_redis.url)
    try:
        await c.set("k", "v")
        for _ in range(5):
            await warm(c)
        pool = c.connection_pool
        held = len(c._held)
        assert 1 <= held <= 4
        opened = len(pool._available_connections) + len(pool._in_use_connections)
        for _ in range(20):
            await warm(c)
        assert len(pool._available_connections) + len(pool._in_use_connections) == opened
    finally:
        await c.aclose()
    assert c._held == []  # given back to the pool, which closed them


async def test_held_connections_survive_a_redis_restart(single_redis: RedisProcess) -> None:
    """Connections held across a restart are closed by the server: the next batches must
    not spend their one retry on them (each would have failed its callers with a 503)."""
    c: Any = connect(single_redis.url)
    try:
        await c.set("k", "v")
        for _ in range(3):
            await warm(c)
        assert c._held
        single_redis.stop()  # graceful: the append-only file keeps "k"
        single_redis.start()
        for _ in range(3):
            results = await asyncio.gather(*(c.get("k") for _ in range(20)), return_exceptions=True)
            assert results == ["v"] * 20, results
    finally:
        await c.aclose()


async def test_a_batchs_deadline_moves_on_while_replies_come() -> None:
    """The batch's one deadline is "no reply for (at least half) the socket timeout", as a
    timer per reply would be, not "every reply within one timeout": a reply read with less
    than half of it left pushes it on (the timer is moved rarely)."""
    conn = LeanConnection(socket_timeout=1.0)
    async with asyncio.timeout(1.0) as deadline:
        conn._deadline, conn._deadline_held = deadline, True
        first = deadline.when()
        assert first is not None
        conn._extend_deadline()
        assert deadline.when() == first  # more than half of it left: not moved
        await asyncio.sleep(0.6)
        conn._extend_deadline()
        moved = deadline.when()
        assert moved is not None and moved > first + 0.5
        await asyncio.sleep(0.6)  # past the first deadline: the batch goes on
