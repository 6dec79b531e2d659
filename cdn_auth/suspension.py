"""Users a moderator suspended, as the media API sees them: they register no media, get no
grant or capability, and the capabilities they hold are revoked (by dm, with the ids
:meth:`SuspendedUsers.suspend` returns).

dm's ``suspend_user`` review action writes here (beside its own record, which stops
sends); ``POST /v1/media`` reads it before accepting a byte.  One Redis hash in the CDN's
key space, which dm already writes (it publishes to the revocation stream the edges tail
and takes media down in the registry), so the record reaches every edge exactly when a
takedown would.  Read on each registration, never cached: a suspension holds from the
moment it is written, and for as long as it stands (a revocation event would be forgotten
with the stream's 24 h retention).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from service_kernel.redis_client import RedisClient, RedisFailure

from . import redis_keys, revocation
from .errors import RedisUnavailable, UserSuspended
from .revocation import RevocationEvent


class SuspendedUsers:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def suspend(self, user_id: str, record: Mapping[str, Any]) -> list[RevocationEvent]:
        """Suspend ``user_id``; ``record`` (who, why, when) is kept for the audit trail.

        Returns the revocations the caller publishes: ``capability_revoked`` for each share
        capability the user holds and ``grant_revoked`` for each grant they minted that
        may still live.  A suspended user makes no new shares, and either would let them
        share offline (derive grants, or hand out a grant kept back) until it expired.
        Read after the suspension is written, as an issue lists its token before it checks
        the suspension again (cdn_auth.web_capabilities, web_grants): one of the two sees
        the other.  Tokens issued before that listing existed are not in it."""
        try:
            await self._redis.hset(redis_keys.SUSPENDED_USERS, user_id, json.dumps(dict(record)))
            held = await self._redis.zrangebyscore(
                redis_keys.held_tokens_key(user_id), int(time.time()), "+inf"
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        out = []
        for token_id in sorted(str(t) for t in held):
            if token_id.startswith("c_"):
                out.append(revocation.capability_revoked(token_id))
            elif token_id.startswith("g_"):
                out.append(revocation.grant_revoked(token_id))
        return out

    async def refuse(self, user_id: str) -> None:
        """Raise ``UserSuspended`` for a suspended user: no media registrations, grants or
        capabilities (every route that hands out something new for media calls this)."""
        if await self.is_suspended(user_id):
            raise UserSuspended()

    async def is_suspended(self, user_id: str) -> bool:
        try:
            return bool(await self._redis.hexists(redis_keys.SUSPENDED_USERS, user_id))
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
