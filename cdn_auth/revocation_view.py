"""Each edge's in-memory view of revocations, fed by tailing the stream.

The view answers "is this pointer revoked?" without a Redis round trip.
Entries are forgotten once every token they could affect has expired
(the longest token lifetime plus leeway after the event).  The tailer
keeps the view fresh with blocking XREADs from its last id; ``fresh_at``
is the last time Redis answered, and requests that depend on revocation
state fail closed when that is older than the staleness bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from . import redis_keys
from .clock import Clock, system_clock
from .errors import CdnAuthError
from .revocation import RevocationEvent

log = logging.getLogger(__name__)


class RevocationView:
    def __init__(self, window_s: float, clock: Clock = system_clock) -> None:
        self.window_s = window_s
        self._clock = clock
        self._unsent: dict[tuple[str, str], float] = {}
        self._left: dict[tuple[str, str], float] = {}  # -> left at (s)
        self._takedowns: dict[str, float] = {}
        self._grants: dict[str, float] = {}
        self._expiry: deque[tuple[float, str, Any]] = deque()
        self.listeners: list[Callable[[RevocationEvent], None]] = []

    def __len__(self) -> int:
        return len(self._unsent) + len(self._left) + len(self._takedowns) + len(self._grants)

    def apply(self, ev: RevocationEvent) -> None:
        at_s = ev.at_ms / 1000
        expires = at_s + self.window_s
        if ev.kind == "unsent":
            key: Any = (ev.conversation_id, ev.message_id)
            self._unsent[key] = expires
        elif ev.kind == "left":
            key = (ev.conversation_id, ev.user_id)
            self._left[key] = at_s
        elif ev.kind == "takedown":
            key = ev.media_id
            self._takedowns[key] = expires
        else:
            key = ev.grant_id
            self._grants[key] = expires
        self._expiry.append((expires, ev.kind, key))
        for cb in self.listeners:
            cb(ev)

    def expire(self) -> int:
        """Forget entries past the window; events arrive in time order, so pop from the left."""
        now, n = self._clock(), 0
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, key = self._expiry.popleft()
            table = self._table(kind)
            current = table.get(key)
            if current is None:
                continue
            if (current + self.window_s if kind == "left" else current) <= now:
                del table[key]
                n += 1
        return n

    def _table(self, kind: str) -> dict[Any, float]:
        if kind == "unsent":
            return self._unsent
        if kind == "left":
            return self._left
        return self._takedowns if kind == "takedown" else self._grants

    def is_unsent(self, conversation_id: str, message_id: str) -> bool:
        return (conversation_id, message_id) in self._unsent

    def left_at(self, conversation_id: str, user_id: str) -> float | None:
        return self._left.get((conversation_id, user_id))

    def is_taken_down(self, media_id: str) -> bool:
        return media_id in self._takedowns

    def is_grant_revoked(self, grant_id: str) -> bool:
        return grant_id in self._grants


class RevocationTailer:
    """Background task: load the window, then XREAD BLOCK from the last id, forever."""

    def __init__(self, redis: Any, view: RevocationView, *, clock: Clock = system_clock,
                 block_ms: int = 1000, on_lag: Callable[[float], None] | None = None) -> None:
        self._redis = redis
        self.view = view
        self._clock = clock
        self._block_ms = block_ms
        self._on_lag = on_lag
        self.last_id: str | None = None
        self.fresh_at = float("-inf")  # last time Redis answered the tail
        self.loaded = asyncio.Event()
        self.events_applied = 0

    def age_s(self) -> float:
        return self._clock() - self.fresh_at

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                if self.last_id is None:
                    await self._load_window()
                await self._tail_once()
                backoff = 0.05
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("revocation tail broken; retrying",
                            extra={"err": type(exc).__name__, "last_id": self.last_id})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _load_window(self) -> None:
        start_ms = int((self._clock() - self.view.window_s) * 1000)
        cursor, last = f"{max(start_ms, 0)}-0", None
        while True:
            batch = await self._redis.xrange(redis_keys.REVOCATION_STREAM, min=cursor, count=1000)
            for entry_id, fields in batch:
                last = self._apply(entry_id, fields, live=False)
            if len(batch) < 1000:
                break
            cursor = "(" + str(last)
        self.last_id = last or f"{max(start_ms, 0)}-0"
        self.fresh_at = self._clock()
        self.loaded.set()

    async def _tail_once(self) -> None:
        assert self.last_id is not None
        timeout = self._block_ms / 1000 + 2.0  # a silent partition must not block forever
        reply = await asyncio.wait_for(
            self._redis.xread({redis_keys.REVOCATION_STREAM: self.last_id},
                              block=self._block_ms, count=1000),
            timeout,
        )
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self.last_id = self._apply(entry_id, fields, live=True)
        self.fresh_at = self._clock()
        self.view.expire()

    def _apply(self, entry_id: Any, fields: dict[Any, Any], *, live: bool) -> str:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        decoded = {(k.decode() if isinstance(k, bytes) else k):
                   (v.decode() if isinstance(v, bytes) else v) for k, v in fields.items()}
        try:
            ev = RevocationEvent.from_stream(eid, decoded)
        except (CdnAuthError, ValueError, KeyError):
            log.error("skipping malformed revocation event", extra={"id": eid})
            return eid
        self.view.apply(ev)
        self.events_applied += 1
        if live and self._on_lag is not None:
            self._on_lag(max(0.0, self._clock() - ev.at_ms / 1000))
        return eid


@contextlib.asynccontextmanager
async def running(tailer: RevocationTailer) -> Any:
    """Run a tailer for the duration of a ``with`` block (used by app cleanup contexts)."""
    task = asyncio.create_task(tailer.run(), name="revocation-tailer")
    try:
        yield tailer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
