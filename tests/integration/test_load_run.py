"""Real load, briefly: every user class against a stack this test starts, and distributed Locust.

Locust (gevent) never runs inside pytest's process: the runner and the
driver are subprocesses, as they are for an SRE.  The stack is the
process stack (Redis, edge and dm as their own processes) on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtests.load.plan import DriveConfig
from loadtests.load.scenarios import MODES, VIEW_PREFIX, phases_of
from loadtests.load.seed import Targets, seed
from loadtests.report.recorder import SegmentData
from loadtests.stack.processes import ProcStack, process_stack

from ..support.paths import REPO_ROOT

REPO = REPO_ROOT
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcStack]:
    with process_stack(tmp_path_factory.mktemp("loadstack")) as st:
        yield st


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _short_run(stack: ProcStack, run_dir: Path, *extra: str) -> Path:
    """``python -m loadtests run`` for seconds against the test's stack (videos uploaded)."""
    stack.check_alive()
    _run(
        [
            "loadtests",
            "run",
            "--dm-url",
            stack.dm_url,
            "--edge-url",
            stack.edge_url,
            "--scan-dm-url",  # plain+scan needs its scanning dm (refused without one)
            stack.scan_dm_url,
            "--dir",
            str(run_dir),
            "--rounds",
            "2",
            "--rate",
            "8",
            "--trial-seconds",
            "1",
            "--warmup-seconds",
            "0",
            "--step-rates",
            "16",
            "--step-seconds",
            "1",
            "--refine",
            "0",
            "--view-ratio",
            "1",
            "--redis-url",
            stack.redis_url,
            *(f"--server-pid={name}={pid}" for name, pid in stack.pids().items()),
            *extra,
        ],
        timeout_s=110,
    )
    return run_dir


@pytest.fixture(scope="module")
def short_run(stack: ProcStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _short_run(stack, tmp_path_factory.mktemp("run"))


def test_every_user_class_runs_and_reports(stack: ProcStack, short_run: Path) -> None:
    for name in ("report.json", "report.md", "report.html"):
        assert (short_run / name).stat().st_size > 0, name
    doc = json.loads((short_run / "report.json").read_text())
    for mode in MODES:
        m = doc["modes"][mode]
        assert m["count"] > 0 and m["errors"] == 0, (mode, m["flows"])
        for phase in phases_of(mode):
            assert m["phases"][phase]["count"] > 0 and m["phases"][phase]["errors"] == 0, (mode, phase)
        view = m["view"]
        assert view["count"] > 0 and view["errors"] == 0, (VIEW_PREFIX + mode, view["flows"])
        for phase in phases_of(VIEW_PREFIX + mode):
            assert view["phases"][phase]["count"] > 0, (VIEW_PREFIX + mode, phase)
    driver = json.loads((short_run / "driver.json").read_text())
    stats = driver["locust_stats"]
    assert stats and all(s["failures"] == 0 for s in stats.values()), stats
    assert stats["sealed-pq:seal"]["requests"] > 0  # crypto is recorded like a request
    for mode in MODES:  # server CPU per share, measured from /proc for the stack's processes
        cost = doc["modes"][mode]["server_cost"]
        assert cost["measured"] and cost["us_per_share"]["estimate"] > 0, cost
        assert set(cost["by_role_us"]) == {"dm", "edge", "redis"}, cost
        assert cost["net_of_idle"] and set(cost["idle_cpu_pct"]) == set(stack.pids()), cost
        assert doc["modes"][mode]["saturation_bound"]["saturated_first"] is not None
    for mode in ("sealed", "sealed-pq"):  # the floor, from primitives measured in this run
        f = doc["floor"][mode]
        assert f["seal_us"] > 0 and f["open_us"] > 0 and f["binding_rtt_us"] > 0, f
        assert f["derive_us"] > 0 and f["grant_check_us"] > 0, f  # the capability path
        # The grant is derived ahead of the share (a spare): shown, not on the critical path.
        assert f["derive_ahead"] is True, f
        assert f["floor_ms"] == pytest.approx(
            (f["seal_us"] + f["open_us"] + f["grant_check_us"] + f["binding_rtt_us"]) / 1000,
            abs=0.002,
        )
        assert f["multiple"] == pytest.approx(f["overhead_ms"] / f["floor_ms"], abs=0.01)
        # The cold floor: the same primitives one call at a time after an idle gap.
        cold = f["cold"]
        assert all(cold[k] > 0 for k in ("seal_us", "open_us", "grant_check_us", "binding_rtt_us"))
        assert cold["floor_ms"] == pytest.approx(
            (cold["seal_us"] + cold["open_us"] + cold["grant_check_us"] + cold["binding_rtt_us"]) / 1000,
            abs=0.002,
        )
        assert f["cold_multiple"] == pytest.approx(f["overhead_ms"] / cold["floor_ms"], abs=0.01)
    lags = [r["loop_lag_p99_ms"] for r in doc["validity"]["segments"]]
    assert lags and all(x is not None and x >= 0 for x in lags), lags
    assert doc["headline"] and doc["headline"] in (short_run / "report.md").read_text()
    page = (short_run / "report.html").read_text()
    assert "Server CPU per share" in page and "The floor of the sealed overhead" in page
    assert "cold floor" in page
    assert page.count('<img src="data:image/svg+xml;base64,') == 4
    assert "sealed-pq" in (short_run / "report.md").read_text()


def _drive_two_workers(
    stack: ProcStack, tmp_path: Path, pools: dict[str, int], *, spare: int, trial_rate: float
) -> dict[str, Any]:
    """Seed ``pools`` (plus ``spare`` pairs per scenario), drive one trial per mode of
    plain and sealed with a Locust master and two workers; the driver's summary."""
    seeded = seed(
        Targets(stack.dm_url, stack.edge_url),
        {s: n + spare for s, n in pools.items()},
        origin_path=stack.origin_path,
    )
    seeded.save(tmp_path / "seed.json")
    cfg = DriveConfig(
        stack.dm_url,
        stack.edge_url,
        str(tmp_path / "seed.json"),
        str(tmp_path / "out"),
        pools,
        modes=["plain", "sealed"],
        workers=2,
        view_ratio=0.5,
        warmup_s=0,
        rounds=1,
        trial_rate=trial_rate,
        trial_s=2,
        step_rates=[],
        refine=0,
    )
    cfg.save(tmp_path / "drive.json")
    _run(["loadtests.load.drive", str(tmp_path / "drive.json")], timeout_s=100)
    return dict(json.loads((tmp_path / "out" / "driver.json").read_text()))


def test_master_with_two_workers_merges_exact_counts(stack: ProcStack, tmp_path: Path) -> None:
    pools = {"plain": 3, "sealed": 3, "view-sealed": 2}
    driver = _drive_two_workers(stack, tmp_path, pools, spare=2, trial_rate=12)
    segments = [
        json.loads(line) for line in (tmp_path / "out" / "segments.jsonl").read_text().splitlines()
    ]
    merged = sum(SegmentData.from_json(s["data"]).total_count() for s in segments)
    per_worker = driver["worker_recorded"]
    assert driver["distributed"] and sorted(per_worker) == ["0", "1"]
    assert all(n > 0 for n in per_worker.values()), per_worker
    assert merged == sum(per_worker.values())
    locust_counted = sum(s["requests"] for s in driver["locust_stats"].values())
    assert merged == locust_counted, (merged, locust_counted)
    assert all(len(s["processes"]) == 2 for s in segments)


def test_workers_take_exactly_the_seeded_pairs_however_locust_spreads_users(
    stack: ProcStack, tmp_path: Path
) -> None:
    """The master hands out seeded pairs: Locust does not spread each user class evenly over
    the workers, and fixed strides of the seed file ran out on the worker that got more than
    half of a class (a full run with --workers 2 failed "only 308 of 600 users started")."""
    pools = {"plain": 5, "sealed": 1, "view-plain": 3}
    # Exactly one pair per user: no slack per worker.
    driver = _drive_two_workers(stack, tmp_path, pools, spare=0, trial_rate=8)
    assert driver["distributed"] and all(n > 0 for n in driver["worker_recorded"].values())
    for log in (tmp_path / "out").glob("worker-*.log"):
        assert "this process needs pair" not in log.read_text(), log.name
    # Each worker runs its own users' share of a scenario's rate: with 1/N each, a worker that
    # Locust gave no user of a class let its arrivals pass, and the run made half its rate.
    for line in (tmp_path / "out" / "segments.jsonl").read_text().splitlines():
        seg = json.loads(line)
        if "trial" not in seg["segment"]:
            continue
        for mode, rate in seg["rates"].items():
            offered = rate * seg["duration_s"]
            started = seg["data"]["flows"].get(mode, {}).get("started", 0)
            assert started >= 0.75 * offered, (seg["segment"], mode, started, offered)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_page_renders_its_plots(short_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,3000",
            f"--screenshot={shot}",
            (short_run / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20) or []
    # The modes' line colours (loadtests.report.plots.COLORS) appear only if the SVG plots rendered.
    wanted = {(0x1F, 0x6F, 0xB4), (0xE0, 0x7B, 0x00), (0x2A, 0x9D, 0x4B)}
    painted = {c: n for n, c in colors if c in wanted}
    assert len(painted) == 3 and all(n > 50 for n in painted.values()), painted


def test_compare_two_real_runs(stack: ProcStack, short_run: Path, tmp_path: Path) -> None:
    """A second short run (no step load, two modes) against the first: three files, a sentence."""
    second = _short_run(stack, tmp_path / "second", "--modes", "plain,sealed", "--step-rates", "none")
    proc = _run(
        ["loadtests", "compare", str(short_run), str(second), "--out", str(tmp_path / "cmp")],
        timeout_s=60,
    )
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(doc["modes"]) == {"plain", "sealed"}  # the modes both runs measured
    assert doc["comparability"]["comparable"], doc["comparability"]
    assert any("modes" in c for c in doc["comparability"]["caveats"])
    assert doc["headline"].startswith("At the median, from run A to run B")
    assert doc["headline"] in proc.stdout
    for phase in phases_of("sealed"):
        assert doc["modes"]["sealed"]["phases"][phase]["b"]["count"] > 0, phase
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("# Load-test comparison")
    assert "<script" not in (tmp_path / "cmp" / "compare.html").read_text()
