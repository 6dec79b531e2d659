"""dm's state in Redis: conversations, members, messages, idempotency, blocks, reports.

Everything a send must decide atomically (idempotency, membership, rate
limit, append) happens in one Lua script on the conversation's slot.
Writes that span users (the conversation index, received-media sets) are
idempotent set additions sent in one pipeline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cdn_auth.stream_tail import decode_entry

from . import redis_keys as k
from . import scripts
from .errors import (
    ConversationNotFound,
    IdempotencyConflict,
    MessageNotFound,
    NotAllowed,
    NotMember,
    RateLimited,
)


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    mode: str
    created_by: str
    created_at_ms: int
    members: dict[str, int]  # user -> joined at (ms)

    @property
    def is_direct(self) -> bool:
        return len(self.members) == 2

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "created_by": self.created_by,
                "created_at_ms": self.created_at_ms, "members": sorted(self.members)}


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    replayed: bool


@dataclass(frozen=True, slots=True)
class Unsent:
    media_id: str
    grant_id: str


def _message(entry_id: Any, fields: dict[Any, Any]) -> tuple[str, dict[str, str]]:
    """A conversation stream entry: the message is one JSON object in field ``m``."""
    eid, raw = decode_entry(entry_id, fields)
    doc = json.loads(raw.get("m", "{}"))
    return eid, {str(key): str(value) for key, value in doc.items()}


class DmStore:
    def __init__(self, redis: Any, *, idempotency_ttl_s: int, send_rate_per_s: int) -> None:
        self.redis = redis
        self._idem_ttl_s = idempotency_ttl_s
        self._rate = send_rate_per_s
        self._send = redis.register_script(scripts.SEND)
        self._unsend = redis.register_script(scripts.UNSEND)

    # -- conversations ------------------------------------------------------------
    async def create_conversation(self, cid: str, creator: str, members: Sequence[str],
                                  mode: str) -> Conversation:
        now_ms = int(time.time() * 1000)
        everyone = dict.fromkeys([creator, *members], now_ms)
        async with self.redis.pipeline(transaction=False) as p:
            p.hset(k.conv_meta(cid), mapping={"mode": mode, "created_by": creator,
                                               "created_at_ms": str(now_ms)})
            p.hset(k.conv_members(cid), mapping={u: str(t) for u, t in everyone.items()})
            for u in everyone:
                p.sadd(k.user_conversations(u), cid)
            await p.execute()
        return Conversation(cid, mode, creator, now_ms, everyone)

    async def conversation(self, cid: str) -> Conversation:
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(k.conv_meta(cid))
            p.hgetall(k.conv_members(cid))
            meta, members = await p.execute()
        if not meta:
            raise ConversationNotFound(cid)
        return Conversation(cid, meta["mode"], meta["created_by"], int(meta["created_at_ms"]),
                            {u: int(t) for u, t in members.items()})

    async def conversations_of(self, uid: str) -> list[str]:
        return sorted(await self.redis.smembers(k.user_conversations(uid)))

    async def remove_member(self, cid: str, uid: str) -> bool:
        async with self.redis.pipeline(transaction=False) as p:
            p.hdel(k.conv_members(cid), uid)
            p.srem(k.user_conversations(uid), cid)
            removed, _ = await p.execute()
        return bool(removed)

    # -- messages -------------------------------------------------------------------
    async def append(self, cid: str, sender: str, fields: dict[str, str], *,
                     idempotency_key: str | None, request_hash: str) -> SendResult:
        key = k.conv_idempotency(cid, sender, idempotency_key or "-")
        status, value = await self._send(
            keys=[key, k.conv_members(cid), k.conv_messages(cid), k.conv_rate(cid, sender)],
            args=[sender, request_hash if idempotency_key else "", self._idem_ttl_s, self._rate,
                  json.dumps(fields, separators=(",", ":"))])
        if status == "ok":
            return SendResult(value, replayed=False)
        if status == "dup":
            message_id, _, seen_hash = value.partition("|")
            if seen_hash != request_hash:
                raise IdempotencyConflict(idempotency_key or "")
            return SendResult(message_id, replayed=True)
        if status == "not_member":
            raise NotMember(cid)
        err = RateLimited(f"retry in {value} ms")
        err.retry_after_s = max(1, -(-int(value) // 1000))
        raise err

    async def page(self, cid: str, after: str | None, limit: int) -> list[tuple[str, dict[str, str]]]:
        start = f"({after}" if after else "-"
        raw = await self.redis.xrange(k.conv_messages(cid), min=start, count=limit)
        return [_message(i, f) for i, f in raw]

    async def message(self, cid: str, message_id: str) -> dict[str, str]:
        raw = await self.redis.xrange(k.conv_messages(cid), min=message_id, max=message_id)
        if not raw:
            raise MessageNotFound(message_id)
        return _message(*raw[0])[1]

    async def unsend(self, cid: str, message_id: str, requester: str) -> Unsent:
        status, media, grant = await self._unsend(
            keys=[k.conv_messages(cid), k.conv_unsent(cid)], args=[message_id, requester])
        if status == "missing":
            raise MessageNotFound(message_id)
        if status == "forbidden":
            raise NotAllowed("only the sender may unsend a message")
        return Unsent(media, grant)

    # -- users ------------------------------------------------------------------------
    async def block(self, uid: str, target: str) -> None:
        await self.redis.sadd(k.user_blocks(uid), target)

    async def unblock(self, uid: str, target: str) -> None:
        await self.redis.srem(k.user_blocks(uid), target)

    async def blocks_of(self, uid: str) -> set[str]:
        return set(await self.redis.smembers(k.user_blocks(uid)))

    async def note_received(self, users: Iterable[str], media_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            for u in users:
                p.sadd(k.user_received(u), media_id)
            await p.execute()

    async def has_received(self, uid: str, media_id: str) -> bool:
        return bool(await self.redis.sismember(k.user_received(uid), media_id))

    async def put_device(self, uid: str, device_id: str, record: dict[str, Any],
                         max_devices: int) -> None:
        key = k.user_devices(uid)
        if not await self.redis.hexists(key, device_id) and \
                await self.redis.hlen(key) >= max_devices:
            raise NotAllowed(f"at most {max_devices} devices per user")
        await self.redis.hset(key, device_id, json.dumps(record, sort_keys=True))

    async def remove_device(self, uid: str, device_id: str) -> bool:
        return bool(await self.redis.hdel(k.user_devices(uid), device_id))

    async def devices_of(self, users: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """user -> device id -> record, in one pipeline."""
        async with self.redis.pipeline(transaction=False) as p:
            for u in users:
                p.hgetall(k.user_devices(u))
            rows = await p.execute()
        return {u: {d: json.loads(v) for d, v in row.items()} for u, row in zip(users, rows,
                                                                                strict=True)}

    async def save_profile(self, uid: str, profile: dict[str, str]) -> None:
        await self.redis.hset(k.user_profile(uid), mapping=profile)

    async def add_report(self, fields: dict[str, str]) -> str:
        return str(await self.redis.xadd(k.REPORTS_STREAM, fields))
