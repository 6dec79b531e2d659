"""Who minted each grant, in Redis: the record that decides who may revoke it or attach it.

The record names the sharer only, never the media (which media a sealed
message carries is kept out of Redis), and expires with the grant.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from service_kernel.redis_client import RedisClient

from . import redis_keys
from .errors import RedisUnavailable


async def grant_sharer(redis: RedisClient, grant_id: str) -> str | None:
    """Who minted a grant (None if unknown or expired): only they may attach it to a message."""
    try:
        sharer = await redis.hget(redis_keys.grant_meta_key(grant_id), "sharer")
    except RedisError as exc:
        raise RedisUnavailable(str(exc)) from exc
    return None if sharer is None else str(sharer)


class GrantStore:
    """The grant records of one Redis (or cluster)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def record(self, grant_id: str, sharer: str, expire_at_s: int) -> None:
        """Note who minted ``grant_id``; the record expires at ``expire_at_s`` (epoch s)."""
        meta = redis_keys.grant_meta_key(grant_id)
        async with self._redis.pipeline(transaction=True) as p:
            p.hset(meta, mapping={"sharer": sharer})
            p.expireat(meta, expire_at_s)
            await p.execute()

    async def sharer(self, grant_id: str) -> str | None:
        """Who minted a grant (None if unknown or expired)."""
        return await grant_sharer(self._redis, grant_id)
