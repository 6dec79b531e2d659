"""The servers' own view of a run: Prometheus samples from ``/metrics``, CPU seconds from
``/proc`` (through :mod:`loadtests.stack.proc_cpu`, the one reader the load test uses too),
and the order statistics the reports take."""

from __future__ import annotations

import http.client
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.stack.proc_cpu import cpu_seconds
from loadtests.stack.servers import Server

from .harness import BenchError, fetch

# -- order statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1): an observed value, never an interpolation;
    0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


# -- Prometheus scraping --------------------------------------------------------------------

_SAMPLE_RE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$"
)
_LABEL_RE = re.compile(r'(\w+)="([^"]*)"')
Sample = tuple[str, dict[str, str], float]


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (comments skipped)."""
    out: list[Sample] = []
    for line in text.splitlines():
        m = _SAMPLE_RE.match(line)
        if m is not None and not line.startswith("#"):
            out.append((m["name"], dict(_LABEL_RE.findall(m["labels"] or "")), float(m["value"])))
    return out


def scrape(port: int) -> list[Sample]:
    """Every sample of ``GET /metrics``; a server that does not answer is a setup failure."""
    try:
        status, _, body = fetch(port, "GET", "/metrics")
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"port {port} did not answer /metrics: {exc}") from exc
    if status != 200:
        raise BenchError(f"/metrics on port {port} answered {status}")
    return parse_samples(body.decode())


def metric_sum(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == want for k, want in labels.items())
    )


# -- CPU ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a server process and of its Redis at one moment.

    CPU per operation is the figure a noisy 2-core machine distorts least: other
    processes steal wall-clock time from the server, not the CPU it spends per request.
    """

    server: float | None
    redis: float | None

    @classmethod
    def of(cls, server: Server) -> Cpu:
        return cls(cpu_seconds(server.proc.pid), cpu_seconds(server.redis_pid))

    def per_op_us(self, before: Cpu, ops: int) -> dict[str, float | None]:
        """Microseconds of CPU per operation since ``before``, for the server and its Redis."""

        def each(now: float | None, then: float | None) -> float | None:
            return (
                None if now is None or then is None or ops <= 0 else round((now - then) / ops * 1e6, 1)
            )

        return {"server": each(self.server, before.server), "redis": each(self.redis, before.redis)}
