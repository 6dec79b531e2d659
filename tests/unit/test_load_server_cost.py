"""Server CPU per share, capacity, saturation attribution and loop lag, from known segments."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from loadtests.report import server_cost
from loadtests.report.analysis import Run, Segment, analyze
from loadtests.report.recorder import SegmentData
from loadtests.report.render import write_report
from loadtests.report.slo import Slo, judge
from loadtests.stack import proc_cpu

from ..support.load_report import segment

#: Server CPU seconds per completed share, by process, in each mode (sealed costs 10 % more).
COST = {
    "plain": {"dm-0": 400e-6, "edge-0": 300e-6, "redis": 100e-6},
    "sealed": {"dm-0": 440e-6, "edge-0": 330e-6, "redis": 110e-6},
}


def _with_servers(
    seg: dict[str, Any],
    cpu_s: dict[str, float],
    window_s: float,
    generator_pct: float,
    lag_p99_ms: float = 1.0,
) -> dict[str, Any]:
    seg["servers"] = {"window_s": window_s, "cpu_s": cpu_s}
    for p in seg["processes"]:
        p["cpu_pct"] = generator_pct
        p["loop_lag"] = {"p50_ms": 0.1, "p99_ms": lag_p99_ms, "max_ms": lag_p99_ms, "count": 9}
    return seg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cost-run")
    lines, t, n = [], 1_000_000.0, 0
    for rnd in range(1, 6):
        for mode in ("plain", "sealed"):
            n += 1
            seg = segment(f"{n:03d}-trial-{mode}-{rnd}", "trial", mode, rnd, 10, 10, t, [10.0] * 100)
            noise = 1.0 + 0.01 * rnd  # both modes of a round see the same conditions
            lines.append(
                _with_servers(seg, {k: v * 100 * noise for k, v in COST[mode].items()}, 10.0, 20.0)
            )
            t += 11
    # Step load: plain misses at 40/s with the servers busiest; sealed with the generator busiest.
    for level, rate in enumerate((20.0, 40.0), start=1):
        for mode in ("plain", "sealed"):
            n += 1
            p99 = 80.0 if rate == 40.0 else 20.0
            seg = segment(
                f"{n:03d}-step-{mode}-{level}", "step", mode, level, rate, 5, t, [10.0] * 98 + [p99] * 2
            )
            gen = 95.0 if mode == "sealed" and rate == 40.0 else 30.0
            lines.append(_with_servers(seg, {"dm-0": 4.0, "edge-0": 2.0, "redis": 0.5}, 5.0, gen))
            t += 6
    (d / "segments.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "driver.json").write_text(json.dumps({"locust_version": "test", "cpu_warning": False}))
    (d / "run.json").write_text(
        json.dumps(
            {
                "modes": ["plain", "sealed"],
                "slo": Slo(50.0).as_dict(),
                "config": {"rounds": 5, "trial_s": 10, "trial_rate": 10, "view_ratio": 0},
            }
        )
    )
    return d


def test_cpu_per_share_and_ratio(run_dir: Path) -> None:
    doc = analyze(Run.load(run_dir))
    plain, sealed = doc["modes"]["plain"]["server_cost"], doc["modes"]["sealed"]["server_cost"]
    assert plain["measured"] and sealed["measured"]
    assert plain["us_per_share"]["estimate"] == pytest.approx(800 * 1.03, rel=0.01)
    assert plain["by_role_us"]["dm"] == pytest.approx(400 * 1.03, rel=0.01)
    assert plain["shares_per_core_s"] == pytest.approx(1e6 / (800 * 1.03), rel=0.01)
    ratio = sealed["ratio_vs_plain"]
    assert ratio["estimate"] == pytest.approx(1.10, abs=0.001)
    assert ratio["ci_low"] <= 1.10 <= ratio["ci_high"]


def test_saturation_attributed_to_the_busiest_process(run_dir: Path) -> None:
    doc = analyze(Run.load(run_dir))
    plain, sealed = doc["modes"]["plain"], doc["modes"]["sealed"]
    assert plain["saturation_rps"] == 20.0 and sealed["saturation_rps"] == 20.0
    assert plain["saturation_bound"]["bound"] == "server-bound"
    assert plain["saturation_bound"]["saturated_first"] == "dm-0"  # 80 % of a core
    assert sealed["saturation_bound"]["bound"] == "generator-bound"
    assert sealed["saturation_bound"]["saturated_first"] == "generator"


def test_report_shows_cost_and_generator_bound(run_dir: Path, tmp_path: Path) -> None:
    md = write_report(run_dir, tmp_path)["md"].read_text()
    assert "## Server CPU per share" in md
    assert "20 (generator-bound)" in md and "GENERATOR-BOUND" in md
    assert "1.10x [" in md
    assert "loop lag p99 ms" in md


def test_remote_target_says_not_measured(tmp_path: Path) -> None:
    seg = segment("001-trial-plain-1", "trial", "plain", 1, 10, 10, 0.0, [10.0] * 10)
    (tmp_path / "segments.jsonl").write_text(json.dumps(seg) + "\n")
    doc = analyze(Run.load(tmp_path))
    assert doc["modes"]["plain"]["server_cost"]["measured"] is False
    assert "not measured" in doc["modes"]["plain"]["server_cost"]["note"]


def test_loop_lag_beyond_the_bound_is_not_valid() -> None:
    data = SegmentData(flows={"plain": {"started": 100, "completed": 100, "failed": 0, "late": 0}})
    proc = {"cpu_pct": 10.0, "loop_lag": {"p99_ms": 12.0}}
    v = judge(Slo(50.0), "plain", 10.0, 10.0, data, [proc])
    assert v.loop_lag_p99_ms == 12.0 and any("loop lag" in p for p in v.problems)
    proc["loop_lag"] = {"p99_ms": 1.0}
    assert not judge(Slo(50.0), "plain", 10.0, 10.0, data, [proc]).problems


def test_proc_cpu_reads_this_process() -> None:
    before = proc_cpu.sample({"dm-0": os.getpid(), "edge-0": 2**22 + 1})
    assert set(before) == {"dm-0"}  # a pid that does not exist is left out, not guessed
    t0 = time.process_time()
    while time.process_time() - t0 < 0.1:  # burn 100 ms of CPU, however long that takes
        sum(i * i for i in range(1000))
    used = proc_cpu.used(before, proc_cpu.sample({"dm-0": os.getpid()}))
    assert used["dm-0"] >= 0.08  # /proc counts in clock ticks (10 ms)
    assert (
        server_cost.per_trial_us(type("S", (), {"servers": {}, "data": SegmentData()})(), "plain")
        is None
    )


def test_idle_background_is_taken_out(run_dir: Path, tmp_path: Path) -> None:
    for name in ("segments.jsonl", "run.json"):
        (tmp_path / name).write_text((run_dir / name).read_text())
    # The dm burns 1 ms/s with no flow running: 10 ms per 10 s trial, 100 µs per share.
    (tmp_path / "driver.json").write_text(
        json.dumps(
            {
                "locust_version": "test",
                "cpu_warning": False,
                "server_idle": {"window_s": 2.0, "cpu_s": {"dm-0": 0.002, "edge-0": 0.0, "redis": 0.0}},
            }
        )
    )
    doc = analyze(Run.load(tmp_path))
    plain, sealed = doc["modes"]["plain"]["server_cost"], doc["modes"]["sealed"]["server_cost"]
    assert plain["net_of_idle"] and plain["idle_cpu_pct"]["dm-0"] == pytest.approx(0.1)
    assert plain["us_per_share"]["estimate"] == pytest.approx(800 * 1.03, rel=0.01)  # gross
    assert plain["net_us_per_share"]["estimate"] == pytest.approx(800 * 1.03 - 100, rel=0.01)
    assert plain["by_role_us"]["dm"] == pytest.approx(400 * 1.03 - 100, rel=0.01)
    ratio = (880 * 1.03 - 100) / (800 * 1.03 - 100)  # net of idle, the median round
    assert sealed["ratio_vs_plain"]["estimate"] == pytest.approx(ratio, abs=0.002)
    md = write_report(tmp_path, tmp_path / "out")["md"].read_text()
    assert "Idle CPU (% of one core): dm-0 0.1" in md


def test_a_role_whose_cpu_rounds_to_zero_is_still_reported() -> None:
    """Regression (a flaky load-run test): in a short trial an idle Redis used less than one
    CPU tick, and the report left its role out instead of saying 0."""
    trials = [
        Segment.from_json(
            _with_servers(
                segment(
                    f"00{r}-trial-plain-{r}",
                    "trial",
                    "plain",
                    r,
                    10,
                    10,
                    1_000_000.0 + 11 * r,
                    [10.0] * 100,
                ),
                {"dm-0": 0.04, "edge-0": 0.03, "redis": 0.0},
                10.0,
                20.0,
            )
        )
        for r in range(1, 4)
    ]
    cost = server_cost.mode_cost(trials, "plain", None)
    assert cost["measured"] and set(cost["by_role_us"]) == {"dm", "edge", "redis"}, cost
    assert cost["by_role_us"]["redis"] == 0.0
