"""The running services a test talks to: where Redis is, an edge, a dm stack, and waiting.

The fixtures that start them are in ``tests/conftest.py``; these are the types and helpers
the tests import.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.media import AudienceRules, Media
from cdn_auth.registry import MediaRegistry
from cdn_auth.settings import EdgeSettings
from cdn_auth.web_state import STATE, EdgeState
from dm.client import DmClient
from dm.identity import JWKS_FILE
from service_kernel.redis_process import RedisProcess


@dataclass
class RedisBackend:
    """Where a test's Redis state lives: one server, or a real three-master cluster."""

    kind: str
    url: str
    single: RedisProcess | None = None

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"

    @property
    def port(self) -> int:
        if self.single is None:
            pytest.skip("needs a single server's port (a TCP proxy cannot follow cluster redirects)")
        return self.single.port


def make_settings(tmp_path: Path, redis_url: str, ring: KeyRing, **overrides: Any) -> EdgeSettings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "origin_dir": tmp_path / "origin",
        "pointer_jwks": ring.path / VERIFY_JWKS_FILE,
        "keyring_dir": ring.path,
        "session_jwks": str(tmp_path / "session-keys" / JWKS_FILE),
    }
    return EdgeSettings.load(**{**base, **overrides})


@dataclass
class Edge:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    tmp: Path

    @property
    def state(self) -> EdgeState:
        return self.app[STATE]

    async def add_media(
        self,
        owner: str = "alice",
        *,
        size: int = 100_000,
        visibility: str = "private",
        allow_reshare: bool = False,
        min_age: int = 0,
        allowed: frozenset[str] = frozenset(),
        blocked: frozenset[str] = frozenset(),
        content_type: str = "video/mp4",
    ) -> tuple[Media, bytes]:
        """Put bytes in the origin directory and a record in the registry (as a pipeline does)."""
        # (i * 7 + 3) % 251 repeats every 251 bytes: built by repetition, not a byte at a time
        # (16 MB byte by byte blocked this loop for ~4 s, past the edge's tail timeout).
        data = (_PATTERN * (size // len(_PATTERN) + 1))[:size]
        media_id = f"m_{hashlib.sha256(os.urandom(8)).hexdigest()[:20]}"
        rel = f"videos/{media_id}.mp4"
        path = self.state.origin.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        media = Media(
            id=media_id,
            owner=owner,
            visibility=visibility,
            allow_reshare=allow_reshare,
            audience=AudienceRules(min_age, allowed, blocked),
            status="active",
            content_type=content_type,
            size=size,
            sha256=hashlib.sha256(data).hexdigest(),
            origin=rel,
            created_at=int(time.time()),
        )
        await MediaRegistry(self.state.redis).put(media)
        return media, data


EdgeFactory = Callable[..., Awaitable[Edge]]


async def wait_until(cond: Callable[[], Any], timeout_s: float, interval_s: float = 0.01) -> None:
    """Poll ``cond`` until true; raise AssertionError if it is not true by the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


_PATTERN = bytes((i * 7 + 3) % 251 for i in range(251))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class DmStack:
    edge: Edge
    dm_url: str
    app: web.Application
    clients: list[DmClient]

    def client(self) -> DmClient:
        c = DmClient(self.dm_url)
        self.clients.append(c)
        return c

    async def user(self, **kw: Any) -> DmClient:
        c = self.client()
        await c.__aenter__()
        await c.create_user(**kw)
        return c


DmFactory = Callable[..., Awaitable[DmStack]]
