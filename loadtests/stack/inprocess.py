"""A whole local stack in one process: embedded Redis, keys, the cdn_auth edge and dm.

Only the demo uses it (``python -m loadtests demo``, and tests/test_demo.py, which awaits
the demo inside its own event loop): both services run as aiohttp apps on the caller's
loop, so the demo starts in well under a second with no child processes to supervise.
Everything that measures (the load-test runner, the benchmarks) or serves a browser
(``python -m loadtests web``) starts the services as processes instead
(:mod:`.processes`, :mod:`.servers`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cdn_auth.app import build_app as build_edge
from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.settings import EdgeSettings
from cdn_auth.token_format import Alg
from dm.app import build_app as build_dm
from dm.identity import JWKS_FILE, DevIssuer
from dm.settings import DmSettings
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisProcess, free_port


@dataclass
class Stack:
    root: Path
    redis_url: str
    edge_url: str
    dm_url: str
    issuer: DevIssuer
    ring: KeyRing
    settings: EdgeSettings
    redis: Any


def edge_settings(
    root: Path, redis_url: str, ring_dir: Path, session_dir: Path, **overrides: Any
) -> EdgeSettings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "origin_dir": root / "origin",
        "pointer_jwks": ring_dir / VERIFY_JWKS_FILE,
        "keyring_dir": ring_dir,
        "session_jwks": str(session_dir / JWKS_FILE),
    }
    return EdgeSettings.load(**{**base, **overrides})


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def local_stack(
    root: Path, *, alg: Alg = Alg.ED25519, redis_url: str | None = None, **overrides: Any
) -> AsyncIterator[Stack]:
    """Start Redis (unless ``redis_url`` is given), one edge and one dm on free ports."""
    root.mkdir(parents=True, exist_ok=True)
    redis_proc = None
    if redis_url is None:
        redis_proc = RedisProcess(root / "redis").start()
        redis_url = redis_proc.url
    session_dir = root / "keys" / "session"
    issuer = DevIssuer.load_or_create(session_dir)
    ring = KeyRing.load_or_create(root / "keys" / f"pointer-{alg.name.lower()}", alg)
    settings = edge_settings(root, redis_url, ring.path, session_dir, **overrides)
    runners: list[web.AppRunner] = []
    redis = connect(redis_url)
    try:
        edge_runner, edge_url = await _serve(build_edge(settings))
        runners.append(edge_runner)
        dm_runner, dm_url = await _serve(
            build_dm(
                DmSettings.load(
                    redis_url=redis_url,
                    edge_base_url=edge_url,
                    keyring_dir=ring.path,
                    issuer_dir=session_dir,
                    franking_key_path=root / "keys" / "franking.key",
                    dev_issuer=True,
                    dev_issuer_roles=True,
                )
            )
        )
        runners.append(dm_runner)
        yield Stack(root, redis_url, edge_url, dm_url, issuer, ring, settings, redis)
    finally:
        await redis.aclose()
        for r in reversed(runners):
            await r.cleanup()
        if redis_proc is not None:
            redis_proc.stop()
