"""The per-user WebSocket cap holds across dm processes, and a killed process's sockets
stop counting once their leases lapse (dm.stream_leases).

Two real ``dm serve`` processes on one redis-server: a user at the cap on one is refused
by the other, still after several lease periods (the live process renews its leases), and
admitted again once the first is killed with SIGKILL (no close ran) and its leases lapse.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cdn_auth.keyring import KeyRing
from service_kernel.redis_process import RedisProcess, free_port

from ..support.services import bearer, wait_until

pytestmark = pytest.mark.slow

LEASE_S = 2.0


@pytest.fixture
def two_dms(tmp_path: Path, ring: KeyRing) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    redis = RedisProcess(tmp_path / "r", appendonly=False).start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DM_")},
        "DM_DEV_ISSUER": "true",
        "DM_ISSUER_DIR": str(tmp_path / "session-keys"),
        "DM_FRANKING_KEY_PATH": str(tmp_path / "franking.key"),
        "DM_LOG_LEVEL": "WARNING",
        "DM_RATE_LIMITS": json.dumps({"signup": [1000, 1000], "connect": [1000, 1000]}),
        "DM_WS_MAX_PER_USER": "2",
        "DM_WS_LEASE_S": str(LEASE_S),
    }
    procs = []
    for _ in range(2):
        port = free_port()
        argv = [sys.executable, "-m", "dm", "serve", "--port", str(port)]
        argv += ["--redis-url", redis.url, "--keyring-dir", str(ring.path)]
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        procs.append((f"http://127.0.0.1:{port}", proc))
    try:
        yield procs
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        redis.stop()


async def _up(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(f"{url}/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def _refused(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        ws = await http.ws_connect(f"{url}/v1/stream", headers=headers)
        await ws.close()
    return err.value.status


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


async def test_cap_across_processes_and_killed_process_leases_lapse(
    two_dms: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    (url1, proc1), (url2, _) = two_dms
    async with aiohttp.ClientSession() as http:
        for url in (url1, url2):
            await wait_until(lambda u=url: _up(http, u), 60, 0.2)  # type: ignore[misc]
        async with http.post(f"{url1}/v1/users", json={}) as r:
            assert r.status == 201, await r.text()
            headers = bearer(str((await r.json())["session_token"]))

        readers: list[asyncio.Task[None]] = []

        async def connect(url: str) -> aiohttp.ClientWebSocketResponse:
            ws = await http.ws_connect(f"{url}/v1/stream", headers=headers)
            # Read, so the client answers the server's pings: an unanswered heartbeat would
            # close the socket (and give its lease back) after 20 s.
            readers.append(asyncio.create_task(_drain(ws)))
            return ws

        async def admitted(url: str) -> aiohttp.ClientWebSocketResponse | None:
            try:
                return await connect(url)
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 429
                return None

        on1 = [await connect(url1) for _ in range(2)]
        assert await _refused(http, url2, headers) == 429  # the cap spans processes
        await on1.pop().close()  # a closed socket's lease is given back
        on2: list[aiohttp.ClientWebSocketResponse] = []

        async def one_more_on_2() -> bool:
            ws = await admitted(url2)
            if ws is not None:
                on2.append(ws)
            return ws is not None

        await wait_until(one_more_on_2, 30, 0.1)
        # One socket on each process: at the cap on both, still after three lease periods
        # (each process renews its own lease; neither lapses while its socket is open).
        await asyncio.sleep(3 * LEASE_S)
        assert await _refused(http, url1, headers) == 429
        assert await _refused(http, url2, headers) == 429

        os.killpg(proc1.pid, signal.SIGKILL)  # no close handler runs: nothing given back
        proc1.wait(30)
        await on1[0].close()
        # The dead process's lease lapses, though the user's key lives on (process 2 keeps
        # renewing its own lease in it).
        await wait_until(one_more_on_2, 60, 0.2)
        assert await _refused(http, url2, headers) == 429
        for ws in on2:
            await ws.close()
        await asyncio.gather(*readers)
