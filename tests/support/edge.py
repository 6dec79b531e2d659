"""Talking to a test edge: a pointer for a media item, and a fetch with a session."""

from __future__ import annotations

import time
from typing import Any

from cdn_auth import pointer
from cdn_auth.keyring import KeyRing
from cdn_auth.media import Media

from .services import Edge, bearer


def mint(
    ring: KeyRing,
    media: Media,
    sub: str = "bob",
    *,
    conv: str = "c_1",
    msg: str = "msg_1",
    now: float | None = None,
    ttl_s: int = 300,
) -> str:
    return pointer.mint(
        ring.signer(),
        media_id=media.id,
        sub=sub,
        conversation_id=conv,
        message_id=msg,
        now=time.time() if now is None else now,
        ttl_s=ttl_s,
    )


async def fetch(
    edge: Edge, media_id: str, session: str | None, ptr: str | None = None, **headers: str
) -> tuple[int, Any]:
    h = dict(headers)
    if session is not None:
        h.update(bearer(session))
    params = {"pointer": ptr} if ptr else {}
    async with edge.client.get(f"/m/{media_id}", params=params, headers=h) as r:
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body
