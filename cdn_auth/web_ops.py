"""The edge's operational routes (:mod:`service_kernel.web_ops`): ``/readyz`` also needs the
revocation tail fresh (within ``staleness_bound_s``) and reports its age."""

from __future__ import annotations

from typing import Any

from service_kernel import web_ops
from service_kernel.web_ops import OpsProbe

from .web_state import EdgeState

ROUTES = web_ops.routes("Readiness: Redis reachable and revocation tail fresh")


def probe(state: EdgeState) -> OpsProbe:
    """What the ops routes read on an edge."""
    m, tailer = state.metrics, state.authorizer.tailer

    def on_scrape() -> None:
        m.revocation_view_size.set(len(tailer.view))

    def ready_fields(tail_age_s: float) -> dict[str, Any]:
        return {"revocation_tail_age_s": round(tail_age_s, 3) if tail_age_s != float("inf") else None}

    return OpsProbe(
        redis=state.redis,
        registry=m.registry,
        tail_age_s=tailer.age_s,
        staleness_bound_s=state.settings.staleness_bound_s,
        fresh_field="revocation_tail_fresh",
        tail_age_gauge=m.revocation_tail_age,
        redis_up_gauge=m.redis_up,
        on_scrape=on_scrape,
        ready_fields=ready_fields,
    )
