"""Fixtures: real redis-server processes on free ports, keys, and a running edge.

No fakes: every test that touches Redis talks to a redis-server this file
started (never the machine's own 127.0.0.1:6379).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cdn_auth.app import build_app
from cdn_auth.keyring import KeyRing
from cdn_auth.token_format import Alg
from cdn_auth.web_state import STATE
from dm.identity import DevIssuer
from service_kernel.auto_pipeline import AutoPipelinedRedis
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisClusterProcess, RedisProcess

from .support.services import (
    DmFactory,
    DmStack,
    Edge,
    EdgeFactory,
    RedisBackend,
    make_settings,
    wait_until,
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Collect what the last test left, then freeze the heap.

    By the suite's second half this process tracks over 3 million objects, and a full
    collection then stopped the event loop for up to 4.6 s in the middle of a test (measured
    with a gc callback): every Redis call and stream tail in flight timed out, which made
    three CI runs fail on random Cluster tests.  The collection here scans only what is not
    frozen (one test's objects: milliseconds), and the freeze keeps every later collection
    to the running test's own objects.  The services freeze their startup heap the same way
    (``service_kernel.serving``)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session", params=["single", "cluster"])
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisBackend]:
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
async def single_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A private single redis-server for this test alone (tests of the Redis client
    itself: restarts, script flushes, killed connections)."""
    proc = RedisProcess(tmp_path / "single-redis").start()
    yield proc
    proc.stop()


@pytest.fixture
async def batching_client(single_redis: RedisProcess) -> AsyncIterator[AutoPipelinedRedis]:
    """The services' client for :func:`single_redis`: an auto-pipelining one."""
    c = connect(single_redis.url)
    assert isinstance(c, AutoPipelinedRedis)
    yield c
    await c.aclose()


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


@pytest.fixture
async def make_edge(
    tmp_path: Path, redis_server: RedisBackend, redis: Any, issuer: DevIssuer, ring: KeyRing
) -> AsyncIterator[EdgeFactory]:
    """Start edges (real aiohttp servers on free ports) with settings overrides, and their
    own ``clock`` if given (a host whose clock is off)."""
    started: list[TestClient[web.Request, web.Application]] = []

    async def factory(
        redis_url: str | None = None, *, clock: Callable[[], float] | None = None, **overrides: Any
    ) -> Edge:
        # A test's own redis-server (redis_url given) is a single server.
        overrides.setdefault("redis_cluster", redis_url is None and redis_server.cluster)
        settings = make_settings(tmp_path, redis_url or redis_server.url, ring, **overrides)
        app = build_app(settings) if clock is None else build_app(settings, clock=clock)
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


@pytest.fixture
async def make_dm(
    make_edge: EdgeFactory, tmp_path: Path, redis_server: RedisBackend, ring: KeyRing
) -> AsyncIterator[DmFactory]:
    from dm.app import build_app as build_dm
    from dm.settings import DmSettings

    servers: list[TestServer] = []
    stacks: list[DmStack] = []

    async def factory(
        redis_url: str | None = None, edge: Edge | None = None, **overrides: Any
    ) -> DmStack:
        url = redis_url or redis_server.url
        edge = edge or await make_edge(redis_url=redis_url)
        base: dict[str, Any] = {
            "redis_url": url,
            "redis_cluster": redis_url is None and redis_server.cluster,
            "keyring_dir": ring.path,
            "issuer_dir": tmp_path / "session-keys",
            "franking_key_path": tmp_path / "franking.key",
            "edge_base_url": str(edge.client.make_url("")).rstrip("/"),
            # Off by default (production-safe); tests enable both switches explicitly.
            "dev_issuer": True,
            "dev_issuer_roles": True,
        }
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
