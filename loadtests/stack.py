"""A whole local stack in one process: embedded Redis, keys, the cdn_auth edge.

Used by the demo and the benchmarks; tests build the same pieces from fixtures.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cdn_auth.app import build_app
from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.redis_client import connect
from cdn_auth.redis_process import RedisProcess, free_port
from cdn_auth.settings import EdgeSettings
from cdn_auth.token_format import Alg
from dm.identity import JWKS_FILE, DevIssuer


@dataclass
class Stack:
    root: Path
    redis_url: str
    edge_url: str
    issuer: DevIssuer
    ring: KeyRing
    settings: EdgeSettings
    redis: Any


def edge_settings(root: Path, redis_url: str, ring_dir: Path, session_dir: Path,
                  **overrides: Any) -> EdgeSettings:
    return EdgeSettings.load(
        redis_url=redis_url, origin_dir=root / "origin",
        pointer_jwks=ring_dir / VERIFY_JWKS_FILE, keyring_dir=ring_dir,
        session_jwks=str(session_dir / JWKS_FILE), **overrides)


@contextlib.asynccontextmanager
async def local_stack(root: Path, *, alg: Alg = Alg.ED25519, redis_url: str | None = None,
                      **overrides: Any) -> AsyncIterator[Stack]:
    """Start Redis (unless ``redis_url`` is given) and one edge on a free port."""
    root.mkdir(parents=True, exist_ok=True)
    redis_proc = None
    if redis_url is None:
        redis_proc = RedisProcess(root / "redis").start()
        redis_url = redis_proc.url
    issuer = DevIssuer.load_or_create(root / "keys" / "session")
    ring = KeyRing.load_or_create(root / "keys" / f"pointer-{alg.name.lower()}", alg)
    settings = edge_settings(root, redis_url, ring.path, root / "keys" / "session", **overrides)
    port = free_port()
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    redis = connect(redis_url)
    try:
        yield Stack(root, redis_url, f"http://127.0.0.1:{port}", issuer, ring, settings, redis)
    finally:
        await redis.aclose()
        await runner.cleanup()
        if redis_proc is not None:
            redis_proc.stop()
