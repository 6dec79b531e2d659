"""A recorded load-test segment with chosen latencies, for report tests."""

from __future__ import annotations

from typing import Any

from loadtests.report.recorder import Merger, Recorder


def segment(
    name: str,
    kind: str,
    mode: str,
    rnd: int,
    rate: float,
    duration: float,
    t0: float,
    latencies: list[float],
    failed: int = 0,
) -> dict[str, Any]:
    rec = Recorder()
    for i, v in enumerate(latencies):
        rec.record(name, f"{mode}:total", v, ok=True, second=int(i / rate))
        rec.record(name, f"{mode}:send", v / 4, ok=True)
        rec.flow(name, mode, "started")
        rec.flow(name, mode, "completed")
    for _ in range(failed):
        rec.record(name, f"{mode}:total", 0.0, ok=False)
        rec.flow(name, mode, "started")
        rec.flow(name, mode, "failed")
    m = Merger()
    m.add(rec.drain())
    return {
        "segment": name,
        "kind": kind,
        "mode": mode,
        "round": rnd,
        "rates": {mode: rate},
        "target_rps": rate,
        "duration_s": duration,
        "started_at": t0,
        "processes": [
            {
                "segment": name,
                "worker_index": 0,
                "cpu_pct": 20.0,
                "machine_cpu_pct": 40.0,
                "cpu_warning": False,
                "undrained": 0,
                "recorded_total": 0,
            }
        ],
        "data": m.take(name).to_json(),
    }
