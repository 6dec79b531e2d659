"""The main job on the embedded default: share a private video in a DM and watch the edge decide.

Starts a private Redis, the cdn_auth edge and the dm service, then with the
Python SDK: Alice registers a private video and sends it to Bob; Bob gets
it pushed over the WebSocket and plays it with Range requests as a player
would; Carol, holding Bob's link, is refused; a minor is refused
adult-only media; Alice unsends and Bob is refused within moments.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import time
from pathlib import Path

import aiohttp

from dm.client import DmClient, DmClientError
from loadtests.stack.clip import clip_bytes
from loadtests.stack.inprocess import local_stack

VIDEO_BYTES = 4 * 1024 * 1024
SEGMENT = 1024 * 1024


def _video() -> bytes:
    return clip_bytes(VIDEO_BYTES, b"demo")


def say(step: str, detail: str) -> None:
    print(f"  {step:<40} {detail}", flush=True)


async def _refusal(client: DmClient, url: str) -> str:
    try:
        await client.fetch_media(url, range_=(0, 1023))
    except DmClientError as err:
        return f"{err.status} {err.code}"
    return "200 (allowed)"


async def demo(root: Path) -> int:
    print(f"Starting Redis, the edge and dm under {root} ...", flush=True)
    async with local_stack(root) as st, aiohttp.ClientSession() as http:
        alice, bob, carol, teen = (
            DmClient(st.dm_url, http=http, edge_url=st.edge_url) for _ in range(4)
        )
        for c, age in ((alice, "adult"), (bob, "adult"), (carol, "adult"), (teen, "minor")):
            await c.create_user(age=age, region="GB")
        say("Users created (dev issuer)", f"alice={alice.uid} bob={bob.uid}")
        data = _video()
        media = await alice.upload_media(
            data, content_type="video/mp4", visibility="private", min_age=16, filename="clip.mp4"
        )
        say(
            "Alice registers a private video",
            f"{media['id']} ({media['size']} bytes, min_age {media['audience']['min_age']})",
        )
        conv = await alice.create_conversation([bob.uid])
        events = bob.stream()
        pushed = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        sent = await alice.send(conv["id"], media_id=media["id"], text="watch this")
        async with asyncio.timeout(5):
            event = await pushed
        say(
            "Alice sends it to Bob; Bob's socket gets it",
            f"message {sent['id']} pushed in {(time.perf_counter() - t0) * 1000:.1f} ms",
        )
        bob_media = event["message"]["media"]
        assert bob_media is not None, "the pushed message carries no media"
        url = bob_media["url"]
        say(
            "Bob's pointer (minted for Bob only)",
            f"{len(bob_media['pointer'])} chars, expires in "
            f"{bob_media['expires_at'] - int(time.time())} s",
        )

        head = await bob.fetch_media(url, method="HEAD")
        say(
            "Bob: HEAD",
            f"{head.status} {head.headers['Content-Type']} "
            f"len={head.headers['Content-Length']} etag={head.headers['ETag']}",
        )
        got, t0 = bytearray(), time.perf_counter()
        for start in range(0, VIDEO_BYTES, SEGMENT):
            r = await bob.fetch_media(url, range_=(start, start + SEGMENT - 1))
            got += r.body
            say(
                f"Bob: GET Range bytes={start}-{start + SEGMENT - 1}",
                f"{r.status} {r.headers['Content-Range']}",
            )
        ok = hashlib.sha256(got).hexdigest() == media["sha256"]
        say(
            "Bob streamed the whole video",
            f"{len(got)} bytes in "
            f"{(time.perf_counter() - t0) * 1000:.1f} ms, sha256 {'matches' if ok else 'MISMATCH'}",
        )
        say("Carol uses Bob's link", await _refusal(carol, url))

        teen_conv = await alice.create_conversation([teen.uid])
        await alice.send(teen_conv["id"], media_id=media["id"])
        teen_media = (await teen.read(teen_conv["id"]))["messages"][0]["media"]
        assert teen_media is not None, "the message carries no media"
        teen_url = teen_media["url"]
        say("A minor gets it (min_age 16)", await _refusal(teen, teen_url))

        await alice.unsend(conv["id"], sent["id"])
        t0 = time.perf_counter()
        deadline = t0 + 5.0
        # Polling the edge is the point: it measures how soon the unsend takes effect there.
        while (outcome := await _refusal(bob, url)).startswith("200") and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        say(
            "Alice unsends; Bob fetches again",
            f"{outcome} after {(time.perf_counter() - t0) * 1000:.1f} ms",
        )
        await events.aclose()
        async with http.get(f"{st.edge_url}/metrics") as resp:
            lines = [
                ln
                for ln in (await resp.text()).splitlines()
                if ln.startswith("cdn_auth_decisions_total")
            ]
        print("Edge decisions (from /metrics):")
        for ln in lines:
            print("   ", ln)
        return 0 if ok and outcome.startswith("410") else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests demo", description=__doc__)
    p.add_argument("--dir", default="var/demo", help="working directory (recreated)")
    args = p.parse_args(argv)
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    return asyncio.run(demo(root))
