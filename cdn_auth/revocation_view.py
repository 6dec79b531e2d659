"""Each edge's in-memory view of revocations, fed by tailing the stream.

The view answers "is this pointer revoked?" without a Redis round trip.
Entries are forgotten once every token they could affect has expired: the
longest token lifetime plus leeway after the event, plus
:data:`REMINT_MARGIN_S`.  That bound holds because no path mints a token
for a revoked thing after its event (dm re-checks membership and unsend
tombstones on every read, push and replay; grants are not minted from a
revoked grant), except a dm process whose cached conversation is a few
seconds stale: the margin covers that.  The tailer
keeps the view fresh with blocking XREADs from its last id; ``fresh_at``
is the last time Redis answered, and requests that depend on revocation
state fail closed when that is older than the staleness bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from service_kernel.clock import Clock, system_clock
from service_kernel.errors import ServiceError
from service_kernel.redis_client import RedisClient
from service_kernel.stream_tail import Entry, StreamTailer, read_range

from . import redis_keys
from .revocation import RevocationEvent

log = logging.getLogger(__name__)

#: Extra memory beyond the longest token lifetime: covers tokens minted just after an event
#: by a process whose cached view of it was briefly stale (dm caches a conversation for at
#: most a few seconds, and evicts it on the membership event itself).
REMINT_MARGIN_S = 60.0
#: Kinds whose table holds the event's time (tokens issued at or before it are refused), not
#: a forget-at time (the thing itself is refused).
_BY_TIME = frozenset({"left", "playback_ended"})
#: Window events read and applied per step when an edge starts.
LOAD_BATCH = 1000


class RevocationView:
    def __init__(
        self, window_s: float, clock: Clock = system_clock, *, capability_window_s: float = 0.0
    ) -> None:
        self.window_s = window_s
        #: How long a ``capability_revoked`` is remembered: capabilities outlive tokens, so
        #: they have their own table and expiry queue (cdn_auth.capability_gate).
        self.capability_window_s = max(capability_window_s, window_s)
        self.capabilities = CapabilityRevocations(self.capability_window_s, clock)
        self._clock = clock
        self._unsent: dict[tuple[str, str], float] = {}
        self._left: dict[tuple[str, str], float] = {}  # -> left at (s)
        self._playback: dict[tuple[str, str], float] = {}  # (user, device) -> ended at (s)
        self._takedowns: dict[str, float] = {}
        self._grants: dict[str, float] = {}
        self._expiry: deque[tuple[float, str, Any]] = deque()
        self.listeners: list[Callable[[RevocationEvent], None]] = []

    def __len__(self) -> int:
        """Distinct revoked things (what ``cdn_auth_revocation_view_entries`` reports)."""
        return (
            len(self._unsent)
            + len(self._left)
            + len(self._playback)
            + len(self._takedowns)
            + len(self._grants)
            + len(self.capabilities)
        )

    @property
    def load_window_s(self) -> float:
        """How far back a starting edge reads the stream: the longest any event matters."""
        return self.capability_window_s

    def apply(self, ev: RevocationEvent) -> None:
        if ev.kind == "capability_revoked":
            self.capabilities.apply(ev.cap_id, ev.at_ms / 1000)
            for cb in self.listeners:
                cb(ev)
            return
        at_s = ev.at_ms / 1000
        expires = at_s + self.window_s
        key: Any
        if ev.kind == "unsent":
            key = (ev.conversation_id, ev.message_id)
        elif ev.kind == "left":
            key = (ev.conversation_id, ev.user_id)
        elif ev.kind == "playback_ended":
            key = (ev.user_id, ev.device_id)
        elif ev.kind == "takedown":
            key = ev.media_id
        else:
            key = ev.grant_id
        table = self._table(ev.kind)
        known = key in table
        table[key] = at_s if ev.kind in _BY_TIME else expires
        if not known:
            # One expiry item per distinct revoked thing, not per event: a repeat only
            # moves the table's time, and expire() re-queues the item when it finds that.
            self._expiry.append((expires, ev.kind, key))
        for cb in self.listeners:
            cb(ev)

    def expire(self) -> int:
        """Forget entries past the window; events arrive in time order, so pop from the left."""
        now, n = self._clock(), self.capabilities.expire()
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, key = self._expiry.popleft()
            table = self._table(kind)
            current = table.get(key)
            if current is None:
                continue
            until = current + self.window_s if kind in _BY_TIME else current
            if until <= now:
                del table[key]
                n += 1
            else:
                # A repeat event extended it: queue it again for its new time (the deque may
                # then be out of order by at most one window, which only delays forgetting).
                self._expiry.append((until, kind, key))
        return n

    @property
    def queued(self) -> int:
        """Expiry items held: at most one per distinct entry (tests check the bound)."""
        return len(self._expiry)

    def _table(self, kind: str) -> dict[Any, float]:
        if kind == "unsent":
            return self._unsent
        if kind == "left":
            return self._left
        if kind == "playback_ended":
            return self._playback
        return self._takedowns if kind == "takedown" else self._grants

    def is_unsent(self, conversation_id: str, message_id: str) -> bool:
        return (conversation_id, message_id) in self._unsent

    def left_at(self, conversation_id: str, user_id: str) -> float | None:
        return self._left.get((conversation_id, user_id))

    def playback_ended_at(self, user_id: str, device_id: str) -> float | None:
        """When the device's media cookies were last ended (a sign-out), or None."""
        return self._playback.get((user_id, device_id))

    def is_taken_down(self, media_id: str) -> bool:
        return media_id in self._takedowns

    def is_grant_revoked(self, grant_id: str) -> bool:
        return grant_id in self._grants


class CapabilityRevocations:
    """Revoked capability ids, each forgotten ``window_s`` after its event (one expiry
    queue of its own: a day-long window in the token queue would hold up its expiry)."""

    def __init__(self, window_s: float, clock: Clock) -> None:
        self.window_s = window_s
        self._clock = clock
        self._revoked: dict[str, float] = {}  # -> forget at (s)
        self._expiry: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._revoked)

    def __contains__(self, cap_id: object) -> bool:
        return cap_id in self._revoked

    def apply(self, cap_id: str, at_s: float) -> None:
        expires = at_s + self.window_s
        if cap_id not in self._revoked:
            self._expiry.append((expires, cap_id))
        self._revoked[cap_id] = max(expires, self._revoked.get(cap_id, 0.0))

    def expire(self) -> int:
        now, n = self._clock(), 0
        while self._expiry and self._expiry[0][0] <= now:
            _, cap_id = self._expiry.popleft()
            until = self._revoked.get(cap_id)
            if until is None:
                continue
            if until <= now:
                del self._revoked[cap_id]
                n += 1
            else:
                self._expiry.append((until, cap_id))
        return n


class RevocationTailer:
    """Loads the last window (max token lifetime + leeway) into the view, then tails on."""

    def __init__(
        self,
        redis: RedisClient,
        view: RevocationView,
        *,
        clock: Clock = system_clock,
        block_ms: int = 1000,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._redis = redis
        self.view = view
        self._clock = clock
        self._on_lag = on_lag
        self._live = False
        self.events_applied = 0
        #: Periodic upkeep after every read (about once a second when idle).
        self.tick_listeners: list[Callable[[], object]] = [view.expire]
        self.stream = StreamTailer(
            redis,
            redis_keys.REVOCATION_STREAM,
            self._apply_batch,
            start=self._load_window,
            clock=clock,
            block_ms=block_ms,
            on_tick=self._tick,
        )

    def _tick(self) -> None:
        for cb in self.tick_listeners:
            try:
                cb()
            except Exception:
                # One listener's failure (a key reload) must not skip the others (the
                # view's expiry) nor reach the tail's loop.
                log.exception("revocation tick listener failed")

    @property
    def loaded(self) -> asyncio.Event:
        return self.stream.loaded

    def age_s(self) -> float:
        return self.stream.age_s()

    async def run(self) -> None:
        await self.stream.run()

    async def _load_window(self) -> str:
        start_ms = max(int((self._clock() - self.view.load_window_s) * 1000), 0)
        last = f"{start_ms}-0"
        self._live = False
        batch: list[Entry] = []
        # Applied page by page as read, never held whole: a window can be 10^5+ events.
        async for entry in read_range(self._redis, redis_keys.REVOCATION_STREAM, last, batch=LOAD_BATCH):
            batch.append(entry)
            last = entry[0]
            if len(batch) >= LOAD_BATCH:
                self._apply_batch(batch)
                batch = []
        self._apply_batch(batch)
        self._live = True
        return last

    def _apply_batch(self, entries: list[Entry]) -> None:
        for eid, fields in entries:
            try:
                ev = RevocationEvent.from_stream(eid, fields)
            except (ServiceError, ValueError, KeyError):
                log.error("skipping malformed revocation event", extra={"id": eid})
                continue
            self.view.apply(ev)
            self.events_applied += 1
            if self._live and self._on_lag is not None:
                self._on_lag(max(0.0, self._clock() - ev.at_ms / 1000))
