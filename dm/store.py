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
from typing import Any, cast

from service_kernel.redis_client import RedisClient, RedisPipeline, field_map, stream_entries
from service_kernel.stream_tail import decode_entry

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
from .notify import NotifyLog


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
        return {
            "id": self.id,
            "mode": self.mode,
            "created_by": self.created_by,
            "created_at_ms": self.created_at_ms,
            "members": sorted(self.members),
        }


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    replayed: bool
    #: The conversation's members when the message was stored (on a replay: now).
    members: tuple[str, ...] = ()
    #: False for a replay of this version's record ("|m"): it announces again, which the
    #: publish's marker makes a no-op when the first attempt's announce went out (see
    #: ``DmStore.announce``); and for an earlier version's record of a send whose announce
    #: had not finished ("|0").
    announced: bool = True


@dataclass(frozen=True, slots=True)
class Unsent:
    media_id: str
    grant_id: str
    #: A repeat of an unsend whose revocations and push already went out.
    announced: bool = False


def _message(entry_id: Any, fields: dict[Any, Any]) -> tuple[str, dict[str, str]]:
    """A conversation stream entry: the message is one JSON object in field ``m``."""
    eid, raw = decode_entry(entry_id, fields)
    doc = json.loads(raw.get("m", "{}"))
    return eid, {str(key): str(value) for key, value in doc.items()}


class DmStore:
    def __init__(self, redis: RedisClient, *, idempotency_ttl_s: int, send_rate_per_s: int) -> None:
        self.redis = redis
        self._idem_ttl_s = idempotency_ttl_s
        self._rate = send_rate_per_s
        self._send = redis.register_script(scripts.SEND)
        self._unsend = redis.register_script(scripts.UNSEND)
        self._put_device = redis.register_script(scripts.PUT_DEVICE)
        self._block = redis.register_script(scripts.BLOCK)

    # -- conversations ------------------------------------------------------------
    async def create_conversation(
        self, cid: str, creator: str, members: Sequence[str], mode: str
    ) -> Conversation:
        now_ms = int(time.time() * 1000)
        everyone = dict.fromkeys([creator, *members], now_ms)
        async with self.redis.pipeline(transaction=False) as p:
            p.hset(
                k.conv_meta(cid),
                mapping={"mode": mode, "created_by": creator, "created_at_ms": str(now_ms)},
            )
            p.hset(k.conv_members(cid), mapping={u: str(t) for u, t in everyone.items()})
            for u in everyone:
                p.zadd(k.user_conversations(u), {cid: 0})
            await p.execute()
        return Conversation(cid, mode, creator, now_ms, everyone)

    async def conversation(self, cid: str) -> Conversation:
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(k.conv_meta(cid))
            p.hgetall(k.conv_members(cid))
            meta, members = await p.execute()
        if not meta:
            raise ConversationNotFound(cid)
        return Conversation(
            cid,
            meta["mode"],
            meta["created_by"],
            int(meta["created_at_ms"]),
            {u: int(t) for u, t in members.items()},
        )

    async def conversations_of(self, uid: str, after: str | None = None, limit: int = 100) -> list[str]:
        """A page of the user's conversation ids in id order, after ``after`` (exclusive):
        a sorted set of equal scores, read by lexicographic range (ZRANGE BYLEX)."""
        low = f"({after}" if after else "-"
        return [
            str(c)
            for c in await self.redis.zrange(
                k.user_conversations(uid), low, "+", bylex=True, offset=0, num=limit
            )
        ]

    async def remove_member(self, cid: str, uid: str) -> bool:
        """Remove ``uid``, noting (in the same slot) that its events are still to publish."""
        async with self.redis.pipeline(transaction=False) as p:
            p.hdel(k.conv_members(cid), uid)
            p.hset(k.conv_left(cid), uid, "0")
            p.zrem(k.user_conversations(uid), cid)
            removed, _, _ = await p.execute()
        return bool(removed)

    async def left_state(self, cid: str, uid: str) -> str | None:
        """None (never removed), "0" (removed, events pending) or "1" (all published)."""
        value = await self.redis.hget(k.conv_left(cid), uid)
        return None if value is None else str(value)

    async def mark_left_announced(self, cid: str, uid: str) -> None:
        await self.redis.hset(k.conv_left(cid), uid, "1")

    # -- messages -------------------------------------------------------------------
    async def append(
        self,
        cid: str,
        sender: str,
        fields: dict[str, str],
        *,
        idempotency_key: str | None,
        request_hash: str,
    ) -> SendResult:
        key = k.conv_idempotency(cid, sender, idempotency_key or "-")
        status, value, *members = await self._send(
            keys=[key, k.conv_members(cid), k.conv_messages(cid), k.conv_rate(cid, sender)],
            args=[
                sender,
                request_hash if idempotency_key else "",
                self._idem_ttl_s,
                self._rate,
                json.dumps(fields, separators=(",", ":")),
            ],
        )
        if status == "ok":
            return SendResult(value, replayed=False, members=tuple(members), announced=False)
        if status == "dup":
            message_id, _, rest = value.partition("|")
            seen_hash, _, flag = rest.partition("|")
            if seen_hash != request_hash:
                raise IdempotencyConflict(idempotency_key or "")
            # "m": announce again, which the publish's marker makes a no-op if it went out.
            # Earlier versions' records: "0" (their announce had not finished: announce it),
            # "1" and none ("id|hash", from before the flag existed): announced.
            return SendResult(
                message_id, replayed=True, members=tuple(members), announced=flag not in ("m", "0")
            )
        if status == "not_member":
            raise NotMember(cid)
        err = RateLimited(f"retry in {value} ms")
        err.retry_after_s = max(1, -(-int(value) // 1000))
        raise err

    async def page(self, cid: str, after: str | None, limit: int) -> list[tuple[str, dict[str, str]]]:
        start = f"({after}" if after else "-"
        raw = stream_entries(await self.redis.xrange(k.conv_messages(cid), min=start, count=limit))
        return [_message(i, f) for i, f in raw]

    async def message(self, cid: str, message_id: str) -> dict[str, str]:
        raw = stream_entries(
            await self.redis.xrange(k.conv_messages(cid), min=message_id, max=message_id)
        )
        if not raw:
            raise MessageNotFound(message_id)
        return _message(*raw[0])[1]

    async def is_unsent(self, cid: str, message_id: str) -> bool:
        """Whether the message was unsent (its tombstone; read from Redis, never cached)."""
        return bool(await self.redis.hexists(k.conv_unsent(cid), message_id))

    async def unsend(self, cid: str, message_id: str, requester: str) -> Unsent:
        status, media, grant = await self._unsend(
            keys=[k.conv_messages(cid), k.conv_unsent(cid)], args=[message_id, requester]
        )
        if status == "missing":
            raise MessageNotFound(message_id)
        if status == "forbidden":
            raise NotAllowed("only the sender may unsend a message")
        return Unsent(media, grant, announced=status == "announced")

    async def mark_unsend_announced(self, cid: str, message_id: str) -> None:
        """Recorded after the unsend's revocations and push are published, so a repeat
        publishes nothing while a retry after a failure still repairs (see UNSEND)."""
        await self.redis.hset(k.conv_unsent(cid), f"{message_id}:announced", "1")

    # -- users ------------------------------------------------------------------------
    async def block(self, uid: str, target: str, max_blocks: int) -> bool:
        """True if this changed the list (a repeat block changes and announces nothing);
        at most ``max_blocks`` per user (checked and added in one script)."""
        added = int(await self._block(keys=[k.user_blocks(uid)], args=[target, max_blocks]))
        if added < 0:
            raise NotAllowed(f"at most {max_blocks} blocked users")
        return added == 1

    async def unblock(self, uid: str, target: str) -> bool:
        return bool(await self.redis.srem(k.user_blocks(uid), target))

    async def blocked_by_any(self, users: Sequence[str], uid: str) -> list[str]:
        """Those of ``users`` who blocked ``uid``, in one pipeline."""
        async with self.redis.pipeline(transaction=False) as p:
            for u in users:
                p.sismember(k.user_blocks(u), uid)
            rows = await p.execute()
        return [u for u, hit in zip(users, rows, strict=True) if hit]

    async def is_suspended(self, uid: str) -> bool:
        """Whether a moderator suspended ``uid`` (read from Redis; DmState caches it)."""
        return bool(await self.redis.hexists(k.SUSPENDED, uid))

    async def suspend(self, uid: str, record: dict[str, Any]) -> None:
        """Suspend ``uid``; ``record`` (who, why, when) is kept for the audit trail."""
        await self.redis.hset(k.SUSPENDED, uid, json.dumps(record))

    async def mark_seen(self, uid: str) -> None:
        await self.redis.set(k.user_seen(uid), "1", ex=k.USER_SEEN_TTL_S)

    async def unknown_users(self, users: Sequence[str]) -> list[str]:
        """Those of ``users`` dm has never seen a session of (or not for USER_SEEN_TTL_S)."""
        async with self.redis.pipeline(transaction=False) as p:
            for u in users:
                p.exists(k.user_seen(u))
            rows = await p.execute()
        return [u for u, n in zip(users, rows, strict=True) if not n]

    async def blocks_of(self, uid: str) -> set[str]:
        return set(cast(set[str], await self.redis.smembers(k.user_blocks(uid))))  # decoded

    async def announce(
        self,
        notify: NotifyLog,
        event: dict[str, str],
        *,
        cid: str,
        message_id: str,
        received_by: Iterable[str],
        media_id: str | None,
        idempotency_key: str | None,
    ) -> None:
        """Push the message to its recipients and record, per recipient, which message brought
        them the media (re-share rights), in one round trip.  Every write here is idempotent,
        and the push too when the send has an idempotency key: its event is published under
        a marker (``NOTIFY``), so the idempotent retry of a send whose first attempt failed
        anywhere after storing the message publishes it if and only if it was not yet."""
        # One round trip for the push and the received-media sets (a Cluster pipeline sends
        # each node its share).  The sets may be written when the publish failed: they are
        # idempotent, and the message they name is stored and readable anyway.
        received = list(received_by) if media_id else []  # no media: no sets to write
        once = (k.notify_once(cid, message_id), self._idem_ttl_s) if idempotency_key else None
        async with self.redis.pipeline(transaction=False) as p:
            published = notify.queue_publish(p, event, once=once)
            self._queue_received(p, received, media_id or "", f"{cid}|{message_id}")
            replies = await p.execute(raise_on_error=False)
        await published(replies[0])
        if any(isinstance(reply, Exception) for reply in replies[1:]):
            # Returned, not retried (raise_on_error=False): the idempotent set writes go
            # again on their own, with the client's retries, and raise what still fails.
            async with self.redis.pipeline(transaction=False) as p:
                self._queue_received(p, received, media_id or "", f"{cid}|{message_id}")
                await p.execute()

    @staticmethod
    def _queue_received(pipe: RedisPipeline, users: list[str], media_id: str, source: str) -> None:
        """Record, per user, that ``source`` ("<cid>|<message id>") brought them ``media_id``."""
        for u in users:
            key = k.user_received(u, media_id)
            pipe.sadd(key, source)
            pipe.expire(key, k.RECEIVED_TTL_S)

    async def holds_media(self, uid: str, media_id: str) -> bool:
        """Whether ``uid`` currently holds ``media_id`` through a plain message: one that
        brought it to them, is not unsent, in a conversation they are still a member of.
        Checked afresh at every re-share (dead sources are dropped as they are found)."""
        key = k.user_received(uid, media_id)
        members = cast(set[str], await self.redis.smembers(key))  # decoded
        sources = sorted(members)[-k.RECEIVED_SOURCES_MAX :]
        if not sources:
            return False
        pairs = [s.split("|", 1) for s in sources]
        async with self.redis.pipeline(transaction=False) as p:
            for cid, mid in pairs:
                p.hexists(k.conv_members(cid), uid)
                p.hexists(k.conv_unsent(cid), mid)
            flags = await p.execute()
        dead = [src for i, src in enumerate(sources) if not flags[2 * i] or flags[2 * i + 1]]
        if dead:
            await self.redis.srem(key, *dead)
        return len(dead) < len(sources)

    async def put_device(
        self, uid: str, device_id: str, record: dict[str, Any], max_devices: int
    ) -> None:
        stored = await self._put_device(
            keys=[k.user_devices(uid)], args=[device_id, json.dumps(record, sort_keys=True), max_devices]
        )
        if not stored:
            raise NotAllowed(f"at most {max_devices} devices per user")

    async def remove_device(self, uid: str, device_id: str) -> bool:
        return bool(await self.redis.hdel(k.user_devices(uid), device_id))

    async def devices_of(self, users: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """user -> device id -> record, in one pipeline."""
        async with self.redis.pipeline(transaction=False) as p:
            for u in users:
                p.hgetall(k.user_devices(u))
            rows = await p.execute()
        return {
            u: {d: json.loads(v) for d, v in row.items()} for u, row in zip(users, rows, strict=True)
        }

    async def save_profile(self, uid: str, profile: dict[str, str]) -> None:
        """Dev issuer: the new user's profile; they exist from now on (see user_seen)."""
        async with self.redis.pipeline(transaction=False) as p:
            p.hset(k.user_profile(uid), mapping=field_map(profile))
            p.expire(k.user_profile(uid), k.USER_SEEN_TTL_S)
            p.set(k.user_seen(uid), "1", ex=k.USER_SEEN_TTL_S)
            await p.execute()

    async def profile(self, uid: str) -> dict[str, str] | None:
        """Dev issuer: the profile :meth:`save_profile` stored, or None (never created, or
        not seen for USER_SEEN_TTL_S)."""
        row = await self.redis.hgetall(k.user_profile(uid))
        return {str(f): str(v) for f, v in row.items()} if row else None

    async def add_report(self, fields: dict[str, str]) -> tuple[str, bool]:
        """File a report; ``(report id, True)`` for a repeat of the reporter's earlier report
        of the same message, which files nothing.  The claim is taken before the XADD, so
        concurrent repeats file one report (an id of "" means the first is in flight)."""
        dedup = k.report_dedup(fields["reporter"], fields["conversation_id"], fields["message_id"])
        if not await self.redis.set(dedup, "", nx=True, ex=k.REPORT_DEDUP_TTL_S):
            return str(await self.redis.get(dedup) or ""), True
        try:
            report_id = str(
                await self.redis.xadd(
                    k.REPORTS_STREAM, field_map(fields), maxlen=k.REPORTS_MAXLEN, approximate=True
                )
            )
        except BaseException:
            await self.redis.delete(dedup)  # let the retry file it
            raise
        await self.redis.set(dedup, report_id, ex=k.REPORT_DEDUP_TTL_S)
        return report_id, False
