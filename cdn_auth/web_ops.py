"""Operational routes: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (Redis and tail fresh)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from .openapi import Route
from .web_state import STATE


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    m = state.metrics
    m.revocation_tail_age.set(max(0.0, state.authorizer.tailer.age_s()))
    m.revocation_view_size.set(len(state.authorizer.tailer.view))
    return web.Response(body=generate_latest(m.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    redis_ok = True
    try:
        await asyncio.wait_for(state.redis.ping(), 1.0)
    except (RedisError, OSError, TimeoutError):
        redis_ok = False
    tail_age = state.authorizer.tailer.age_s()
    fresh = state.authorizer.tail_fresh()
    body = {"redis": redis_ok, "revocation_tail_fresh": fresh,
            "revocation_tail_age_s": round(tail_age, 3) if tail_age != float("inf") else None}
    ready = redis_ok and fresh
    return web.json_response({"status": "ready" if ready else "not_ready", **body},
                             status=200 if ready else 503,
                             headers=None if ready else {"Retry-After": "1"})


ROUTES = (
    Route("GET", "/metrics", metrics, "Prometheus metrics", "ops", auth="none"),
    Route("GET", "/healthz", healthz, "Liveness", "ops", auth="none"),
    Route("GET", "/readyz", readyz, "Readiness: Redis reachable and revocation tail fresh", "ops",
          auth="none", responses=(200, 503)),
)
