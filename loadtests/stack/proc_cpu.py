"""CPU time of the server processes, sampled at a segment's start and end, from ``/proc``.

A share's latency mixes the servers' work with the generator's (client
crypto, HTTP parsing) and with whatever else the machine runs.  The CPU a
server process spends is its own: other processes steal wall-clock time
from it, not CPU seconds per request.  So the report divides the CPU the dm
service, the edge and Redis used in a trial by the shares completed in it:
the server cost per share, the figure the capacity of a deployment scales
with.  Only processes on this machine can be read; a remote target says
"not measured".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: Server roles in report order; a process named ``edge-0`` belongs to ``edge``.
ROLES = ("dm", "edge", "redis")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU the process has used so far; ``None`` if it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def role(name: str) -> str:
    return name.split("-", 1)[0]


def sample(pids: Mapping[str, int]) -> dict[str, float]:
    """``{process name: CPU seconds}`` of the processes that could be read."""
    out = {}
    for name, pid in pids.items():
        v = cpu_seconds(pid)
        if v is not None:
            out[name] = v
    return out


def used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two samples (both must have it)."""
    return {n: round(after[n] - before[n], 6) for n in before if n in after}
