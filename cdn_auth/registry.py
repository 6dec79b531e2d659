"""The media registry in Redis: one hash per media item, keyed with a hash tag.

A bank sweep may take down an item that is being registered: its hashes are indexed (so
the sweep finds its id) before its record is written.  :meth:`MediaRegistry.take_down`
then leaves a pending takedown beside the record-to-be, and :meth:`MediaRegistry.put`
registers the item taken down; each is one script, so in either order the takedown stands.
"""

from __future__ import annotations

from dataclasses import replace

from service_kernel.errors import InvalidField
from service_kernel.redis_client import RedisClient, RedisFailure

from . import redis_keys
from .errors import MediaNotFound, RedisUnavailable
from .media import STATUSES, Media, from_redis, to_redis


class MediaRegistry:
    def __init__(self, redis: RedisClient, *, holds_maxlen: int = 100_000) -> None:
        self._redis = redis
        self._holds_maxlen = holds_maxlen
        self._transition = redis.register_script(_TRANSITION)
        self._put = redis.register_script(_PUT)
        self._take_down = redis.register_script(_TAKE_DOWN)

    async def put(self, media: Media) -> Media:
        """Write the record; a takedown that reached its id first (a bank sweep racing the
        registration) is applied in the same script.  Returns the record as written."""
        args = [x for kv in to_redis(media).items() for x in kv]
        try:
            raw = await self._put(
                keys=[redis_keys.media_key(media.id), redis_keys.pending_takedown(media.id)], args=args
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        return media.taken_down() if int(raw) else media

    async def take_down(self, media_id: str, *, reason: str, by: str) -> bool:
        """Take the item down, or, if its record is not written yet (an upload between its
        hash index write and its registration), leave the takedown for :meth:`put` to apply
        (for :data:`redis_keys.PENDING_TAKEDOWN_TTL_S`).  True if a record was changed."""
        try:
            done = await self._take_down(
                keys=[redis_keys.media_key(media_id), redis_keys.pending_takedown(media_id)],
                args=[reason, by, redis_keys.PENDING_TAKEDOWN_TTL_S],
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        return bool(int(done))

    async def get(self, media_id: str) -> Media:
        try:
            h = await self._redis.hgetall(redis_keys.media_key(media_id))
        except RedisFailure as exc:
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
        except RedisFailure as exc:
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
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        return bool(int(changed))


#: KEYS: the media hash.  ARGV: from, to, reason, by.  1 if the status was ``from``.
_TRANSITION = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'status_reason', ARGV[3], 'status_by', ARGV[4])
return 1
"""

#: KEYS: the media hash, its pending takedown.  ARGV: field, value, ...  Writes the record;
#: with a pending takedown, its status is taken_down (with that takedown's reason and
#: moderator) and 1 is returned, else 0.
_PUT = """
redis.call('HSET', KEYS[1], unpack(ARGV))
local pending = redis.call('HMGET', KEYS[2], 'reason', 'by')
if not pending[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'taken_down', 'status_reason', pending[1],
  'status_by', pending[2])
redis.call('DEL', KEYS[2])
return 1
"""

#: KEYS: the media hash, its pending takedown.  ARGV: reason, by, pending TTL (s).
#: 1 if the record existed (and is now taken down), 0 if the takedown was left pending.
_TAKE_DOWN = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'taken_down', 'status_reason', ARGV[1],
    'status_by', ARGV[2])
  return 1
end
redis.call('HSET', KEYS[2], 'reason', ARGV[1], 'by', ARGV[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 0
"""


def _s(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v
