"""Faults a test inflicts on its own redis-server: frozen, connections killed, and the
client warmed so that a lone command and a batch each hold an open connection first."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as plain_redis

from service_kernel.redis_process import RedisProcess


@contextmanager
def stopped(proc: RedisProcess) -> Iterator[None]:
    """The server frozen (SIGSTOP): it accepts nothing and answers nothing until SIGCONT."""
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)


async def kill_clients(proc: RedisProcess) -> None:
    """CLIENT KILL every other client connection, from a plain client of its own."""
    admin: Any = plain_redis.Redis.from_url(proc.url)
    try:
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    finally:
        await admin.aclose()
    await asyncio.sleep(0.05)  # the FINs reach the client's sockets


async def warm(c: Any, key: str = "k") -> None:
    """Open the connections a lone command and a batch take (a lone one, then a batch)."""
    await asyncio.gather(*(c.get(key) for _ in range(20)))
