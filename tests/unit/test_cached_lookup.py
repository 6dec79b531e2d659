"""service_kernel.cached_lookup: a bounded expiring cache with single flight.

Real asyncio, no sleeps: each load waits at a gate (an event) the test opens, and the
clock is a variable the test moves.  Loads are counted, not timed.
"""

from __future__ import annotations

import asyncio

import pytest

from service_kernel.cache import ExpiringCache
from service_kernel.cached_lookup import CachedLookup


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts calls; each call waits at the gate, then answers or raises ``error``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        #: Set when a load starts (tests wait on it instead of polling).
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def __call__(self, key: str) -> str:
        self.calls.append(key)
        self.started.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return f"value of {key}"


def lookup(
    loader: Loader, clock: Clock, *, ttl_s: float = 10.0, maxsize: int = 100
) -> CachedLookup[str, str]:
    return CachedLookup(
        ExpiringCache("test", maxsize, clock), loader, expires_at=lambda _: clock() + ttl_s
    )


async def until_loading(loader: Loader) -> None:
    """Let the event loop run until a load has started."""
    async with asyncio.timeout(5):
        await loader.started.wait()


async def test_concurrent_misses_share_one_load() -> None:
    loader, clock = Loader(), Clock()
    cached = lookup(loader, clock)
    loader.gate.clear()
    waiters = [asyncio.ensure_future(cached.get("a")) for _ in range(10)]
    await until_loading(loader)
    assert cached.in_flight == 1
    loader.gate.set()
    assert await asyncio.gather(*waiters) == ["value of a"] * 10
    assert loader.calls == ["a"]
    assert await cached.get("a") == "value of a"  # then cached
    assert loader.calls == ["a"]
    assert cached.in_flight == 0


async def test_different_keys_load_separately() -> None:
    loader, clock = Loader(), Clock()
    cached = lookup(loader, clock)
    assert list(await asyncio.gather(cached.get("a"), cached.get("b"))) == ["value of a", "value of b"]
    assert sorted(loader.calls) == ["a", "b"]


async def test_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    loader, clock = Loader(), Clock()
    cached = lookup(loader, clock)
    loader.gate.clear()
    loader.error = LookupError("backend down")
    waiters = [asyncio.ensure_future(cached.get("a")) for _ in range(5)]
    await until_loading(loader)
    loader.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results), results
    assert loader.calls == ["a"]  # one load for all five
    assert cached.in_flight == 0
    loader.error = None
    assert await cached.get("a") == "value of a"  # the error was not cached: loads again
    assert loader.calls == ["a", "a"]


async def test_entry_expires_on_the_injected_clock() -> None:
    loader, clock = Loader(), Clock()
    cached = lookup(loader, clock, ttl_s=10.0)
    await cached.get("a")
    clock.now += 9.5
    await cached.get("a")
    assert loader.calls == ["a"]
    clock.now += 0.5  # now == expiry: no longer live
    await cached.get("a")
    assert loader.calls == ["a", "a"]


async def test_bounded_least_recently_used_goes_first() -> None:
    loader, clock = Loader(), Clock()
    cached = lookup(loader, clock, maxsize=2)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        await cached.get(key)
    assert len(cached.cache) == 2
    await cached.get("a")
    await cached.get("c")
    assert loader.calls == ["a", "b", "c"]
    await cached.get("b")
    assert loader.calls == ["a", "b", "c", "b"]


async def test_evict_during_a_load_keeps_its_result_out_of_the_cache() -> None:
    loader, clock = Loader(), Clock()
    cached = lookup(loader, clock)
    loader.gate.clear()
    waiter = asyncio.ensure_future(cached.get("a"))
    await until_loading(loader)
    cached.evict("a")  # e.g. a takedown while the record was being read
    assert cached.in_flight == 0
    loader.gate.set()
    assert await waiter == "value of a"  # its waiter still gets its answer
    assert cached.cache.get("a") is None
    await cached.get("a")
    assert loader.calls == ["a", "a"]


async def test_cancelled_waiter_does_not_cancel_the_shared_load() -> None:
    loader, clock = Loader(), Clock()
    cached = lookup(loader, clock)
    loader.gate.clear()
    first = asyncio.ensure_future(cached.get("a"))
    others = [asyncio.ensure_future(cached.get("a")) for _ in range(3)]
    await until_loading(loader)
    first.cancel()  # the caller that started the load went away
    with pytest.raises(asyncio.CancelledError):
        await first
    loader.gate.set()
    assert await asyncio.gather(*others) == ["value of a"] * 3
    assert loader.calls == ["a"]
    assert cached.cache.get("a") == "value of a"


async def test_key_function_maps_arguments_to_cache_keys() -> None:
    loader, clock = Loader(), Clock()
    cached: CachedLookup[str, str] = CachedLookup(
        ExpiringCache("test", 10, clock), loader, expires_at=lambda _: clock() + 10, key=str.lower
    )
    assert await cached.get("A") == "value of A"
    assert await cached.get("a") == "value of A"  # one key for both spellings
    assert loader.calls == ["A"]
