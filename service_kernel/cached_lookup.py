"""A cached lookup with single flight: a bounded expiring cache in front of an async loader.

Both services look sessions and media records up on every request and cache
them.  When a popular entry expires, every request in flight for it misses at
once; with single flight they share one load instead of each sending its own.
The load runs as its own task and each waiter awaits it through ``shield()``,
so a waiter that is cancelled (a client gone) neither cancels the load for the
others nor leaves them without an answer.  A failed load reaches every waiter
and is not cached: the task leaves the in-flight map when it finishes, and the
next miss loads again.  :meth:`CachedLookup.evict` also forgets a load in
flight (it may predate whatever made the entry stale): its waiters still get
its answer, but it is not cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .cache import ExpiringCache, Key

A = TypeVar("A")
V = TypeVar("V")


class CachedLookup(Generic[A, V]):
    """``await lookup.get(arg)``: the cached value for ``key(arg)``, or ``load(arg)`` once.

    ``cache`` is the bounded expiring cache (its clock is the lookup's clock);
    ``expires_at(value)`` says until when a loaded value is good (epoch s), e.g. a
    token's ``exp`` or the cache clock's now plus a TTL; ``key`` maps the argument to
    the cache key (identity by default; a token digest for tokens).
    """

    def __init__(
        self,
        cache: ExpiringCache[V],
        load: Callable[[A], Awaitable[V]],
        *,
        expires_at: Callable[[V], float],
        key: Callable[[A], Key] | None = None,
    ) -> None:
        self.cache = cache
        self._load = load
        self._expires_at = expires_at
        self._key = key
        self._in_flight: dict[Key, asyncio.Task[V]] = {}

    @property
    def in_flight(self) -> int:
        """Loads running now (one per key at most)."""
        return len(self._in_flight)

    async def get(self, arg: A) -> V:
        key: Key = arg if self._key is None else self._key(arg)  # type: ignore[assignment]
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        task = self._in_flight.get(key)
        if task is None:
            # Registered before it first runs (a task starts on the next loop iteration).
            task = asyncio.get_running_loop().create_task(self._fill(key, arg))
            self._in_flight[key] = task
            task.add_done_callback(_retrieve_exception)
        return await asyncio.shield(task)

    def evict(self, key: Key) -> None:
        """Drop the cached value and forget a load in flight (its result is not cached)."""
        self.cache.evict(key)
        self._in_flight.pop(key, None)

    def clear(self) -> None:
        self.cache.clear()
        self._in_flight.clear()

    async def _fill(self, key: Key, arg: A) -> V:
        me = asyncio.current_task()
        try:
            value = await self._load(arg)
            if self._in_flight.get(key) is me:  # not evicted while loading
                self.cache.put(key, value, self._expires_at(value))
            return value
        finally:
            if self._in_flight.get(key) is me:
                del self._in_flight[key]


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    """Mark a shared load's error as retrieved: every waiter may have been cancelled."""
    if not task.cancelled():
        task.exception()
