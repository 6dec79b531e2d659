"""Held WebSockets: what a socket receives after something changed under it."""

from __future__ import annotations

import aiohttp

from dm.client import DmClient, DmClientError

from .services import wait_until


async def pushes_after_a_send(
    ws: aiohttp.ClientWebSocketResponse, sender: DmClient, cid: str, text: str = "after"
) -> tuple[list[str], aiohttp.WSMessage]:
    """Send ``text`` as soon as dm accepts ``sender`` (its session may be signed by a key dm
    has yet to load), then read ``ws`` until it closes or ``text`` arrives: the text frames
    it received, and the last message (the close, when the socket was ended)."""

    async def sent() -> bool:
        try:
            await sender.send(cid, text=text)
        except DmClientError:
            return False
        return True

    await wait_until(sent, 15, 0.5)
    pushed: list[str] = []
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return pushed, msg
        pushed.append(msg.data)
        if f'"{text}"' in msg.data:
            return pushed, msg
