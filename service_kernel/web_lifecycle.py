"""What both services' apps share: a tailer run for the app's life, and readiness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from .redis_client import RedisClient, RedisFailure
from .stream_tail import StreamTailer, running


def tail_while_running(
    tailer: StreamTailer, owned_clients: list[RedisClient]
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """A cleanup context: tail while the app runs; close the clients the app created, after."""

    @contextlib.asynccontextmanager
    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        try:
            async with running(tailer):
                yield
        finally:
            for client in owned_clients:  # only after the tailer has stopped using them
                with contextlib.suppress(Exception):
                    await client.aclose()

    return lifecycle


async def redis_answers(redis: RedisClient, timeout_s: float = 1.0) -> bool:
    """Whether Redis answers a PING within ``timeout_s`` (readiness, and the ``*_redis_up``
    gauges set at scrape time)."""
    try:
        async with asyncio.timeout(timeout_s):
            await redis.ping()
    except (*RedisFailure, OSError, TimeoutError):
        return False
    return True


async def readiness(redis: RedisClient, fresh: bool, **extra: Any) -> web.Response:
    """200 when Redis answers and the service's stream tail is fresh, else 503 + Retry-After."""
    redis_ok = await redis_answers(redis)
    ready = redis_ok and fresh
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "redis": redis_ok, **extra},
        status=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )
