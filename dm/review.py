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
from .errors import ReviewItemNotFound
from .scanner import Verdict

ITEM_RE = re.compile(r"[qh]-\d{1,15}-\d{1,10}")
_SUMMARY = (
    "source",
    "kind",
    "conversation_id",
    "message_id",
    "sender",
    "reporter",
    "reason",
    "verdict",
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


def _stream_of(item_id: str) -> tuple[str, str]:
    if ITEM_RE.fullmatch(item_id) is None:
        raise ReviewItemNotFound(item_id[:40])
    prefix, entry = item_id[0], item_id[2:]
    return (k.REPORTS_STREAM if prefix == "q" else cdn_keys.MEDIA_HOLDS_STREAM), entry


class ReviewQueue:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def add_alert(
        self, cid: str, message_id: str, fields: dict[str, str], verdict: Verdict
    ) -> str:
        entry = {
            "source": "alert",
            "kind": "plain",
            "conversation_id": cid,
            "message_id": message_id,
            "sender": fields.get("sender", ""),
            "media_id": fields.get("media_id", ""),
            "verdict": verdict.action,
            "labels": ",".join(verdict.labels),
            "held": "1" if verdict.held else "",
            "at": str(int(time.time())),
        }
        return "q-" + str(
            await self._redis.xadd(
                k.REPORTS_STREAM, field_map(entry), maxlen=k.REPORTS_MAXLEN, approximate=True
            )
        )

    async def get(self, item_id: str) -> Item:
        stream, entry = _stream_of(item_id)
        raw = stream_entries(await self._redis.xrange(stream, min=entry, max=entry))
        if not raw:
            raise ReviewItemNotFound(item_id)
        state = cast(str | None, await self._redis.hget(k.REVIEW_STATE, item_id))  # decoded
        return self._item(item_id, raw[0][1], state)

    async def items(self, *, status: str, limit: int) -> list[Item]:
        """Newest first, from both streams; ``status`` is open, closed or all."""
        reports = stream_entries(await self._redis.xrevrange(k.REPORTS_STREAM, count=limit * 4))
        holds = stream_entries(await self._redis.xrevrange(cdn_keys.MEDIA_HOLDS_STREAM, count=limit * 4))
        ids = [("q-" + str(i), f) for i, f in reports] + [("h-" + str(i), f) for i, f in holds]
        states = (
            cast(
                list[str | None],
                await self._redis.hmget(  # decoded
                    k.REVIEW_STATE, [i for i, _ in ids]
                ),
            )
            if ids
            else []
        )
        out = [self._item(i, f, s) for (i, f), s in zip(ids, states, strict=True)]
        if status != "all":
            out = [it for it in out if it.open == (status == "open")]
        out.sort(key=lambda it: tuple(int(x) for x in it.id[2:].split("-")), reverse=True)
        return out[:limit]

    async def close(self, item_id: str, *, action: str, by: str) -> dict[str, Any]:
        state = {"action": action, "by": by, "at_ms": int(time.time() * 1000)}
        await self._redis.hset(k.REVIEW_STATE, item_id, json.dumps(state))
        return state

    @staticmethod
    def _item(item_id: str, fields: dict[str, str], state: str | None) -> Item:
        source = fields.get("source") or ("media_hold" if item_id[0] == "h" else "report")
        return Item(item_id, source, dict(fields), json.loads(state) if state else None)
