"""The per-user WebSocket cap, counted across every dm process by leases in Redis.

Each open socket holds a lease: a member of the user's sorted set
(:func:`dm.redis_keys.user_stream_leases`) whose score is the lease's expiry in
Redis server milliseconds (one clock for every dm host, so no host's skew shortens or
stretches another's leases).  A connect takes a lease in one script (drop expired
leases, count, add if under the cap); the process renews every lease it holds each
``lease_s / 3`` (one script call per user); a close gives the lease back.  A process
that dies takes no leave: its leases lapse within ``lease_s``, and until then they
still count against their users.  One key per user, so the scripts are Cluster-safe.

A process stalled for longer than ``lease_s`` loses its leases (another connect drops
them as expired) and does not take them back: renewal only extends leases still held,
so a socket closed while a renewal was in flight is not revived.  Until such sockets
close, the user may hold a few more than the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from aiohttp import web

from service_kernel.redis_client import RedisClient, RedisFailure

from .redis_keys import user_stream_leases

log = logging.getLogger(__name__)

#: KEYS: the user's leases.  ARGV: socket id, cap, lease ms.  Returns 1 (taken) or 0 (full).
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

#: KEYS: the user's leases.  ARGV: lease ms, socket ids...  Extends the leases still held
#: (ZADD XX: a lease given back or lapsed is not revived); returns how many were extended.
RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1])) end
return n
"""

#: Users whose leases are renewed concurrently (one script call each).
RENEW_CONCURRENCY = 64


class StreamLeases:
    """This process's socket leases: take, renew (while the app runs), give back."""

    def __init__(self, redis: RedisClient, *, cap: int, lease_s: float) -> None:
        self._redis, self.cap, self.lease_s = redis, cap, lease_s
        self._acquire = redis.register_script(ACQUIRE)
        self._renew = redis.register_script(RENEW)
        self._held: dict[str, set[str]] = {}  # user -> socket ids held by this process

    @property
    def renew_every_s(self) -> float:
        return self.lease_s / 3

    async def acquire(self, uid: str) -> str | None:
        """A lease id for one more socket of ``uid``, or None if the user is at the cap."""
        sid = secrets.token_hex(8)
        taken = await self._acquire(
            keys=[user_stream_leases(uid)], args=[sid, self.cap, int(self.lease_s * 1000)]
        )
        if not int(taken):
            return None
        self._held.setdefault(uid, set()).add(sid)
        return sid

    async def release(self, uid: str, sid: str) -> None:
        held = self._held.get(uid)
        if held is not None:
            held.discard(sid)
            if not held:
                del self._held[uid]
        try:
            await self._redis.zrem(user_stream_leases(uid), sid)
        except RedisFailure as exc:  # the lease lapses on its own within lease_s
            log.warning("stream lease of %s not given back: %s", uid, type(exc).__name__)

    async def renew(self) -> None:
        """Extend every lease this process holds (one round)."""
        users = [(uid, sorted(sids)) for uid, sids in self._held.items() if sids]
        gate = asyncio.Semaphore(RENEW_CONCURRENCY)
        lease_ms = int(self.lease_s * 1000)

        async def one(uid: str, sids: list[str]) -> None:
            async with gate:
                try:
                    await self._renew(keys=[user_stream_leases(uid)], args=[lease_ms, *sids])
                except RedisFailure as exc:
                    log.warning("stream leases of %s not renewed: %s", uid, type(exc).__name__)

        await asyncio.gather(*(one(uid, sids) for uid, sids in users))

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every_s)
            try:
                await self.renew()
            except Exception:  # one bad round must not end renewal: every lease would lapse
                log.exception("stream lease renewal round failed")

    @contextlib.asynccontextmanager
    async def renewing(self, _: web.Application) -> AsyncIterator[None]:
        """A cleanup context: renew this process's leases while the app runs."""
        task = asyncio.create_task(self._renew_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


LEASES = web.AppKey("stream_leases", StreamLeases)
