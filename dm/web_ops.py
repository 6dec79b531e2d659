"""dm's operational routes (:mod:`service_kernel.web_ops`): ``/readyz`` also needs the
notify tail fresh (within ``DM_STALENESS_BOUND_S``) and reports the sockets held."""

from __future__ import annotations

from typing import Any

from service_kernel import web_ops
from service_kernel.web_ops import OpsProbe

from .web_state import DmState

ROUTES = web_ops.routes("Readiness: Redis and the notify tail")


def probe(state: DmState) -> OpsProbe:
    """What the ops routes read on a dm process."""
    m, hub = state.metrics, state.hub

    def on_scrape() -> None:
        m.websockets.set(hub.connected)

    def ready_fields(_tail_age_s: float) -> dict[str, Any]:
        return {"websockets": hub.connected}

    return OpsProbe(
        redis=state.redis,
        registry=m.registry,
        tail_age_s=hub.tailer.age_s,
        staleness_bound_s=state.settings.staleness_bound_s,
        fresh_field="notify_tail_fresh",
        tail_age_gauge=m.notify_tail_age,
        redis_up_gauge=m.redis_up,
        on_scrape=on_scrape,
        ready_fields=ready_fields,
    )
