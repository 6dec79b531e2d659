"""Rendering a stored message for one reader: the pointer is minted for *that* reader.

A pointer is bound to the media, the reader, the conversation and the
message, and expires in minutes; the ready edge URL carries it.  Stored
messages never hold pointers: each read and each push mints fresh ones.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from cdn_auth import pointer
from cdn_auth.keyring import KeyRingSource

from .notify import id_key


class PointerMinter:
    def __init__(self, ring: KeyRingSource, *, ttl_s: int, edge_base_url: str) -> None:
        self._ring = ring
        self._ttl_s = ttl_s
        self._edge = edge_base_url.rstrip("/")

    def media_for(self, media_id: str, reader: str, cid: str, message_id: str) -> dict[str, Any]:
        now = time.time()
        token = pointer.mint(self._ring.signer(), media_id=media_id, sub=reader,
                             conversation_id=cid, message_id=message_id, now=now,
                             ttl_s=self._ttl_s)
        return {"id": media_id, "pointer": token, "expires_at": int(now) + self._ttl_s,
                "url": f"{self._edge}/m/{quote(media_id)}?pointer={token}"}


def render(minter: PointerMinter, cid: str, message_id: str, fields: dict[str, str],
           reader: str) -> dict[str, Any]:
    """The JSON a reader receives for one message, over HTTP or the WebSocket."""
    out: dict[str, Any] = {
        "id": message_id, "conversation_id": cid, "sender": fields.get("sender", ""),
        "sent_at_ms": id_key(message_id)[0], "kind": fields.get("kind", "plain"),
    }
    if out["kind"] == "plain":
        out["text"] = fields.get("text") or None
        media_id = fields.get("media_id")
        out["media"] = minter.media_for(media_id, reader, cid, message_id) if media_id else None
    return out
