"""Per-user (or per-address) rate limits: one GCRA Lua script per key, declared on routes.

Why GCRA (the generic cell rate algorithm, as in redis-cell and Stripe's
limiter): it stores one number per (subject, limit), the theoretical arrival
time, so memory per abusive client is a few dozen bytes that expire by
themselves after at most ``burst`` intervals; it allows a burst and then a
steady rate, and it answers how long to wait (``Retry-After``) exactly.  The
script reads Redis's own ``TIME`` so every process and worker agrees on the
clock, and it touches one key, hash-tagged by subject, so it runs unchanged
on a Redis Cluster.

No library fits: ``limits``/``aiohttp-ratelimiter`` bring their own Redis
connections (coredis or a URL), while both services inject one
``redis.asyncio`` client (single or cluster) built for the test or the
deployment.

How a route is limited: give its :class:`service_kernel.openapi.Route` a
``limit="name"``; :func:`service_kernel.openapi.add_routes` wraps the handler so
the app's :class:`RateLimiter` (``app[RATE_LIMITER]``) charges the caller
before the handler runs.  The subject is the session's user (routes with
``auth="none"``: the client address).  Names and their rates live in the
service's settings (``rate_limits``), so an operator tunes them there.

A subject that asks again while still refused (it ignored ``Retry-After``)
is refused from memory, with no Redis round trip, and its answer is *paced*:
held for ``repeat_delay_s`` (at most its remaining wait) before the 429 goes
out, as nginx's ``limit_req`` delays excess requests.  A client that retries
at full speed on a few connections then asks a few times a second instead of
thousands, so its refusals stop taking the CPU other users' requests need
(the abuse benchmark measured a victim's push p99 at 2.3-2.7x its baseline
with refusals answered at once).  At most ``max_paced`` answers wait at once
per process (each holds a connection and a task); beyond that, a repeat
refusal is not answered: its connection is closed.  The first refusal is
never delayed: a well-behaved client learns its wait without one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web

from .errors import RateLimited
from .redis_client import RedisClient

#: KEYS: the (subject, limit) key.  ARGV: emission interval (µs per unit), burst, cost (the
#: units this request takes: 1 for a request, N for a replay of N events).
#: Returns 0 when allowed, else the microseconds until the request would be allowed.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local wait = new_tat - now - interval * burst
if wait > 0 then return wait end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return 0
"""


def rate_limit_key(subject: str, name: str) -> str:
    """One GCRA timestamp per (subject, limit); expires after at most ``burst`` intervals.
    Both services use it (subjects are ``u:<user>`` or ``ip:<address>``); hash-tagged by
    subject, so one subject's limits share a Cluster slot."""
    return f"cdn:rl:{{{subject}}}:{name}"


class Limit(NamedTuple):
    """``rate_per_s`` steady requests per second, after a burst of ``burst`` at once."""

    rate_per_s: float
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, round(1_000_000 / self.rate_per_s))


def parse_limits(raw: Mapping[str, Any], defaults: Mapping[str, Limit]) -> dict[str, Limit]:
    """Defaults overlaid with ``raw`` (``{"send": [50, 100]}`` from settings/env)."""
    out = dict(defaults)
    for name, value in raw.items():
        rate, burst = value
        if not (float(rate) > 0 and int(burst) >= 1):
            raise ValueError(f"rate limit {name}: rate must be > 0 and burst >= 1")
        out[name] = Limit(float(rate), int(burst))
    return out


#: Refusals remembered in process (subject, limit) -> until; emptied when this large.
DENIED_MAX = 100_000
#: Repeat refusals held before they are answered (see the module docstring), and how many
#: may be held at once per process.
REPEAT_DELAY_S = 0.5
MAX_PACED = 1024

Identify = Callable[[web.Request], Awaitable[str]]


@dataclass(frozen=True)
class RateLimiter:
    """Charges one request to ``(subject, limit name)``; raises :class:`RateLimited`."""

    redis: RedisClient
    limits: Mapping[str, Limit]
    #: The caller's user id (verifies the session: a 401 comes before any charge).
    identify: Identify
    enabled: bool = True
    #: How long a repeat refusal is held (0: answered at once), and how many at once.
    repeat_delay_s: float = REPEAT_DELAY_S
    max_paced: int = MAX_PACED

    def __post_init__(self) -> None:
        object.__setattr__(self, "_script", self.redis.register_script(GCRA))
        object.__setattr__(self, "_denied", {})
        object.__setattr__(self, "_paced", [0, 0])  # answers held now, and ever (mutable)

    @property
    def paced(self) -> tuple[int, int]:
        """Repeat refusals being held right now, and held since start."""
        now, ever = self._paced  # type: ignore[attr-defined]
        return now, ever

    async def charge(self, name: str, subject: str, cost: int = 1) -> None:
        """Take ``cost`` units (at most the burst: more could never be allowed) of the
        subject's ``name`` limit, or raise :class:`RateLimited` with the wait."""
        limit = self.limits[name]
        if not self.enabled:
            return
        cost = min(max(cost, 1), limit.burst)
        # A subject already refused is refused again from memory until its wait is over (for
        # a request costing at least what was refused: a smaller one may fit, and asks Redis):
        # an attacker hammering past 429 costs no Redis round trip per request.
        denied: dict[tuple[str, str], tuple[float, int]] = self._denied  # type: ignore[attr-defined]
        refused = denied.get((subject, name))
        now = time.monotonic()
        if refused is not None:
            until, refused_cost = refused
            if now >= until:
                del denied[(subject, name)]
            elif cost >= refused_cost:
                held = await self._pace(until - now)
                err = _limited(name, until - time.monotonic())
                err.drop = not held
                raise err
        wait_us = int(
            await self._script(  # type: ignore[attr-defined]
                keys=[rate_limit_key(subject, name)], args=[limit.interval_us, limit.burst, cost]
            )
        )
        if wait_us > 0:
            if len(denied) >= DENIED_MAX:
                denied.clear()  # bounded; forgetting only costs a Redis round trip
            denied[(subject, name)] = (now + wait_us / 1_000_000, cost)
            raise _limited(name, wait_us / 1_000_000)

    async def _pace(self, wait_s: float) -> bool:
        """Hold a repeat refusal; False when it cannot be held (every slot taken)."""
        held: list[int] = self._paced  # type: ignore[attr-defined]
        delay = min(self.repeat_delay_s, wait_s)
        if delay <= 0:
            return True  # pacing off: answered at once, as configured
        if held[0] >= self.max_paced:
            return False
        held[0] += 1
        held[1] += 1
        try:
            await asyncio.sleep(delay)
        finally:
            held[0] -= 1
        return True

    async def charge_request(
        self,
        name: str,
        request: web.Request,
        *,
        by_address: bool,
        cost: int = 1,
        subject: str | None = None,
    ) -> None:
        """:meth:`charge` for a request's caller.  A repeat refusal that cannot be held (every
        slot taken) is not answered: the connection is closed, so a client retrying on more
        connections than there are slots gains no answers by it (each costs it a new
        connection), and the slots bound what pacing holds."""
        if subject is None:
            subject = (
                f"ip:{request.remote or 'unknown'}"
                if by_address
                else f"u:{await self.identify(request)}"
            )
        try:
            await self.charge(name, subject, cost)
        except RateLimited as err:
            if err.drop and request.transport is not None:
                request.transport.close()
            raise


def _limited(name: str, wait_s: float) -> RateLimited:
    wait_s = max(wait_s, 0.001)  # a wait that ended while held still says "retry"
    err = RateLimited(f"{name}: retry in {int(wait_s * 1000)} ms")
    err.retry_after_s = max(1, math.ceil(wait_s))
    return err


RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter", RateLimiter)
