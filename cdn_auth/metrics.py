"""Prometheus metrics of one cdn_auth app, in a registry of its own (no globals).

The edge counts several things on every request, and prometheus_client makes each
count expensive: ``Counter.labels(...)`` hashes the label values and takes the
metric's lock to find the child, and even a bound child's ``inc()`` runs two
observability checks and takes the value's lock.  So the hot path's counters are
:class:`Tally` objects: bound once here (cache hit/miss per cache, allow per reason;
deny reasons, a small closed set of error codes, on first use), each a plain integer
add, folded into its Prometheus child whenever the registry is collected (a scrape of
``/metrics``, or ``get_sample_value``).  The exposition is unchanged, except that
pre-bound children are exported (at 0) before their first increment.

Tallies are updated and folded on the event loop's thread; a registry collected from
another thread could lose increments that race with the fold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

#: The edge's decision caches (see :class:`cdn_auth.authorizer.Authorizer`).
CACHE_NAMES = ("session", "pointer", "media", "grant", "grant_binding")


class Tally:
    """Increments of one Prometheus counter child, kept as a plain number until folded."""

    __slots__ = ("_child", "n")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self.n: float = 0

    def inc(self, amount: float = 1) -> None:
        self.n += amount

    def fold(self) -> None:
        n, self.n = self.n, 0
        if n:
            self._child.inc(n)


@dataclass(frozen=True, slots=True)
class CacheCounters:
    """One cache's hit and miss increments."""

    hit: Callable[[], None]
    miss: Callable[[], None]


class _FoldTallies:
    """Registered first, so the registry calls it before any metric: folds every tally."""

    def __init__(self, tallies: list[Tally]) -> None:
        self._tallies = tallies

    def collect(self) -> Iterable[Any]:
        for t in self._tallies:
            t.fold()
        return ()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._tallies: list[Tally] = []
        r.register(_FoldTallies(self._tallies))  # first: folds before anything is read
        self.decisions = Counter(
            "cdn_auth_decisions", "Edge authorization decisions", ["outcome", "reason"], registry=r
        )
        self.decision_seconds = Histogram(
            "cdn_auth_decision_seconds",
            "Time to reach an authorization decision",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_lookups = Counter(
            "cdn_auth_cache_lookups", "Decision cache lookups", ["cache", "result"], registry=r
        )
        self.revocation_lag = Histogram(
            "cdn_auth_revocation_lag_seconds",
            "Event write to applied at this edge",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.revocation_tail_age = Gauge(
            "cdn_auth_revocation_tail_age_seconds",
            "Seconds since Redis last answered the tail",
            registry=r,
        )
        self.revocation_view_size = Gauge(
            "cdn_auth_revocation_view_entries", "Entries in the in-memory revocation view", registry=r
        )
        self.bytes_served = Counter("cdn_auth_bytes_served", "Media bytes sent", registry=r)
        self.bank_matches = Counter(
            "cdn_auth_bank_matches", "Registrations matching a hash bank", ["bank", "action"], registry=r
        )
        self.http_responses = Counter(
            "cdn_auth_http_responses", "HTTP responses by status", ["status"], registry=r
        )
        # Set when /metrics is scraped, so an alert sees a dependency down even without traffic.
        self.redis_up = Gauge(
            "cdn_auth_redis_up", "1 if Redis answered a PING at scrape time", registry=r
        )
        self.staleness_bound = Gauge(
            "cdn_auth_revocation_staleness_bound_seconds",
            "Tail age past which pointer and grant requests fail closed",
            registry=r,
        )
        # The hot path's counters (see the module docstring).
        self.served = self.tally(self.bytes_served)
        self.allow_pointer = self.tally(self.decisions.labels("allow", "pointer"))
        self.allow_grant = self.tally(self.decisions.labels("allow", "grant"))
        self.allow_public = self.tally(self.decisions.labels("allow", "public"))
        self._deny: dict[str, Tally] = {}
        self._errors: dict[str, Tally] = {}
        self._status: dict[int, Tally] = {}
        self._caches: dict[str, CacheCounters] = {}
        for name in CACHE_NAMES:
            self.cache_counters(name)

    def tally(self, child: Counter) -> Tally:
        """A :class:`Tally` for a counter (or labelled child) of this registry."""
        t = Tally(child)
        self._tallies.append(t)
        return t

    def cache_counters(self, cache: str) -> CacheCounters:
        """The hit/miss increments of one cache, bound on first use."""
        counters = self._caches.get(cache)
        if counters is None:
            counters = CacheCounters(
                self.tally(self.cache_lookups.labels(cache, "hit")).inc,
                self.tally(self.cache_lookups.labels(cache, "miss")).inc,
            )
            self._caches[cache] = counters
        return counters

    def cache_lookup(self, cache: str, hit: bool) -> None:
        counters = self.cache_counters(cache)
        (counters.hit if hit else counters.miss)()

    def deny(self, reason: str) -> None:
        """Count a refusal; ``reason`` is an error code (a small, closed set)."""
        t = self._deny.get(reason)
        if t is None:
            t = self._deny[reason] = self.tally(self.decisions.labels("deny", reason))
        t.inc()

    def error(self, code: str) -> None:
        """Count a decision that failed for the edge's own reasons (a 5xx: Redis down, revocation
        state stale), apart from refusals, so an alert can page on it."""
        t = self._errors.get(code)
        if t is None:
            t = self._errors[code] = self.tally(self.decisions.labels("error", code))
        t.inc()

    def response(self, status: int) -> None:
        """Count one HTTP response; the statuses an app answers are a small set."""
        t = self._status.get(status)
        if t is None:
            t = self._status[status] = self.tally(self.http_responses.labels(str(status)))
        t.inc()
