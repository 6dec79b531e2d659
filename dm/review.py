"""The review queue: user reports, scanner alerts and CDN media holds, in one place.

Reports and alerts are entries of one stream (``dm:reports``; ``source``
says which), media holds are the CDN's stream of uploads a holding bank
matched (``cdn:holds``).  An item's id names its stream and entry
(``q-<entry>`` or ``h-<entry>``) and is the justification a moderator
gives for every view and action about it.  The list shows metadata only:
text and media are seen by opening an item, which is audited.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, cast

from cdn_auth import redis_keys as cdn_keys
from service_kernel.redis_client import RedisClient, field_map, stream_entries

from . import redis_keys as k
from .errors import BadCursor, ReviewItemNotFound
from .scanner import Verdict

ITEM_RE = re.compile(r"([qh])-([0-9]{1,15})-([0-9]{1,10})", re.ASCII)
_SUMMARY = (
    "source",
    "kind",
    "conversation_id",
    "message_id",
    "sender",
    "reporter",
    "reason",
    "verdict",
    "saw",
    "labels",
    "held",
    "media_id",
    "owner",
    "at",
)


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    source: str  # report | alert | media_hold
    fields: dict[str, str]
    state: dict[str, Any] | None

    @property
    def open(self) -> bool:
        return self.state is None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": "open" if self.open else "closed"}
        out.update({f: self.fields[f] for f in _SUMMARY if self.fields.get(f)})
        out["source"] = self.source
        if self.state:
            out["closed"] = self.state
        return out


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    next_cursor: str | None  # the last item examined (returned or skipped), or the cursor given
    more: bool  # entries older than next_cursor remain


def _item(item_id: str, fields: dict[str, str], state: str | None) -> Item:
    source = fields.get("source") or ("media_hold" if item_id[0] == "h" else "report")
    return Item(item_id, source, dict(fields), json.loads(state) if state else None)


def canonical_item_id(item_id: str) -> str | None:
    """An item id in its one spelling (``q-0017-0`` is ``q-17-0``), or None if it is none.

    Redis reads ``017-0`` as entry ``17-0``, so a padded id would reach the same entry
    under another string: with no review state of its own (an open alias of a closed
    item), and audited under another id.  Every boundary re-renders ids from their
    numbers, as message ids are (``web_messages.check_cursor``)."""
    m = ITEM_RE.fullmatch(item_id)
    return None if m is None else f"{m.group(1)}-{int(m.group(2))}-{int(m.group(3))}"


def _order(item_id: str) -> tuple[int, int, str]:
    """The queue's order, newest first when descending: entry time, sequence, then stream
    (the two streams may hold the same entry id)."""
    canonical = canonical_item_id(item_id)
    if canonical is None:
        raise BadCursor(item_id[:40])
    ms, seq = canonical[2:].split("-")
    return int(ms), int(seq), canonical[0]


class _Walk:
    """One stream read newest first in batches, each batch's review states in one HMGET."""

    def __init__(
        self,
        redis: RedisClient,
        stream: str,
        prefix: str,
        after: tuple[int, int, str] | None,
        batch: int,
    ) -> None:
        self._redis, self._stream, self._prefix, self._batch = redis, stream, prefix, batch
        self._buf: list[Item] = []
        self._done = False
        if after is None:
            self._max = "+"
        else:  # entries strictly older in the queue's order than the cursor item
            entry = f"{after[0]}-{after[1]}"
            self._max = entry if prefix < after[2] else f"({entry}"

    async def head(self) -> Item | None:
        if not self._buf and not self._done:
            raw = stream_entries(
                await self._redis.xrevrange(self._stream, max=self._max, count=self._batch)
            )
            self._done = len(raw) < self._batch
            if raw:
                self._max = f"({raw[-1][0]!s}"
                ids = [f"{self._prefix}-{i}" for i, _ in raw]
                states = cast(
                    list[str | None],
                    await self._redis.hmget(k.REVIEW_STATE, ids),  # decoded
                )
                self._buf = [_item(i, f, s) for i, (_, f), s in zip(ids, raw, states, strict=True)][
                    ::-1
                ]  # popped from the end: newest first
        return self._buf[-1] if self._buf else None

    def pop(self) -> Item:
        return self._buf.pop()


async def _newest(walks: list[_Walk]) -> _Walk | None:
    """The walk whose next item comes first in the queue's order, or None when all are done."""
    best: tuple[tuple[int, int, str], _Walk] | None = None
    for walk in walks:
        head = await walk.head()
        if head is not None and (best is None or _order(head.id) > best[0]):
            best = (_order(head.id), walk)
    return best[1] if best else None


def _stream_of(item_id: str) -> tuple[str, str]:
    prefix, entry = item_id[0], item_id[2:]
    return (k.REPORTS_STREAM if prefix == "q" else cdn_keys.MEDIA_HOLDS_STREAM), entry


class ReviewQueue:
    def __init__(self, redis: RedisClient, scan_max: int = k.REVIEW_PAGE_SCAN_MAX) -> None:
        self._redis = redis
        self._scan_max = scan_max

    async def add_alert(
        self, cid: str, message_id: str, fields: dict[str, str], verdict: Verdict, *, retry: bool = False
    ) -> str:
        """Queue the scanner's alert for a stored message, and record that it is queued.

        ``retry`` (the send's idempotent replay): queue it only if no attempt recorded it,
        so a first attempt that stored (and held) the message but failed to queue its
        alert is completed, and a held message never ends up with no review item.  Two
        attempts racing may both queue it: a second item for one message is harmless (its
        release or removal finds the message already handled); none would not be."""
        done = k.conv_alerted(cid, message_id)
        if retry:
            seen = await self._redis.get(done)
            if seen is not None:
                return "q-" + str(seen)
        entry = {
            "source": "alert",
            "kind": "plain",
            "conversation_id": cid,
            "message_id": message_id,
            "sender": fields.get("sender", ""),
            "media_id": fields.get("media_id", ""),
            # The server's own copy, as a report files one: the sender may unsend the
            # message (held or not) before review, and the evidence must outlive that.
            "text": fields.get("text", ""),
            "evidence": "server_copy",
            "verdict": verdict.action,
            "saw": verdict.saw,  # what the scanner had to go on: content, or metadata only
            "labels": ",".join(verdict.labels),
            "held": "1" if verdict.held else "",
            "at": str(int(time.time())),
        }
        entry_id = str(
            await self._redis.xadd(
                k.REPORTS_STREAM, field_map(entry), maxlen=k.REPORTS_MAXLEN, approximate=True
            )
        )
        await self._redis.set(done, entry_id, ex=k.REPORT_DEDUP_TTL_S)
        return "q-" + entry_id

    async def get(self, item_id: str) -> Item:
        """The item, under its canonical id whatever spelling was given (404 if none)."""
        canonical = canonical_item_id(item_id)
        if canonical is None:
            raise ReviewItemNotFound(item_id[:40])
        item_id = canonical
        stream, entry = _stream_of(item_id)
        raw = stream_entries(await self._redis.xrange(stream, min=entry, max=entry))
        if not raw:
            raise ReviewItemNotFound(item_id)
        state = cast(str | None, await self._redis.hget(k.REVIEW_STATE, item_id))  # decoded
        return _item(item_id, raw[0][1], state)

    async def page(self, *, status: str, limit: int, cursor: str | None = None) -> Page:
        """Up to ``limit`` items of ``status`` (open, closed or all), newest first, older
        than ``cursor`` (an item id from a previous page's ``next_cursor``).

        Both streams are walked newest first in batches and merged; closed items are
        skipped as they come, so every open item is reachable however many closed ones
        lie between.  The walk reads at most ``scan_max`` entries: a page that stops there
        holds fewer than ``limit`` items (perhaps none) and still says ``more``.
        """
        after = _order(cursor) if cursor is not None else None
        cursor = canonical_item_id(cursor) if cursor is not None else None
        walks = [
            _Walk(self._redis, k.REPORTS_STREAM, "q", after, max(limit, 1)),
            _Walk(self._redis, cdn_keys.MEDIA_HOLDS_STREAM, "h", after, max(limit, 1)),
        ]
        out: list[Item] = []
        scanned, last = 0, cursor
        while len(out) < limit and scanned < self._scan_max:
            walk = await _newest(walks)
            if walk is None:
                return Page(out, last, more=False)
            item = walk.pop()
            scanned, last = scanned + 1, item.id
            if status == "all" or item.open == (status == "open"):
                out.append(item)
        return Page(out, last, more=await _newest(walks) is not None)

    async def close(self, item_id: str, *, action: str, by: str) -> dict[str, Any]:
        state = {"action": action, "by": by, "at_ms": int(time.time() * 1000)}
        await self._redis.hset(k.REVIEW_STATE, item_id, json.dumps(state))
        return state
