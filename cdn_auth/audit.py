"""The audit log: who looked at what, and did what, under which justification.

One Redis stream (``redis_keys.AUDIT_STREAM``) written by every moderator view
and action in dm, every legal export, and every takedown a moderator makes at
the edge (``POST /v1/takedowns``), so an auditor reads one log.  Append-only by
construction: no route deletes or edits entries, and dm's appends trim
(``XADD MINID``) only entries older than the retention, which its settings
keep at a year or more (the edge's appends trim nothing).  Read through dm's
``GET /v1/audit``, by the ``auditor`` role only, and never by a session
holding ``moderator`` (even with ``auditor``): moderators, whose work it
records, cannot read it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from service_kernel.redis_client import RedisClient, field_map, stream_entries

from . import redis_keys as k

FIELDS = (
    "actor",
    "roles",
    "action",
    "justification",
    "conversation_id",
    "message_id",
    "media_id",
    "target_user",
    "detail",
    "at_ms",
)


class AuditLog:
    def __init__(self, redis: RedisClient, retention_s: int | None = None) -> None:
        """``retention_s`` None: append without trimming (for writers that do not own the
        retention setting)."""
        self._redis = redis
        self._retention_ms = None if retention_s is None else retention_s * 1000

    async def record(
        self,
        *,
        actor: str,
        roles: frozenset[str],
        action: str,
        justification: str,
        conversation_id: str = "",
        message_id: str = "",
        media_id: str = "",
        target_user: str = "",
        detail: dict[str, Any] | None = None,
    ) -> str:
        now_ms = int(time.time() * 1000)
        entry = {
            "actor": actor,
            "roles": ",".join(sorted(roles)),
            "action": action,
            "justification": justification,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "media_id": media_id,
            "target_user": target_user,
            "detail": json.dumps(detail or {}, sort_keys=True, separators=(",", ":")),
            "at_ms": str(now_ms),
        }
        if self._retention_ms is None:
            return str(await self._redis.xadd(k.AUDIT_STREAM, field_map(entry)))
        return str(
            await self._redis.xadd(
                k.AUDIT_STREAM, field_map(entry), minid=now_ms - self._retention_ms, approximate=True
            )
        )

    async def read(self, after: str | None, limit: int) -> list[dict[str, Any]]:
        raw = stream_entries(
            await self._redis.xrange(k.AUDIT_STREAM, min=f"({after}" if after else "-", count=limit)
        )
        out = []
        for entry_id, fields in raw:
            doc: dict[str, Any] = {"id": str(entry_id), **{f: fields.get(f, "") for f in FIELDS}}
            doc["detail"] = json.loads(doc["detail"] or "{}")
            doc["at_ms"] = int(doc["at_ms"] or 0)
            out.append(doc)
        return out
