"""Users and 1:1 conversations made through the dm's own API, for the benchmarks that send
messages (dm, sealed): each sender owns a private video in the dm's media registry, as a
content pipeline would have put it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdn_auth.media import AudienceRules, Media
from cdn_auth.registry import MediaRegistry
from dm.client import DmClient
from dm.envelope import DeviceKey
from service_kernel.ids import new_id
from service_kernel.redis_client import connect

MEDIA_BYTES = 4 * 1024 * 1024  # the size the media records claim (the dm never reads bytes)


@dataclass(frozen=True)
class Pair:
    """A 1:1 conversation: its sender, its recipient, and a private video the sender owns."""

    cid: str
    sender: str
    sender_token: str
    recipient: str
    recipient_token: str
    recipient_device: str
    media_id: str
    recipient_key: DeviceKey | None = None  # sealed conversations: the recipient's device key

    def spec(self) -> dict[str, str]:
        """What the push load generator needs (tokens and ids only)."""
        return {
            "cid": self.cid,
            "sender_token": self.sender_token,
            "recipient_token": self.recipient_token,
            "media_id": self.media_id,
        }


async def _one_pair(base_url: str, http: Any, mode: str, suite: str | None) -> Pair:
    sender, recipient = DmClient(base_url, http=http), DmClient(base_url, http=http)
    await sender.create_user(age="adult", region="GB")
    await recipient.create_user(age="adult", region="GB")
    key = None
    if suite is not None:
        key = DeviceKey.generate(suite)
        recipient.use_device_key(key)
        await recipient.publish_key()
    conv = await sender.create_conversation([recipient.uid], mode=mode)
    assert sender.session_token and recipient.session_token and recipient.device_id
    return Pair(
        conv["id"],
        sender.uid,
        sender.session_token,
        recipient.uid,
        recipient.session_token,
        recipient.device_id,
        new_id("m"),
        key,
    )


async def make_pairs(
    base_url: str, count: int, *, mode: str = "plain", suite: str | None = None
) -> list[Pair]:
    """Users and conversations through the dm's own API (dev issuer), as clients would."""
    import aiohttp

    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as http:

        async def one() -> Pair:
            async with limit:
                return await _one_pair(base_url, http, mode, suite)

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def register_sender_media(redis_url: str, pairs: Sequence[Pair]) -> None:
    """Each sender's video in the dm's media registry, as the content pipeline would put it."""
    redis = connect(redis_url)
    try:
        registry = MediaRegistry(redis)
        for p in pairs:
            await registry.put(
                Media(
                    id=p.media_id,
                    owner=p.sender,
                    visibility="private",
                    allow_reshare=False,
                    audience=AudienceRules(),
                    status="active",
                    content_type="video/mp4",
                    size=MEDIA_BYTES,
                    sha256="0" * 64,
                    origin="bench/clip.mp4",
                    created_at=int(time.time()),
                )
            )
    finally:
        await redis.aclose()


def message_body(kind: str, media_id: str, text: str) -> str:
    """A plain send's JSON body: a video share with a caption, or text only."""
    doc: dict[str, str] = {"text": text}
    if kind == "media":
        doc["media_id"] = media_id
    return json.dumps(doc, separators=(",", ":"))


def send_path(cid: str) -> str:
    return f"/v1/conversations/{cid}/messages"
