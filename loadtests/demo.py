"""The main job on the embedded default: share a private video by pointer and watch the edge decide.

Starts a private Redis and the cdn_auth edge, registers a private video for
Alice, mints a pointer for Bob (the library call dm uses), and then:
Bob plays it with Range requests as a player would; Carol, holding Bob's
link, is refused; Alice unsends and Bob is refused within moments.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import aiohttp

from cdn_auth import pointer, revocation
from cdn_auth.revocation import RevocationLog

from .stack import local_stack

VIDEO_BYTES = 4 * 1024 * 1024
SEGMENT = 1024 * 1024


def _video() -> bytes:
    # Deterministic stand-in for an MP4: what matters to the edge is bytes and ranges.
    out, block = bytearray(), hashlib.sha256(b"demo").digest()
    while len(out) < VIDEO_BYTES:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:VIDEO_BYTES])


def say(step: str, detail: str) -> None:
    print(f"  {step:<38} {detail}", flush=True)


async def demo(root: Path) -> int:
    print(f"Starting Redis and the edge under {root} ...", flush=True)
    async with local_stack(root) as st, aiohttp.ClientSession() as http:
        alice = st.issuer.mint("alice", age="adult", region="GB")
        bob = st.issuer.mint("bob", age="adult", region="GB")
        carol = st.issuer.mint("carol", age="adult", region="GB")
        data = _video()
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps({"content_type": "video/mp4",
                                               "visibility": "private", "min_age": 16}),
                       content_type="application/json")
        form.add_field("file", io.BytesIO(data), filename="clip.mp4", content_type="video/mp4")
        async with http.post(f"{st.edge_url}/v1/media", data=form,
                             headers={"Authorization": f"Bearer {alice}"}) as r:
            media = await r.json()
            assert r.status == 201, media
        say("Alice registers a private video", f"{media['id']} ({media['size']} bytes, "
            f"min_age {media['audience']['min_age']})")
        ptr = pointer.mint(st.ring.signer(), media_id=media["id"], sub="bob",
                           conversation_id="c_demo", message_id="msg_1", now=time.time())
        url = f"{st.edge_url}/m/{media['id']}?pointer={ptr}"
        say("Pointer minted for Bob", f"{len(ptr)} chars, kid {st.ring.signing_kid}")

        bob_h = {"Authorization": f"Bearer {bob}"}
        async with http.head(url, headers=bob_h) as r:
            say("Bob: HEAD", f"{r.status} {r.headers['Content-Type']} "
                f"len={r.headers['Content-Length']} etag={r.headers['ETag']}")
        got, t0 = bytearray(), time.perf_counter()
        for start in range(0, VIDEO_BYTES, SEGMENT):
            rng = f"bytes={start}-{start + SEGMENT - 1}"
            async with http.get(url, headers={**bob_h, "Range": rng}) as r:
                got += await r.read()
                say(f"Bob: GET Range {rng}", f"{r.status} {r.headers['Content-Range']}")
        ms = (time.perf_counter() - t0) * 1000
        ok = hashlib.sha256(got).hexdigest() == media["sha256"]
        say("Bob streamed the whole video", f"{len(got)} bytes in {ms:.1f} ms, sha256 "
            f"{'matches' if ok else 'MISMATCH'}")

        async with http.get(url, headers={"Authorization": f"Bearer {carol}",
                                          "Range": "bytes=0-1023"}) as r:
            err = (await r.json())["error"]
            say("Carol uses Bob's link", f"{r.status} {err['code']}")
        minor = st.issuer.mint("bob", age="minor", region="GB")
        async with http.get(url, headers={"Authorization": f"Bearer {minor}"}) as r:
            say("Bob's session says minor (min_age 16)",
                f"{r.status} {(await r.json())['error']['code']}")

        await RevocationLog(st.redis).publish(revocation.unsent("c_demo", "msg_1"))
        t0 = time.perf_counter()
        while True:
            async with http.get(url, headers={**bob_h, "Range": "bytes=0-0"}) as r:
                if r.status == 410:
                    code = (await r.json())["error"]["code"]
                    break
            await asyncio.sleep(0.005)
        say("Alice unsends; Bob fetches again", f"410 {code} after "
            f"{(time.perf_counter() - t0) * 1000:.1f} ms")
        async with http.get(f"{st.edge_url}/metrics") as r:
            lines = [ln for ln in (await r.text()).splitlines()
                     if ln.startswith("cdn_auth_decisions_total")]
        print("Edge decisions (from /metrics):")
        for ln in lines:
            print("   ", ln)
        return 0 if ok and r.status == 200 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests demo", description=__doc__)
    p.add_argument("--dir", default="var/demo", help="working directory (recreated)")
    args = p.parse_args(argv)
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    return asyncio.run(demo(root))
