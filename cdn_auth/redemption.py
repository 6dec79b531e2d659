"""Binding the first N distinct users to a grant: one Lua script, one round trip, one slot."""

from __future__ import annotations

from service_kernel.redis_client import RedisClient, RedisFailure

from . import redis_keys
from .errors import GrantExhausted, RedisUnavailable
from .grant import Grant

#: KEYS: the grant's redeemer set.  ARGV: user, max redeemers, expire-at (s).
#: Returns 1 if the user is (now) bound, 0 if the grant is full.
BIND = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[3]))
return 1
"""


class Redemptions:
    def __init__(self, redis: RedisClient, leeway_s: int) -> None:
        self._bind = redis.register_script(BIND)
        self._redis = redis
        self._leeway_s = leeway_s

    async def bind(self, grant: Grant, user: str) -> None:
        """Bind ``user`` to ``grant`` or raise :class:`GrantExhausted` (403)."""
        try:
            ok = await self._bind(
                keys=[redis_keys.grant_key(grant.grant_id)],
                args=[user, grant.max_redeemers, grant.exp + self._leeway_s],
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        if int(ok) != 1:
            raise GrantExhausted(f"{grant.grant_id} has {grant.max_redeemers} redeemers")

    async def is_bound(self, grant_id: str, user: str) -> bool:
        try:
            return bool(await self._redis.sismember(redis_keys.grant_key(grant_id), user))
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
