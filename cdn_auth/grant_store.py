"""Who minted each grant, and who holds each share capability, in Redis: the records that
decide who may revoke them (and who may attach a grant to a message).

The record names the sharer only, never the media (which media a sealed
message carries is kept out of Redis), and expires with the grant.
"""

from __future__ import annotations

from typing import NamedTuple

from redis.typing import EncodableT, FieldT

from service_kernel.redis_client import RedisClient, RedisFailure

from . import redis_keys
from .errors import RedisUnavailable


async def grant_sharer(redis: RedisClient, grant_id: str) -> str | None:
    """Who minted a grant (None if unknown or expired): only they may attach it to a message."""
    try:
        sharer = await redis.hget(redis_keys.grant_meta_key(grant_id), "sharer")
    except RedisFailure as exc:
        raise RedisUnavailable(str(exc)) from exc
    return None if sharer is None else str(sharer)


class CapabilityRecord(NamedTuple):
    """What the store keeps of a capability: who may revoke it, and what it was issued on."""

    holder: str
    owner: str
    #: The grant (or derived grant) a re-sharer's capability was issued on; None for the owner.
    source: str | None
    source_exp: int


#: Lua: move KEYS-side ``key``'s expiry to ``at`` (epoch s) unless it already ends later;
#: never shortened.  ``EXPIREAT ... GT/NX`` says the same from Redis 7.0 only, and Redis 6.2
#: is supported (docs/operations.md, section 9): TTL against the server's own TIME instead.
EXPIRE_NOT_BEFORE = """
local function expire_not_before(key, at)
  local ttl = redis.call('TTL', key)
  if ttl == -1 or (ttl >= 0 and tonumber(redis.call('TIME')[1]) + ttl < at) then
    redis.call('EXPIREAT', key, at)
  end
end
"""

#: KEYS: the (source, holder) issued set, the source's denied set (one slot: the source's tag).
#: ARGV: capability id, holder, expire-at (s).  Returns 1 if the holder is denied on source.
RECORD_ISSUED = (
    EXPIRE_NOT_BEFORE
    + """
redis.call('SADD', KEYS[1], ARGV[1])
expire_not_before(KEYS[1], tonumber(ARGV[3]))
return redis.call('SISMEMBER', KEYS[2], ARGV[2])
"""
)

#: KEYS: the source's denied set, the (source, holder) issued set (one slot).
#: ARGV: holder, expire-at (s).  Returns the capability ids issued to the holder on source.
DENY_REISSUE = (
    EXPIRE_NOT_BEFORE
    + """
redis.call('SADD', KEYS[1], ARGV[1])
expire_not_before(KEYS[1], tonumber(ARGV[2]))
return redis.call('SMEMBERS', KEYS[2])
"""
)

#: KEYS: the user's held tokens (sorted by expiry + slack).  ARGV: capability or grant id,
#: its score (expire-at + HELD_SLACK_S, s), now (s).  Lists it, drops the entries whose
#: score has passed, and keeps the key until the latest score.
RECORD_HELD = (
    EXPIRE_NOT_BEFORE
    + """
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
expire_not_before(KEYS[1], tonumber(ARGV[2]))
return 1
"""
)


class GrantStore:
    """The grant records of one Redis (or cluster)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._record_issued = redis.register_script(RECORD_ISSUED)
        self._deny_reissue = redis.register_script(DENY_REISSUE)
        self._record_held = redis.register_script(RECORD_HELD)

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

    async def record_capability(
        self,
        cap_id: str,
        holder: str,
        owner: str,
        expire_at_s: int,
        *,
        source: str | None = None,
        source_exp: int = 0,
    ) -> None:
        """Note who holds ``cap_id`` and whose media it shares (the owner, not the media id:
        which media a holder may share stays out of Redis), and for a re-share the grant it
        was issued on (``source``, expiring at ``source_exp``); expires at ``expire_at_s``."""
        meta = redis_keys.capability_meta_key(cap_id)
        chain: dict[FieldT, EncodableT] = (
            {} if source is None else {"source": source, "source_exp": str(source_exp)}
        )
        try:
            async with self._redis.pipeline(transaction=True) as p:
                p.hset(meta, mapping={"holder": holder, "owner": owner, **chain})
                p.expireat(meta, expire_at_s)
                await p.execute()
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc

    async def record_held(self, user: str, token_id: str, expire_at_s: int, now_s: float) -> None:
        """List a capability or minted grant issued to ``user`` (``token_id``, expiring at
        ``expire_at_s``) among what a suspension of the user revokes (cdn_auth.suspension)."""
        try:
            await self._record_held(
                keys=[redis_keys.held_tokens_key(user)],
                args=[token_id, expire_at_s + redis_keys.HELD_SLACK_S, int(now_s)],
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc

    async def capability_record(self, cap_id: str) -> CapabilityRecord | None:
        """A capability's record, or None if unknown or expired."""
        try:
            meta = await self._redis.hgetall(redis_keys.capability_meta_key(cap_id))
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        fields = {str(k): str(v) for k, v in meta.items()}  # decoded by connect()
        if "holder" not in fields:
            return None
        source_exp = fields.get("source_exp", "0")
        return CapabilityRecord(
            fields["holder"],
            fields.get("owner", ""),
            fields.get("source") or None,
            int(source_exp) if source_exp.isdigit() else 0,
        )

    async def capability_parties(self, cap_id: str) -> tuple[str, str] | None:
        """(holder, owner) of a capability, or None if unknown or expired."""
        rec = await self.capability_record(cap_id)
        return None if rec is None else (rec.holder, rec.owner)

    async def record_issued(self, source: str, holder: str, cap_id: str, expire_at_s: int) -> bool:
        """Note that ``cap_id`` was issued to ``holder`` on the proof ``source`` (until
        ``expire_at_s``, the source's own end), and say whether that may stand: False if the
        owner or a moderator already revoked a capability of this holder on it.  One script
        on the slot :meth:`deny_reissue`'s runs on: either this issue is among the ids that
        revocation reads, or this sees the denial."""
        try:
            denied = await self._record_issued(
                keys=[
                    redis_keys.capability_issued_key(source, holder),
                    redis_keys.capability_denied_key(source),
                ],
                args=[cap_id, holder, expire_at_s],
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        return not int(denied)

    async def deny_reissue(self, source: str, holder: str, expire_at_s: int) -> frozenset[str]:
        """``holder`` gets no new capability on the proof ``source`` until ``expire_at_s``
        (the source's own end): its capability on it was revoked by someone else.  Returns
        the ids of every capability issued to ``holder`` on ``source`` (:meth:`record_issued`),
        all of which the revoker ends too."""
        try:
            issued = await self._deny_reissue(
                keys=[
                    redis_keys.capability_denied_key(source),
                    redis_keys.capability_issued_key(source, holder),
                ],
                args=[holder, expire_at_s],
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        return frozenset(str(m) for m in issued)  # decoded by connect()

    async def reissue_denied(self, source: str, holder: str) -> bool:
        """Whether :meth:`deny_reissue` refused ``holder`` a capability on ``source``."""
        try:
            return bool(await self._redis.sismember(redis_keys.capability_denied_key(source), holder))
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
