"""The edge's decision cache: verified sessions, pointers and media records.

A video player sends many Range requests under one pointer; verifying an
Ed25519 signature and reading Redis for each would waste most of the
edge's time.  Each entry lives until its own expiry (the token's ``exp``,
or the media TTL) and the structure is bounded (LRU beyond ``maxsize``).
Revocation is *not* cached: the rights check consults the in-memory
revocation view on every request, and a takedown evicts the media record.

The semantics are those of ``cachetools.TLRUCache`` (an entry is live while
``now < expires_at``; putting an already expired entry removes the key;
expired entries are dropped before a live one is evicted for room), but
the representation is lighter, because a full pointer cache holds 10^5
entries and CPython's cyclic GC walks every *tracked* object on each full
collection, a pause that grows with the cache:

* values live in one ordered dict (the LRU order), with no per-entry
  wrapper: the cached object itself is the only GC-tracked object per entry
  (TLRUCache adds a tracked ``_Item`` and our ``(expires, value)`` tuple);
* expiry times live in a plain ``dict[str, float]``, which CPython never
  tracks (it holds no containers);
* the expiry heap holds ``(expires, key)`` tuples of atoms, which the GC
  untracks the first time it sees them.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from .clock import Clock, system_clock

V = TypeVar("V")

#: The heap is rebuilt when it holds this many times more entries than the cache
#: (every put adds one; superseded and evicted ones are only skipped lazily).
_HEAP_SLACK = 2


class ExpiringCache(Generic[V]):
    """A bounded map whose entries each carry their own expiry time.

    ``on_lookup(name, hit)`` is called on every :meth:`get`; the hot path
    passes ``on_hit``/``on_miss`` instead (pre-bound metric increments).
    """

    def __init__(self, name: str, maxsize: int, clock: Clock = system_clock,
                 on_lookup: Callable[[str, bool], None] | None = None, *,
                 on_hit: Callable[[], object] | None = None,
                 on_miss: Callable[[], object] | None = None) -> None:
        self.name = name
        self.maxsize = maxsize
        # time.time directly for the default clock: one call less on every lookup.
        self._now: Callable[[], float] = time.time if clock is system_clock else clock
        self._values: OrderedDict[str, V] = OrderedDict()  # least recently used first
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        if on_lookup is not None:
            def hit() -> None:
                on_lookup(name, True)

            def miss() -> None:
                on_lookup(name, False)

            on_hit = on_hit or hit
            on_miss = on_miss or miss
        self._on_hit = on_hit
        self._on_miss = on_miss

    def __len__(self) -> int:
        self._purge(self._now())
        return len(self._values)

    def get(self, key: str) -> V | None:
        expires = self._expires.get(key)
        if expires is not None and self._now() < expires:
            self._values.move_to_end(key)
            if self._on_hit is not None:
                self._on_hit()
            return self._values[key]
        if self._on_miss is not None:
            self._on_miss()
        return None

    def put(self, key: str, value: V, expires_at: float) -> None:
        now = self._now()
        self._purge(now)
        if not now < expires_at:
            self.evict(key)  # an already expired value replaces (removes) a live one
            return
        values = self._values
        values[key] = value
        values.move_to_end(key)
        self._expires[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        while len(values) > self.maxsize:
            old, _ = values.popitem(last=False)
            del self._expires[old]
        if len(self._heap) > _HEAP_SLACK * len(values) + 64:
            self._heap = [(t, k) for k, t in self._expires.items()]
            heapq.heapify(self._heap)

    def evict(self, key: str) -> None:
        self._values.pop(key, None)
        self._expires.pop(key, None)

    def clear(self) -> None:
        self._values.clear()
        self._expires.clear()
        self._heap.clear()

    def _purge(self, now: float) -> None:
        """Drop every entry whose expiry has passed (heap entries that are stale are skipped)."""
        heap, expires = self._heap, self._expires
        while heap and not now < heap[0][0]:
            t, key = heapq.heappop(heap)
            if expires.get(key) == t:
                del expires[key]
                del self._values[key]
