"""Reading typed SDK messages in tests, and the stored state a failed send leaves."""

from __future__ import annotations

import hashlib
import json

from dm.sdk_types import MediaRef, Message
from dm.store import DmStore, SendResult


def media_of(message: Message) -> MediaRef:
    """A plain message's media; fails the test if it carries none."""
    media = message.get("media")
    assert media is not None, f"message {message['id']} carries no media"
    return media


async def stored_unannounced(
    store: DmStore, cid: str, sender: str, media_id: str, idempotency_key: str
) -> tuple[SendResult, bytes]:
    """The state a first attempt leaves when Redis fails between storing a media share and
    announcing it: the message and its idempotency record, nothing else.  Returns the
    stored send and the request body its idempotent retry must repeat byte for byte."""
    body = json.dumps({"media_id": media_id}).encode()
    first = await store.append(
        cid,
        sender,
        {"sender": sender, "kind": "plain", "media_id": media_id},
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(body).hexdigest()[:32],
    )
    assert not first.announced
    return first, body
