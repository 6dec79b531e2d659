"""Redis failures around sends: 503 with Retry-After, retries never duplicate, nothing acked is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dm.client import DmClientError
from service_kernel.redis_process import RedisProcess

from ..support.services import DmFactory, wait_until


async def test_redis_restart_mid_send_retry_gives_exactly_one_message(
    make_dm: DmFactory, tmp_path: Path
) -> None:
    server = RedisProcess(tmp_path / "dm-redis").start()
    restarted = RedisProcess(server.data_dir, port=server.port)
    again = RedisProcess(server.data_dir, port=server.port)
    try:
        dm = await make_dm(redis_url=server.url)
        alice, bob = await dm.user(), await dm.user()
        conv = await alice.create_conversation([bob.uid])
        await alice.send(conv["id"], text="before")
        server.stop()
        with pytest.raises(DmClientError) as info:
            await alice.send(conv["id"], text="during", idempotency_key="retry-1", retries=0)
        assert info.value.status == 503 and info.value.retry_after_s is not None
        restarted.start()

        async def accepted() -> bool:
            try:
                await alice.send(conv["id"], text="during", idempotency_key="retry-1", retries=0)
            except DmClientError as err:
                assert err.status == 503  # still reconnecting: only ever 503, never 500
                return False
            return True

        await wait_until(accepted, timeout_s=10)
        # The acknowledgement may have been lost in flight: the client retries once more.
        replay = await alice.send(conv["id"], text="during", idempotency_key="retry-1")
        texts = [m["text"] for m in (await bob.read(conv["id"]))["messages"]]
        assert texts == ["before", "during"]
        assert replay["text"] == "during"
        # Everything acknowledged survives another restart (append-only file).
        restarted.stop()
        again.start()

        async def readable() -> bool:
            try:
                page = await bob.read(conv["id"])
            except DmClientError:
                return False
            return [m["text"] for m in page["messages"]] == ["before", "during"]

        await wait_until(readable, timeout_s=10)
    finally:
        for p in (server, restarted, again):
            p.stop()


async def test_a_server_that_lost_its_scripts_still_pushes_every_send(dm: Any, redis: Any) -> None:
    """The announce queues its publish as a bare EVALSHA in a pipeline (no SCRIPT EXISTS
    round trip first): after a SCRIPT FLUSH the NOSCRIPT reply must lead to the script run
    again, not to a send whose push never went out."""
    alice, bob = await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    events = bob.stream(reconnect=False)
    got: list[dict[str, Any]] = []

    async def collect() -> None:
        async for ev in events:
            if ev["type"] == "message":
                got.append(dict(ev["message"]))

    task = asyncio.ensure_future(collect())
    try:
        await asyncio.sleep(0.2)  # let the socket subscribe
        sent = []
        for text in ("one", "two"):
            await redis.script_flush()
            sent.append(await alice.send(conv["id"], media_id=media.id, text=text))
        await wait_until(lambda: len(got) >= 2, timeout_s=5)
        await asyncio.sleep(0.2)  # nothing more may follow
        assert [m["id"] for m in got] == [s["id"] for s in sent]
        assert all(m["media"]["url"] for m in got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await events.aclose()
