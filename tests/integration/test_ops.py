"""Operational surface: OpenAPI covers every route, metrics, health, logs without secrets."""

from __future__ import annotations

import logging
import re

import pytest

from cdn_auth.keyring import KeyRing
from dm.identity import DevIssuer

from ..support.edge import fetch, mint
from ..support.services import Edge, bearer


async def test_openapi_documents_every_route(edge: Edge) -> None:
    async with edge.client.get("/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    for route in edge.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or re.sub(r"{(\w+)(:[^}]*)?}", r"{\1}", info.get("formatter", ""))
        method = route.method.lower()
        if method == "head" and path.startswith("/m/"):
            assert "head" in doc["paths"][path]
            continue
        assert method in doc["paths"][path], (method, path)


async def test_metrics_expose_decisions_cache_and_lag(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await edge.add_media()
    for _ in range(3):
        await fetch(edge, media.id, issuer.mint("bob"), mint(ring, media))
    await fetch(edge, media.id, issuer.mint("carol"), mint(ring, media))
    async with edge.client.get("/metrics") as r:
        text = await r.text()
    assert 'cdn_auth_decisions_total{outcome="allow",reason="pointer"} 3.0' in text
    assert 'reason="pointer_wrong_recipient"' in text
    assert 'cdn_auth_cache_lookups_total{cache="pointer",result="hit"}' in text
    for name in (
        "cdn_auth_decision_seconds_bucket",
        "cdn_auth_revocation_lag_seconds",
        "cdn_auth_revocation_tail_age_seconds",
    ):
        assert name in text


async def test_health_and_ready(edge: Edge) -> None:
    async with edge.client.get("/healthz") as r:
        assert r.status == 200
    async with edge.client.get("/readyz") as r:
        assert r.status == 200
        assert (await r.json())["revocation_tail_fresh"] is True


@pytest.mark.parametrize(
    "method,path,status", [("GET", "/nope", 404), ("DELETE", "/v1/media", 405), ("POST", "/m/m_x", 405)]
)
async def test_unknown_routes_get_json_errors(edge: Edge, method: str, path: str, status: int) -> None:
    async with edge.client.request(method, path) as r:
        assert r.status == status
        assert "code" in (await r.json())["error"]


async def test_logs_never_contain_tokens(
    edge: Edge, issuer: DevIssuer, ring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    import aiohttp
    from aiohttp import web

    from service_kernel.logs import AccessLogger, JsonFormatter
    from service_kernel.redis_process import free_port

    media, _ = await edge.add_media()
    session, ptr = issuer.mint("bob"), mint(ring, media)
    runner = web.AppRunner(edge.app, access_log_class=AccessLogger)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    url = f"http://127.0.0.1:{port}/m/{media.id}"
    try:
        with caplog.at_level(logging.DEBUG):
            async with aiohttp.ClientSession() as http:
                for who in (session, issuer.mint("eve")):
                    async with http.get(url, params={"pointer": ptr}, headers=bearer(who)) as r:
                        await r.read()
    finally:
        await site.stop()
    text = "\n".join(JsonFormatter().format(rec) for rec in caplog.records)
    assert f"/m/{media.id}" in text  # the access log ran
    assert ptr not in text and session not in text and ptr[:20] not in text
