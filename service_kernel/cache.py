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
* expiry times live in a plain ``dict[Key, float]``, which CPython never
  tracks (it holds no containers);
* no expiry heap: the least recently used end is where entries of similar
  lifetimes expire, so each put drops expired entries there, and a full pass
  runs only when the cache is full (at most once per ``maxsize // 4`` puts);
* token caches are keyed by a 64-bit keyed digest of the token
  (:func:`token_key`), not the token, and the claims repeated across entries
  are shared (:func:`shared`, :func:`shared_int`): about 1,010 bytes per cached
  pointer became about 400 (``loadtests.bench_edge`` reports
  ``cache_bytes_per_entry``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeAlias, TypeVar

from .clock import Clock, system_clock

V = TypeVar("V")

#: Keyed per process, so nobody outside can aim two tokens at one cache slot.
_TOKEN_KEY_SECRET = os.urandom(32)


def token_key(token: str) -> int:
    """The cache key for a token: 64 bits of keyed BLAKE2b instead of the token itself.

    Why: a pointer or session is 250-1000 characters; keyed by the whole token, every
    cached decision held that string (most of the ~1 KB per entry measured).  A 64-bit
    int is a 36-byte object.  The digest is keyed with a secret that never leaves the
    process, so nobody can aim two tokens at one key; accidental collisions among the
    at most 10^5 live entries of a cache have odds of about 3 in 10^10.
    """
    return int.from_bytes(
        hashlib.blake2b(token.encode(), digest_size=8, key=_TOKEN_KEY_SECRET).digest(), "big"
    )


#: Timestamps repeat across tokens minted in the same second; bounded, so never a leak.
_INTS: dict[int, int] = {}
_INTS_MAX = 65_536


def shared_int(value: int) -> int:
    """One object per distinct ``iat``/``exp`` value in a cache of 10^5 tokens (Python
    ints above 2^30 are 32-byte objects each); the memo is emptied when it grows large."""
    got = _INTS.setdefault(value, value)
    if len(_INTS) > _INTS_MAX:
        _INTS.clear()
    return got


def shared(value: str) -> str:
    """Intern a claim that many cached entries repeat (a media id, a user, a conversation,
    a key id) so the cache holds one copy instead of one per token."""
    return sys.intern(value)


#: Ids (``str``) or token digests (``int``, see :func:`token_key`); one kind per cache.
Key: TypeAlias = str | int


class ExpiringCache(Generic[V]):
    """A bounded map whose entries each carry their own expiry time.

    ``on_lookup(name, hit)`` is called on every :meth:`get`; the hot path
    passes ``on_hit``/``on_miss`` instead (pre-bound metric increments).
    """

    def __init__(
        self,
        name: str,
        maxsize: int,
        clock: Clock = system_clock,
        on_lookup: Callable[[str, bool], None] | None = None,
        *,
        on_hit: Callable[[], object] | None = None,
        on_miss: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self.maxsize = maxsize
        # time.time directly for the default clock: one call less on every lookup.
        self._now: Callable[[], float] = time.time if clock is system_clock else clock
        self._values: OrderedDict[Key, V] = OrderedDict()  # least recently used first
        self._expires: dict[Key, float] = {}
        self._puts_since_sweep = 0
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
        self._sweep(self._now())
        return len(self._values)

    def get(self, key: Key) -> V | None:
        expires = self._expires.get(key)
        if expires is not None and self._now() < expires:
            self._values.move_to_end(key)
            if self._on_hit is not None:
                self._on_hit()
            return self._values[key]
        if self._on_miss is not None:
            self._on_miss()
        return None

    def put(self, key: Key, value: V, expires_at: float) -> None:
        now = self._now()
        if not now < expires_at:
            self.evict(key)  # an already expired value replaces (removes) a live one
            return
        values = self._values
        values[key] = value
        values.move_to_end(key)
        self._expires[key] = expires_at
        self._drop_expired_lru(now)
        self._puts_since_sweep += 1
        if len(values) > self.maxsize and self._puts_since_sweep > self.maxsize // 4:
            self._sweep(now)  # expired entries go before any live one (amortised O(1))
        while len(values) > self.maxsize:
            old, _ = values.popitem(last=False)
            del self._expires[old]

    def evict(self, key: Key) -> None:
        self._values.pop(key, None)
        self._expires.pop(key, None)

    def clear(self) -> None:
        self._values.clear()
        self._expires.clear()

    def _drop_expired_lru(self, now: float) -> None:
        """Drop up to two expired entries at the least recently used end: entries of one
        cache have similar lifetimes, so that end is where they expire, and two per put
        keep up with the puts that made them."""
        for _ in range(2):
            if not self._values:
                return
            oldest = next(iter(self._values))
            if now < self._expires[oldest]:
                return
            del self._values[oldest]
            del self._expires[oldest]

    def _sweep(self, now: float) -> None:
        """Drop every expired entry (a pass over the expiry map)."""
        self._puts_since_sweep = 0
        dead = [k for k, t in self._expires.items() if not now < t]
        for k in dead:
            del self._expires[k]
            del self._values[k]
