"""Rendering a stored message for one reader: the pointer is minted for *that* reader.

A pointer is bound to the media, the reader, the conversation and the
message, and expires in minutes; the ready edge URL carries it.  Stored
messages never hold pointers: each read and each push mints fresh ones.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
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
        token = pointer.mint(
            self._ring.signer(),
            media_id=media_id,
            sub=reader,
            conversation_id=cid,
            message_id=message_id,
            now=now,
            ttl_s=self._ttl_s,
        )
        return {
            "id": media_id,
            "pointer": token,
            "expires_at": int(now) + self._ttl_s,
            "url": f"{self._edge}/m/{quote(media_id)}?pointer={token}",
        }


#: Sealed messages whose envelope maps stay parsed: a fan-out renders one message for every
#: member's every device within moments, so a handful suffices; at most 256 KiB each.
ENVELOPE_CACHE_SIZE = 32


@functools.lru_cache(maxsize=ENVELOPE_CACHE_SIZE)
def envelopes_of(raw: str) -> Mapping[str, str]:
    """A sealed message's ``"<user>/<device>" -> envelope`` map, parsed once per message.

    Each device's push renders the same message and used to parse every member's
    envelopes to pick its own: for G members with D devices that is G*D parses of a
    G*D-entry map per message, per process.  Every subscriber receives the same
    decoded event (one ``str`` object, whose hash Python caches), so this cache hits
    for all but the first device.  The map is shared: callers only read it.
    """
    doc = json.loads(raw)
    return doc if isinstance(doc, dict) else {}


def render(
    minter: PointerMinter | None,
    cid: str,
    message_id: str,
    fields: dict[str, str],
    reader: str,
    device: str = "",
) -> dict[str, Any]:
    """The JSON a reader's device receives for one message, over HTTP or the WebSocket.

    Plain: text and media with a pointer minted for this reader.  Sealed: only
    this device's envelope and the franking values; the server cannot do more.
    """
    out: dict[str, Any] = {
        "id": message_id,
        "conversation_id": cid,
        "sender": fields.get("sender", ""),
        "sent_at_ms": id_key(message_id)[0],
        "kind": fields.get("kind", "plain"),
    }
    if out["kind"] == "plain":
        out["text"] = fields.get("text") or None
        media_id = fields.get("media_id")
        if not media_id:
            out["media"] = None
        elif minter is None:
            out["media"] = {"id": media_id}  # no pointer: read the message to get one
        else:
            out["media"] = minter.media_for(media_id, reader, cid, message_id)
    elif out["kind"] == "sealed":
        envelopes = envelopes_of(fields.get("envelopes", "{}"))
        out["client_message_id"] = fields.get("client_message_id")
        out["envelope"] = envelopes.get(f"{reader}/{device}")
        out["franking"] = {
            "commitment": fields.get("commitment"),
            "countersignature": fields.get("countersignature"),
            "ts_ms": int(fields.get("ts_ms", "0")),
        }
    return out
