"""Operational routes every service serves: ``/metrics``, ``/healthz`` (alive) and
``/readyz`` (Redis answers and the service's stream tail is fresh).

What differs between services is data, not code: the metrics registry and the gauges
set at scrape time, the stream tail and the staleness bound from the service's
settings, and a few fields of the readiness body.  Each app puts an :class:`OpsProbe`
under :data:`OPS` and serves :func:`routes`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from .openapi import Answer, Api, Route, obj
from .redis_client import RedisClient
from .web_lifecycle import readiness, redis_answers


def _nothing() -> None:
    return None


def _no_fields(_tail_age_s: float) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class OpsProbe:
    """What the ops routes read, built by each app from its state and settings."""

    redis: RedisClient
    registry: CollectorRegistry
    #: Seconds since Redis last answered the service's stream tail (inf before the first).
    tail_age_s: Callable[[], float]
    #: The service's ``staleness_bound_s``: an older tail makes ``/readyz`` answer 503.
    staleness_bound_s: float
    #: The readiness body's name for the tail's freshness, e.g. ``notify_tail_fresh``.
    fresh_field: str
    #: Gauges set at each scrape: the tail's age and whether Redis answered a PING.
    tail_age_gauge: Gauge
    redis_up_gauge: Gauge
    #: The service's own gauges, set at each scrape.
    on_scrape: Callable[[], None] = field(default=_nothing)
    #: More readiness fields, given the tail age read for this answer.
    ready_fields: Callable[[float], dict[str, Any]] = field(default=_no_fields)

    def tail_fresh(self, tail_age_s: float) -> bool:
        return tail_age_s <= self.staleness_bound_s


OPS: web.AppKey[OpsProbe] = web.AppKey("service_ops", OpsProbe)


async def metrics(request: web.Request) -> web.Response:
    probe = request.app[OPS]
    probe.tail_age_gauge.set(max(0.0, probe.tail_age_s()))
    probe.on_scrape()
    probe.redis_up_gauge.set(1 if await redis_answers(probe.redis, 0.5) else 0)
    return web.Response(
        body=generate_latest(probe.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def healthz(request: web.Request) -> web.Response:
    """Alive; the pid tells which of several ``--workers`` processes answered."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    probe = request.app[OPS]
    age = probe.tail_age_s()
    fresh = probe.tail_fresh(age)
    return await readiness(probe.redis, fresh, **{probe.fresh_field: fresh}, **probe.ready_fields(age))


HEALTHZ = Api(
    ok={200: Answer(obj({"status": {"const": "ok"}, "pid": {"type": "integer"}}, ("status", "pid")))}
)
_READINESS = obj(
    {"status": {"enum": ["ready", "not_ready"]}, "redis": {"type": "boolean"}},
    ("status", "redis"),
    closed=False,
)  # plus the service's own fields
READYZ = Api(
    ok={200: Answer(_READINESS)},
    errors={503: Answer(_READINESS, headers={"Retry-After": {"schema": {"type": "string"}}})},
)
METRICS = Api(ok={200: Answer({"type": "string"}, media_type="text/plain")})


def routes(readiness_summary: str) -> tuple[Route, ...]:
    """The three routes, with the service's own words for what ``/readyz`` checks."""
    return (
        Route("GET", "/metrics", metrics, "Prometheus metrics", "ops", auth="none", api=METRICS),
        Route("GET", "/healthz", healthz, "Liveness", "ops", auth="none", api=HEALTHZ),
        Route(
            "GET",
            "/readyz",
            readyz,
            readiness_summary,
            "ops",
            auth="none",
            responses=(200, 503),
            api=READYZ,
        ),
    )
