"""Fixtures: real redis-server processes on free ports, keys, and a running edge.

No fakes: every test that touches Redis talks to a redis-server this file
started (never the machine's own 127.0.0.1:6379).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cdn_auth.app import build_app
from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.media import AudienceRules, Media
from cdn_auth.registry import MediaRegistry
from cdn_auth.settings import EdgeSettings
from cdn_auth.token_format import Alg
from cdn_auth.web_state import STATE, EdgeState
from dm.client import DmClient
from dm.identity import JWKS_FILE, DevIssuer
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisClusterProcess, RedisProcess


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
            pytest.skip("needs a single server's port (a TCP proxy cannot follow cluster "
                        "redirects)")
        return self.single.port


@pytest.fixture(scope="session", params=["single", "cluster"])
def redis_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBackend]:
    """Every test that touches Redis runs twice: on one redis-server and on a real Redis
    Cluster (three masters joined by ``redis-cli --cluster create``); flushed per test."""
    if request.param == "single":
        proc = RedisProcess(tmp_path_factory.mktemp("redis"), appendonly=False).start()
        yield RedisBackend("single", proc.url, proc)
        proc.stop()
    else:
        cluster = RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster")).start()
        yield RedisBackend("cluster", cluster.url)
        cluster.stop()


@pytest.fixture
async def redis(redis_server: RedisBackend) -> AsyncIterator[Any]:
    client = connect(redis_server.url, cluster=redis_server.cluster)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer.load_or_create(tmp_path / "session-keys")


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.create(tmp_path / "ring", Alg.ED25519)


def make_settings(tmp_path: Path, redis_url: str, ring: KeyRing, **overrides: Any) -> EdgeSettings:
    base: dict[str, Any] = {
        "redis_url": redis_url, "origin_dir": tmp_path / "origin",
        "pointer_jwks": ring.path / VERIFY_JWKS_FILE, "keyring_dir": ring.path,
        "session_jwks": str(tmp_path / "session-keys" / JWKS_FILE)}
    return EdgeSettings.load(**{**base, **overrides})


@dataclass
class Edge:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    tmp: Path

    @property
    def state(self) -> EdgeState:
        return self.app[STATE]

    async def add_media(self, owner: str = "alice", *, size: int = 100_000,
                        visibility: str = "private", allow_reshare: bool = False,
                        min_age: int = 0, allowed: frozenset[str] = frozenset(),
                        blocked: frozenset[str] = frozenset(),
                        content_type: str = "video/mp4") -> tuple[Media, bytes]:
        """Put bytes in the origin directory and a record in the registry (as a pipeline does)."""
        data = bytes((i * 7 + 3) % 251 for i in range(size))
        media_id = f"m_{hashlib.sha256(os.urandom(8)).hexdigest()[:20]}"
        rel = f"videos/{media_id}.mp4"
        path = self.state.origin.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        media = Media(id=media_id, owner=owner, visibility=visibility,
                      allow_reshare=allow_reshare,
                      audience=AudienceRules(min_age, allowed, blocked), status="active",
                      content_type=content_type, size=size,
                      sha256=hashlib.sha256(data).hexdigest(), origin=rel,
                      created_at=int(time.time()))
        await MediaRegistry(self.state.redis).put(media)
        return media, data


EdgeFactory = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def make_edge(tmp_path: Path, redis_server: RedisBackend, redis: Any, issuer: DevIssuer,
                    ring: KeyRing) -> AsyncIterator[EdgeFactory]:
    """Start edges (real aiohttp servers on free ports) with settings overrides."""
    started: list[TestClient[web.Request, web.Application]] = []

    async def factory(redis_url: str | None = None, **overrides: Any) -> Edge:
        # A test's own redis-server (redis_url given) is a single server.
        overrides.setdefault("redis_cluster", redis_url is None and redis_server.cluster)
        settings = make_settings(tmp_path, redis_url or redis_server.url, ring, **overrides)
        app = build_app(settings)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        started.append(client)
        await wait_until(lambda: app[STATE].authorizer.tailer.loaded.is_set(), 30)
        return Edge(client, app, tmp_path)

    yield factory
    for c in started:
        await c.close()


@pytest.fixture
async def edge(make_edge: EdgeFactory) -> Edge:
    return await make_edge()


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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the dm service -------------------------------------------------------------------------


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


@pytest.fixture
async def make_dm(make_edge: EdgeFactory, tmp_path: Path, redis_server: RedisBackend,
                  ring: KeyRing) -> AsyncIterator[DmFactory]:
    from dm.app import build_app as build_dm
    from dm.settings import DmSettings

    servers: list[TestServer] = []
    stacks: list[DmStack] = []

    async def factory(redis_url: str | None = None, edge: Edge | None = None,
                      **overrides: Any) -> DmStack:
        url = redis_url or redis_server.url
        edge = edge or await make_edge(redis_url=redis_url)
        base: dict[str, Any] = {
            "redis_url": url, "redis_cluster": redis_url is None and redis_server.cluster,
            "keyring_dir": ring.path, "issuer_dir": tmp_path / "session-keys",
            "franking_key_path": tmp_path / "franking.key",
            "edge_base_url": str(edge.client.make_url("")).rstrip("/"),
            # Off by default (production-safe); tests enable both switches explicitly.
            "dev_issuer": True, "dev_issuer_roles": True}
        app = build_dm(DmSettings.load(**{**base, **overrides}))
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        await wait_until(lambda: app[STATE_DM].hub.tailer.loaded.is_set(), 30)
        stack = DmStack(edge, str(server.make_url("")).rstrip("/"), app, [])
        stacks.append(stack)
        return stack

    yield factory
    for st in stacks:
        for c in st.clients:
            await c.close()
    for s in servers:
        await s.close()


@pytest.fixture
async def dm(make_dm: DmFactory) -> DmStack:
    return await make_dm()


from dm.web_state import STATE as STATE_DM  # noqa: E402
