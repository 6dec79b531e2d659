"""``serve --workers N``: N processes share one port, and each applies revocations itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cdn_auth import pointer, revocation
from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.revocation import RevocationLog
from dm.identity import JWKS_FILE, DevIssuer
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisProcess, free_port


@pytest.fixture
def workers(tmp_path: Path, ring: KeyRing, issuer: DevIssuer) -> Iterator[tuple[str, str]]:
    redis = RedisProcess(tmp_path / "w-redis", appendonly=False).start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CDN_AUTH_")},
        "CDN_AUTH_POINTER_JWKS": str(ring.path / VERIFY_JWKS_FILE),
        "CDN_AUTH_SESSION_JWKS": str(tmp_path / "session-keys" / JWKS_FILE),
        "CDN_AUTH_ORIGIN_DIR": str(tmp_path / "origin"),
        "CDN_AUTH_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdn_auth",
            "serve",
            "--port",
            str(port),
            "--redis-url",
            redis.url,
            "--workers",
            "3",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", redis.url
    finally:
        proc.terminate()
        proc.wait(20)
        redis.stop()


async def test_workers_share_the_port_and_all_apply_revocations(
    workers: tuple[str, str], ring: KeyRing, issuer: DevIssuer, tmp_path: Path
) -> None:
    url, redis_url = workers
    pids: set[int] = set()
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while len(pids) < 3 and time.monotonic() < deadline:
            try:
                # a fresh connection each time, so the kernel may pick another process
                async with aiohttp.ClientSession() as one, one.get(f"{url}/healthz") as r:
                    pids.add((await r.json())["pid"])
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        assert len(pids) == 3
        redis = connect(redis_url)
        (tmp_path / "origin" / "ingest" / "w").mkdir(parents=True)
        (tmp_path / "origin" / "ingest" / "w" / "v.mp4").write_bytes(b"x" * 1000)
        token = issuer.mint("svc", roles=["publisher"])
        async with http.post(
            f"{url}/v1/media",
            json={"origin_path": "w/v.mp4", "owner": "alice"},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            media_id = (await r.json())["id"]
        ptr = pointer.mint(
            ring.signer(),
            media_id=media_id,
            sub="bob",
            conversation_id="c",
            message_id="m",
            now=time.time(),
        )
        bob = {"Authorization": f"Bearer {issuer.mint('bob')}"}

        async def statuses(n: int) -> set[int]:
            out = set()
            for _ in range(n):
                async with (
                    aiohttp.ClientSession() as one,
                    one.get(f"{url}/m/{media_id}", params={"pointer": ptr}, headers=bob) as r,
                ):
                    out.add(r.status)
            return out

        assert await statuses(12) == {200}
        await RevocationLog(redis).publish(revocation.unsent("c", "m"))
        await asyncio.sleep(1.0)  # the one-second bound of the issue, for every process
        assert await statuses(30) == {410}
        await redis.aclose()
