"""Prometheus metrics of one cdn_auth app, in a registry of its own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("cdn_auth_decisions", "Edge authorization decisions",
                                 ["outcome", "reason"], registry=r)
        self.decision_seconds = Histogram("cdn_auth_decision_seconds",
                                          "Time to reach an authorization decision",
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.cache_lookups = Counter("cdn_auth_cache_lookups", "Decision cache lookups",
                                     ["cache", "result"], registry=r)
        self.revocation_lag = Histogram("cdn_auth_revocation_lag_seconds",
                                        "Event write to applied at this edge",
                                        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                 0.5, 1, 2.5, 5), registry=r)
        self.revocation_tail_age = Gauge("cdn_auth_revocation_tail_age_seconds",
                                         "Seconds since Redis last answered the tail",
                                         registry=r)
        self.revocation_view_size = Gauge("cdn_auth_revocation_view_entries",
                                          "Entries in the in-memory revocation view", registry=r)
        self.bytes_served = Counter("cdn_auth_bytes_served", "Media bytes sent", registry=r)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        self.cache_lookups.labels(cache, "hit" if hit else "miss").inc()
