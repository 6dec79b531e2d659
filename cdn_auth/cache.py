"""The edge's decision cache: verified sessions, pointers and media records.

A video player sends many Range requests under one pointer; verifying an
Ed25519 signature and reading Redis for each would waste most of the
edge's time.  Each entry lives until its own expiry (the token's ``exp``,
or the media TTL) and the structure is bounded (LRU beyond ``maxsize``).
Revocation is *not* cached: the rights check consults the in-memory
revocation view on every request, and a takedown evicts the media record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TLRUCache

from .clock import Clock, system_clock

V = TypeVar("V")


def _ttu(_key: object, value: tuple[float, object], _now: float) -> float:
    return value[0]


class ExpiringCache(Generic[V]):
    """A bounded map whose entries each carry their own expiry time."""

    def __init__(self, name: str, maxsize: int, clock: Clock = system_clock,
                 on_lookup: Callable[[str, bool], None] | None = None) -> None:
        self.name = name
        self._data: TLRUCache[str, tuple[float, V]] = TLRUCache(maxsize, _ttu, timer=clock)
        self._on_lookup = on_lookup

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> V | None:
        hit = self._data.get(key)
        if self._on_lookup is not None:
            self._on_lookup(self.name, hit is not None)
        return None if hit is None else hit[1]

    def put(self, key: str, value: V, expires_at: float) -> None:
        self._data[key] = (expires_at, value)

    def evict(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
