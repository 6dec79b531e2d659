"""Tail a Redis Stream forever: blocking XREAD from the last id, reconnecting after errors.

Shared by the edge's revocation view and dm's push delivery.  A reader
that reconnects resumes from ``last_id`` and so misses nothing that is
still in the stream; ``fresh_at`` is the last time Redis answered, which
callers compare against their staleness bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from .clock import Clock, system_clock
from .redis_client import RedisClient, RedisFailure, StreamEntries, stream_entries

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str]]


def decode_entry(entry_id: Any, fields: dict[Any, Any]) -> Entry:
    def s(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    return s(entry_id), {s(k): s(v) for k, v in fields.items()}


class StreamTailer:
    """Calls ``on_entries`` with each batch read; ``start`` picks the first id to read after."""

    def __init__(
        self,
        redis: RedisClient,
        key: str,
        on_entries: Callable[[list[Entry]], None],
        *,
        start: Callable[[], Awaitable[str]] | None = None,
        clock: Clock = system_clock,
        block_ms: int = 1000,
        batch: int = 1000,
        on_tick: Callable[[], object] | None = None,
    ) -> None:
        self._redis = redis
        self.key = key
        self._on_entries = on_entries
        self._start = start
        self._clock = clock
        self._block_ms = block_ms
        self._batch = batch
        self._on_tick = on_tick  # after every read, events or not (periodic upkeep)
        self.last_id: str | None = None
        self.fresh_at = float("-inf")
        self.loaded = asyncio.Event()

    def age_s(self) -> float:
        return self._clock() - self.fresh_at

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                if self.last_id is None:
                    self.last_id = await self._start() if self._start else await self._tail_id()
                    self.fresh_at = self._clock()
                    self.loaded.set()
                await self._read_once()
                backoff = 0.05
            except (*RedisFailure, OSError, TimeoutError) as exc:
                log.warning(
                    "stream tail broken (%s); retrying",
                    type(exc).__name__,
                    extra={"stream": self.key, "err": type(exc).__name__, "detail": str(exc)[:200]},
                )
            except Exception:
                # Anything else (a client library's own exception type, a bug in a callback)
                # must not end the tail either: a dead tail is a view stale for good, every
                # pointer refused until a restart.  Logged whole, and retried like an outage.
                log.exception("stream tail failed unexpectedly; retrying", extra={"stream": self.key})
            else:
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _tail_id(self) -> str:
        """The id of the newest entry (read only what comes after it), or 0-0."""
        newest = stream_entries(await self._redis.xrevrange(self.key, count=1))
        return decode_entry(*newest[0])[0] if newest else "0-0"

    async def _read_once(self) -> None:
        assert self.last_id is not None
        timeout = self._block_ms / 1000 + 2.0  # a silent partition must not block forever
        async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel on 3.11
            # RESP2 (what connect() speaks): [(stream, entries)], or None when the block ends.
            reply = cast(
                list[tuple[str, StreamEntries]] | None,
                await self._redis.xread(
                    {self.key: self.last_id}, block=self._block_ms, count=self._batch
                ),
            )
        got = 0
        for _stream, raw in reply or ():
            entries = [decode_entry(i, f) for i, f in raw]
            got += len(entries)
            if entries:
                # Applied, then passed: a batch whose handling raises is read again (the view
                # stays stale, so the edge fails closed) rather than skipped and lost.
                self._on_entries(entries)
                self.last_id = entries[-1][0]
        # A full batch means more may be waiting (catching up after an outage): fresh only
        # once a read comes back short, so nothing missed counts as heard.
        if got < self._batch:
            self.fresh_at = self._clock()
        if self._on_tick is not None:
            try:
                self._on_tick()
            except Exception:
                # Upkeep (a key file re-read, an expiry sweep) must never end the tail: a
                # dead tail is a view that goes stale for good.
                log.exception("stream tail tick failed", extra={"stream": self.key})


async def read_range(
    redis: RedisClient, key: str, after: str, batch: int = 1000
) -> AsyncIterator[Entry]:
    """Every entry after ``after`` (exclusive) up to the current end, in batches."""
    cursor = f"({after}" if after != "0-0" else "-"
    while True:
        raw = stream_entries(await redis.xrange(key, min=cursor, count=batch))
        for i, f in raw:
            entry = decode_entry(i, f)
            cursor = "(" + entry[0]
            yield entry
        if len(raw) < batch:
            return


@contextlib.asynccontextmanager
async def running(tailer: StreamTailer) -> AsyncIterator[StreamTailer]:
    """Run a tailer for the duration of a ``with`` block (app cleanup contexts use this)."""
    task = asyncio.create_task(tailer.run(), name=f"tail:{tailer.key}")
    try:
        yield tailer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
