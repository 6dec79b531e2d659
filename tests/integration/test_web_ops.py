"""service_kernel.web_ops: readiness follows the service's own staleness bound."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Gauge

from service_kernel import web_ops
from service_kernel.web_ops import OPS, OpsProbe

from ..support.services import DmFactory


async def test_readyz_fails_once_the_tail_is_older_than_the_bound(redis: Any) -> None:
    age = [1.5]
    registry = CollectorRegistry()
    app = web.Application()
    app[OPS] = OpsProbe(
        redis=redis,
        registry=registry,
        tail_age_s=lambda: age[0],
        staleness_bound_s=2.0,
        fresh_field="test_tail_fresh",
        tail_age_gauge=Gauge("test_tail_age_seconds", "tail age", registry=registry),
        redis_up_gauge=Gauge("test_redis_up", "redis up", registry=registry),
        ready_fields=lambda a: {"tail_age_s": a},
    )
    for route in web_ops.routes("Readiness"):
        app.router.add_route(route.method, route.path, route.handler)
    async with TestClient(TestServer(app)) as client:
        async with client.get("/readyz") as r:
            assert r.status == 200
            assert await r.json() == {
                "status": "ready",
                "redis": True,
                "test_tail_fresh": True,
                "tail_age_s": 1.5,
            }
        age[0] = 2.5
        async with client.get("/readyz") as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert (await r.json())["test_tail_fresh"] is False
        async with client.get("/metrics") as r:
            text = await r.text()
            assert "test_tail_age_seconds 2.5" in text and "test_redis_up 1.0" in text


async def test_dm_readiness_uses_its_configured_staleness_bound(make_dm: DmFactory) -> None:
    dm = await make_dm(staleness_bound_s=7.0)
    assert dm.app[OPS].staleness_bound_s == 7.0
