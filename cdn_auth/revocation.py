"""Revocation events in a Redis Stream, and the publisher that writes them.

Event kinds and their fields (all strings)::

    unsent         conversation_id, message_id      -> the message's pointers: 410
    left           conversation_id, user_id          -> that user's pointers minted before: 403
    takedown       media_id                           -> every fetch of the media: 410
    grant_revoked  grant_id                           -> the grant: 410
    capability_revoked  cap_id                        -> every grant derived from it, and
                                                         every capability re-shared from it: 410
    playback_ended user_id, device_id                 -> that device's media cookies issued
                                                         at or before it: 401 (a sign-out)

A stream, not pub/sub: an edge that reconnects reads on from its last id
and misses nothing; a starting edge reads the last max-token-lifetime of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from service_kernel.errors import InvalidField
from service_kernel.redis_client import RedisClient, RedisFailure, field_map

from . import redis_keys
from .errors import RedisUnavailable

KINDS = ("unsent", "left", "takedown", "grant_revoked", "capability_revoked", "playback_ended")
_FIELDS = ("conversation_id", "message_id", "user_id", "media_id", "grant_id", "cap_id", "device_id")


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    kind: str
    conversation_id: str = ""
    message_id: str = ""
    user_id: str = ""
    media_id: str = ""
    grant_id: str = ""
    cap_id: str = ""
    device_id: str = ""
    at_ms: int = 0  # from the stream id when read back

    def fields(self) -> dict[str, str]:
        out = {"kind": self.kind}
        for name in _FIELDS:
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    @classmethod
    def from_stream(cls, entry_id: str, fields: dict[str, str]) -> RevocationEvent:
        kind = fields.get("kind", "")
        if kind not in KINDS:
            raise InvalidField(f"unknown revocation kind {kind!r}")
        values = {n: fields.get(n, "") for n in _FIELDS}
        return cls(kind, **values, at_ms=int(entry_id.split("-", 1)[0]))


def unsent(conversation_id: str, message_id: str) -> RevocationEvent:
    return RevocationEvent("unsent", conversation_id=conversation_id, message_id=message_id)


def left(conversation_id: str, user_id: str) -> RevocationEvent:
    return RevocationEvent("left", conversation_id=conversation_id, user_id=user_id)


def takedown(media_id: str) -> RevocationEvent:
    return RevocationEvent("takedown", media_id=media_id)


def grant_revoked(grant_id: str) -> RevocationEvent:
    return RevocationEvent("grant_revoked", grant_id=grant_id)


def capability_revoked(cap_id: str) -> RevocationEvent:
    return RevocationEvent("capability_revoked", cap_id=cap_id)


def playback_ended(user_id: str, device_id: str) -> RevocationEvent:
    """``DELETE /v1/playback-session``: the device's media cookies stop working, copies too."""
    return RevocationEvent("playback_ended", user_id=user_id, device_id=device_id)


class RevocationLog:
    """Appends events; trims entries older than the retention window on each write."""

    def __init__(
        self, redis: RedisClient, retention_s: int = redis_keys.REVOCATION_STREAM_RETENTION_S
    ) -> None:
        self._redis = redis
        self._retention_ms = retention_s * 1000

    async def publish(self, event: RevocationEvent) -> str:
        minid = int(time.time() * 1000) - self._retention_ms
        try:
            entry_id = await self._redis.xadd(
                redis_keys.REVOCATION_STREAM, field_map(event.fields()), minid=minid, approximate=True
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def publish_many(self, events: list[RevocationEvent], batch: int = 1000) -> list[str]:
        """Append ``events`` in order, ``batch`` to a round trip (one stream, one slot): a
        suspension may revoke thousands of tokens at once.  On a failure, the events of the
        batches already sent are published and the rest are not: the caller repeats the
        whole action (every revocation is idempotent)."""
        minid = int(time.time() * 1000) - self._retention_ms
        ids: list[str] = []
        for i in range(0, len(events), batch):
            try:
                async with self._redis.pipeline(transaction=False) as p:
                    for ev in events[i : i + batch]:
                        p.xadd(
                            redis_keys.REVOCATION_STREAM,
                            field_map(ev.fields()),
                            minid=minid,
                            approximate=True,
                        )
                    replies = await p.execute()
            except RedisFailure as exc:
                raise RedisUnavailable(str(exc)) from exc
            ids += [r.decode() if isinstance(r, bytes) else str(r) for r in replies]
        return ids
