"""Sealed-mode users: a client with a published device key, and the edge URL for it."""

from __future__ import annotations

from typing import Any

from dm import envelope
from dm.client import DmClient

from .services import DmStack


async def sealed_user(dm: DmStack, suite: str = "x25519", **kw: Any) -> DmClient:
    c = await dm.user(**kw)
    c.use_device_key(envelope.DeviceKey.generate(suite))
    await c.publish_key()
    return c


def edge_url(dm: DmStack) -> str:
    return str(dm.edge.client.make_url("")).rstrip("/")
