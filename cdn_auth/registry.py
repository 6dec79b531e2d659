"""The media registry in Redis: one hash per media item, keyed with a hash tag."""

from __future__ import annotations

from dataclasses import replace

from redis.exceptions import RedisError

from service_kernel.errors import InvalidField
from service_kernel.redis_client import RedisClient, field_map

from . import redis_keys
from .errors import MediaNotFound, RedisUnavailable
from .media import STATUSES, Media, from_redis, to_redis


class MediaRegistry:
    def __init__(self, redis: RedisClient, *, holds_maxlen: int = 100_000) -> None:
        self._redis = redis
        self._holds_maxlen = holds_maxlen
        self._transition = redis.register_script(_TRANSITION)

    async def put(self, media: Media) -> None:
        try:
            await self._redis.hset(redis_keys.media_key(media.id), mapping=field_map(to_redis(media)))
        except RedisError as exc:
            raise RedisUnavailable(str(exc)) from exc

    async def get(self, media_id: str) -> Media:
        try:
            h = await self._redis.hgetall(redis_keys.media_key(media_id))
        except RedisError as exc:
            raise RedisUnavailable(str(exc)) from exc
        if not h:
            raise MediaNotFound(media_id)
        return from_redis({_s(k): _s(v) for k, v in h.items()})

    async def announce_hold(self, media: Media, at_s: int) -> None:
        """Queue media registered "held" (a bank match) for the moderators' review; the
        queue keeps about ``holds_maxlen`` newest entries (a plain XADD grew it for ever)."""
        await self._redis.xadd(
            redis_keys.MEDIA_HOLDS_STREAM,
            {"media_id": media.id, "owner": media.owner, "at": str(at_s)},
            maxlen=self._holds_maxlen,
            approximate=True,
        )

    async def set_status(self, media_id: str, status: str, *, reason: str = "", by: str = "") -> Media:
        """Change the status; the moderator and reason are kept on the record for audit."""
        if status not in STATUSES:
            raise InvalidField(f"status must be one of {STATUSES}")
        media = await self.get(media_id)
        try:
            await self._redis.hset(
                redis_keys.media_key(media_id),
                mapping={"status": status, "status_reason": reason, "status_by": by},
            )
        except RedisError as exc:
            raise RedisUnavailable(str(exc)) from exc
        return replace(media, status=status)

    async def transition(
        self, media_id: str, from_status: str, to_status: str, *, reason: str = "", by: str = ""
    ) -> bool:
        """Change the status only if it is still ``from_status`` (one script: a takedown
        landing meanwhile is never overwritten).  True if it changed."""
        if to_status not in STATUSES:
            raise InvalidField(f"status must be one of {STATUSES}")
        try:
            changed = await self._transition(
                keys=[redis_keys.media_key(media_id)], args=[from_status, to_status, reason, by]
            )
        except RedisError as exc:
            raise RedisUnavailable(str(exc)) from exc
        return bool(int(changed))


#: KEYS: the media hash.  ARGV: from, to, reason, by.  1 if the status was ``from``.
_TRANSITION = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'status_reason', ARGV[3], 'status_by', ARGV[4])
return 1
"""


def _s(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v
