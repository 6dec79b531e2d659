"""Who minted each grant, and who holds each share capability, in Redis: the records that
decide who may revoke them (and who may attach a grant to a message).

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

    async def record_capability(self, cap_id: str, holder: str, owner: str, expire_at_s: int) -> None:
        """Note who holds ``cap_id`` and whose media it shares (the owner, not the media id:
        which media a holder may share stays out of Redis); expires at ``expire_at_s``."""
        meta = redis_keys.capability_meta_key(cap_id)
        try:
            async with self._redis.pipeline(transaction=True) as p:
                p.hset(meta, mapping={"holder": holder, "owner": owner})
                p.expireat(meta, expire_at_s)
                await p.execute()
        except RedisError as exc:
            raise RedisUnavailable(str(exc)) from exc

    async def capability_parties(self, cap_id: str) -> tuple[str, str] | None:
        """(holder, owner) of a capability, or None if unknown or expired."""
        try:
            meta = await self._redis.hgetall(redis_keys.capability_meta_key(cap_id))
        except RedisError as exc:
            raise RedisUnavailable(str(exc)) from exc
        fields = {str(k): str(v) for k, v in meta.items()}  # decoded by connect()
        if "holder" not in fields:
            return None
        return fields["holder"], fields.get("owner", "")
