"""A dead worker is replaced and the others keep serving (issue 15).

``dm serve --workers 2`` under a steady stream of sends: ``kill -9`` of one
worker used to stop the parent and the other worker (every following request
failed until something outside restarted the unit).  Now the supervisor
respawns it; no acknowledged send is lost and the surviving worker's
WebSockets stay open and keep receiving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cdn_auth.keyring import KeyRing
from dm.identity import DevIssuer
from service_kernel.redis_process import RedisProcess, free_port

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            out |= {int(c) for c in (task / "children").read_text().split()}
    return out


@pytest.fixture
def dm_workers(tmp_path: Path, ring: KeyRing, issuer: DevIssuer) -> Iterator[tuple[str, int]]:
    redis = RedisProcess(tmp_path / "r", appendonly=False).start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DM_")},
        "DM_DEV_ISSUER": "true",
        "DM_ISSUER_DIR": str(tmp_path / "session-keys"),
        "DM_FRANKING_KEY_PATH": str(tmp_path / "franking.key"),
        "DM_LOG_LEVEL": "WARNING",
        "DM_RATE_LIMITS": json.dumps({"signup": [1000, 1000], "send": [1000, 1000]}),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dm",
            "serve",
            "--port",
            str(port),
            "--redis-url",
            redis.url,
            "--keyring-dir",
            str(ring.path),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)
        redis.stop()


async def _pids(url: str, want: int, timeout_s: float = 30) -> set[int]:
    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(pids) < want and time.monotonic() < deadline:
        try:
            async with aiohttp.ClientSession() as one, one.get(f"{url}/healthz") as r:
                pids.add((await r.json())["pid"])
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    return pids


async def test_dead_worker_respawned_others_keep_serving(dm_workers: tuple[str, int]) -> None:
    url, parent = dm_workers
    assert len(await _pids(url, 2)) == 2
    async with aiohttp.ClientSession() as http:

        async def post(
            path: str, body: object, token: str | None = None, headers: dict[str, str] | None = None
        ) -> dict[str, object]:
            h = dict(headers or {})
            if token:
                h["Authorization"] = f"Bearer {token}"
            async with http.post(url + path, json=body, headers=h) as r:
                assert r.status in (200, 201), await r.text()
                return dict(await r.json())

        alice = await post("/v1/users", {})
        readers = [await post("/v1/users", {}) for _ in range(8)]
        cid = str(
            (
                await post(
                    "/v1/conversations",
                    {"members": [r["user_id"] for r in readers]},
                    str(alice["session_token"]),
                )
            )["id"]
        )
        # One socket per reader, each on a fresh connection: the kernel spreads them.
        sockets = []
        for r in readers:
            one = aiohttp.ClientSession()
            ws = await one.ws_connect(
                f"{url}/v1/stream", headers={"Authorization": f"Bearer {r['session_token']}"}
            )
            sockets.append((one, ws))
        await asyncio.sleep(0.5)

        acknowledged: list[str] = []
        stop = asyncio.Event()

        async def sender() -> None:
            i = 0
            while not stop.is_set():
                key = f"k{i}"
                for _ in range(50):  # retry the same key until acknowledged
                    try:
                        async with (
                            aiohttp.ClientSession() as one,
                            one.post(
                                f"{url}/v1/conversations/{cid}/messages",
                                json={"text": key},
                                headers={
                                    "Authorization": f"Bearer {alice['session_token']}",
                                    "Idempotency-Key": key,
                                },
                            ) as resp,
                        ):
                            if resp.status in (200, 201):
                                acknowledged.append(str((await resp.json())["id"]))
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
                i += 1
                await asyncio.sleep(0.02)

        task = asyncio.create_task(sender())
        await asyncio.sleep(1.0)
        before = _children(parent)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        # Replaced: the parent has two workers again, one of them new.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _children(parent)
            if len(now) == 2 and victim not in now:
                break
            await asyncio.sleep(0.1)
        assert len(_children(parent)) == 2 and victim not in _children(parent)
        assert len(await _pids(url, 2)) == 2
        await asyncio.sleep(1.0)
        stop.set()
        await task

        # Each socket either was on the killed worker (it ended) or stayed open and
        # received every message up to the last acknowledged one; at least one stayed.
        last, survivors = acknowledged[-1], 0
        for _, ws in sockets:
            seen, ended = None, False
            while seen != last and not ended:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    ended = True
                elif (event := json.loads(msg.data))["type"] == "message":
                    seen = event["message"]["id"]
            survivors += seen == last
        assert survivors >= 1, "every socket was on the killed worker"
        for one, ws in sockets:
            await ws.close()
            await one.close()

        # No acknowledged send is lost.
        async with http.get(
            f"{url}/v1/conversations/{cid}/messages",
            params={"limit": "200"},
            headers={"Authorization": f"Bearer {alice['session_token']}"},
        ) as page:
            stored = {m["id"] for m in (await page.json())["messages"]}
        assert acknowledged and set(acknowledged) <= stored
