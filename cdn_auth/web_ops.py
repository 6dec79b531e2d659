"""Operational routes: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (Redis and tail fresh)."""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service_kernel.openapi import Route
from service_kernel.web_lifecycle import readiness, redis_answers

from . import api_schemas as api
from .web_state import STATE


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    m = state.metrics
    m.revocation_tail_age.set(max(0.0, state.authorizer.tailer.age_s()))
    m.revocation_view_size.set(len(state.authorizer.tailer.view))
    m.redis_up.set(1 if await redis_answers(state.redis, 0.5) else 0)
    return web.Response(body=generate_latest(m.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """Alive; the pid tells which of several ``--workers`` processes answered."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    tail_age = state.authorizer.tailer.age_s()
    fresh = state.authorizer.tail_fresh()
    return await readiness(state.redis, fresh, revocation_tail_fresh=fresh,
                           revocation_tail_age_s=round(tail_age, 3)
                           if tail_age != float("inf") else None)


ROUTES = (
    Route("GET", "/metrics", metrics, "Prometheus metrics", "ops", auth="none", api=api.METRICS),
    Route("GET", "/healthz", healthz, "Liveness", "ops", auth="none", api=api.HEALTHZ),
    Route("GET", "/readyz", readyz, "Readiness: Redis reachable and revocation tail fresh", "ops",
          auth="none", responses=(200, 503), api=api.READYZ),
)
