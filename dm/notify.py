"""Push delivery: a notification stream every dm process tails, and a local subscriber hub.

A send appends the message to its conversation's stream (the record) and
then an event to ``dm:notify`` naming the recipients.  Every dm process
tails that one stream and hands each event to the WebSocket subscribers it
holds locally.  The event id is the client's cursor: a client that
reconnects with its last cursor is replayed everything after it that was
addressed to it (through its inbox index, not a scan of everyone's events),
merged with the live queue so that nothing arrives twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from service_kernel.redis_client import RedisClient, RedisPipeline, queue_script, script_reply
from service_kernel.stream_tail import Entry, StreamTailer, decode_entry

from . import redis_keys as k
from . import scripts

QUEUE_MAX = 1000
#: Put in a subscriber's queue to wake its sender loop: the client left, or it overflowed.
CLIENT_GONE: Entry = ("", {})

log = logging.getLogger(__name__)


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class NotifyLog:
    """Appends events to ``dm:notify`` and indexes each in its recipients' inboxes
    (:func:`dm.redis_keys.user_inbox`), which :meth:`replay` reads."""

    def __init__(self, redis: RedisClient, retention_s: int = k.NOTIFY_RETENTION_S) -> None:
        self._redis = redis
        self._retention_ms = retention_s * 1000
        self._notify = redis.register_script(scripts.NOTIFY)

    def event(self, kind: str, cid: str, to: Iterable[str], payload: dict[str, str]) -> dict[str, str]:
        return {"type": kind, "conversation_id": cid, "to": ",".join(to), **payload}

    def _invocation(
        self, fields: dict[str, str], once: tuple[str, int] | None
    ) -> tuple[list[str], list[Any]]:
        minid = int(time.time() * 1000) - self._retention_ms
        recipients = sorted({u for u in fields.get("to", "").split(",") if u})
        marker, ttl_s = once if once is not None else (None, 0)
        return (
            [k.NOTIFY_STREAM, *([marker] if marker else []), *(k.user_inbox(u) for u in recipients)],
            [_encode(fields), minid, k.INBOX_MAX, self._retention_ms, ttl_s if marker else 0],
        )

    async def publish(self, fields: dict[str, str]) -> str:
        keys, args = self._invocation(fields, None)
        return str(await self._notify(keys=keys, args=args))

    def queue_publish(
        self, pipe: RedisPipeline, fields: dict[str, str], *, once: tuple[str, int] | None = None
    ) -> Callable[[Any], Awaitable[str]]:
        """Queue the publish on ``pipe``, to share one round trip with other writes (the
        send's announce).  Returns what turns the pipeline's reply (``raise_on_error=False``)
        into the event id, or raises the publish's error.

        ``once`` (a :func:`~dm.redis_keys.notify_once` key and its TTL in s) publishes the
        event at most once under that key: a repeat returns the first event's id."""
        keys, args = self._invocation(fields, once)
        queue_script(pipe, self._notify, keys, args)

        async def event_id(reply: Any) -> str:
            return str(await script_reply(reply, self._notify, keys, args))

        return event_id

    async def missed(self, user: str, after: str) -> list[str]:
        """The ids of ``user``'s events after the cursor ``after`` (exclusive), oldest first:
        what a resume replays, read from the user's inbox (at most INBOX_MAX), so the cost is
        what this user missed, not the whole stream."""
        ms, seq = id_key(after)
        ids = [str(i) for i in await self._redis.zrange(k.user_inbox(user), ms, "+inf", byscore=True)]
        return [i for i in ids if id_key(i) > (ms, seq)]

    async def pending(self, user: str, after: str) -> int:
        """How many events a replay after ``after`` would read (what it costs)."""
        return len(await self.missed(user, after))

    async def replay(self, user: str, after: str) -> AsyncIterator[Entry]:
        """The events for ``user`` after the cursor ``after``, oldest first.  Reads
        :meth:`missed` itself: a caller that charged for the ids before subscribing must not
        pass them in, or an event published between that read and the subscription would be
        in neither (the socket subscribes first, then replays)."""
        ids = await self.missed(user, after)
        for start in range(0, len(ids), 200):
            async with self._redis.pipeline(transaction=False) as p:
                for i in ids[start : start + 200]:
                    p.xrange(k.NOTIFY_STREAM, min=i, max=i)
                rows = await p.execute()
            for row in rows:
                for eid, fields in row:  # empty if trimmed from the stream meanwhile
                    event = decode_or_skip(decode_entry(eid, fields))
                    if event is not None:
                        yield event


def _encode(fields: dict[str, str]) -> str:
    # One field, not one per key: redis-py packs each argument in Python, per command.
    return json.dumps(fields, separators=(",", ":"))


def decode(entry: Entry) -> Entry:
    """A notify stream entry as the event's fields."""
    eid, raw = entry
    return eid, {str(key): str(v) for key, v in json.loads(raw.get("e", "{}")).items()}


def decode_or_skip(entry: Entry) -> Entry | None:
    """:func:`decode`, or None (logged) for an entry this version did not write (another
    version, a script): skipped, as the edge skips a malformed revocation.  Raising would
    stop a replay, or have the tail read the batch again for ever (no push to anyone)."""
    try:
        return decode(entry)
    except (ValueError, TypeError, AttributeError):
        log.error("skipping malformed notify entry", extra={"id": entry[0]})
        return None


@dataclass(eq=False)
class Subscription:
    """One WebSocket's queue.  Bounded by hand (QUEUE_MAX) so a wake-up sentinel always fits."""

    user: str
    queue: asyncio.Queue[Entry] = field(default_factory=asyncio.Queue)
    overflowed: bool = False


class Hub:
    """Fans events out to this process's subscribers; other code may listen for cache upkeep."""

    def __init__(self, redis: RedisClient, *, block_ms: int = k.NOTIFY_BLOCK_MS) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self.listeners: list[Callable[[Entry], None]] = []
        self.tailer = StreamTailer(redis, k.NOTIFY_STREAM, self._dispatch, block_ms=block_ms)

    @property
    def connected(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def connected_of(self, user: str) -> int:
        return len(self._subs.get(user, ()))

    def subscribe(self, user: str) -> Subscription:
        sub = Subscription(user)
        self._subs.setdefault(user, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.user)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.user]

    def _dispatch(self, entries: list[Entry]) -> None:
        for raw in entries:
            entry = decode_or_skip(raw)
            if entry is None:
                continue
            for cb in self.listeners:
                cb(entry)
            for user in entry[1].get("to", "").split(","):
                for sub in self._subs.get(user, ()):
                    if sub.overflowed:
                        continue
                    if sub.queue.qsize() >= QUEUE_MAX:
                        sub.overflowed = True  # the socket is closed; the client resumes by cursor
                        sub.queue.put_nowait(CLIENT_GONE)
                    else:
                        sub.queue.put_nowait(entry)
