"""The report from synthetic segments: merged percentiles, differences, saturation, three files.

A real run is slow and noisy; here the segments are made up with known
latencies, so the numbers the report must print are known exactly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from loadtests.load.scenarios import MODES
from loadtests.report import hdr
from loadtests.report.analysis import Run, analyze
from loadtests.report.render import summary_text, write_report
from loadtests.report.slo import Slo
from loadtests.report.stats import NO_DIFFERENCE

from ..support.load_report import segment

#: Mode -> extra ms over plain in every trial (sealed truly slower; sealed-pq the same;
#: scanning a little slower).
SHIFT = {"plain": 0.0, "plain+scan": 1.0, "sealed": 3.0, "sealed-pq": 0.0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("synthetic-run")
    rng = random.Random(11)
    lines, t, n = [], 1_000_000.0, 0
    for rnd in range(1, 6):
        base = 10.0 + rng.gauss(0, 0.4)  # this round's machine conditions, shared by modes
        for mode in MODES:
            n += 1
            lat = [base + SHIFT[mode] + abs(rng.gauss(0, 1.0)) for _ in range(100)]
            lines.append(segment(f"{n:03d}-trial-{mode}-{rnd}", "trial", mode, rnd, 10, 10, t, lat))
            t += 11
    for level, rate in enumerate((10.0, 20.0, 40.0), start=1):
        for mode in MODES:
            slow = {"plain": 40.0, "plain+scan": 40.0, "sealed": 20.0, "sealed-pq": 40.0}[mode]
            p99 = 30.0 if rate < slow else 80.0
            n += 1
            lat = [10.0] * 98 + [p99] * 2
            lines.append(segment(f"{n:03d}-step-{mode}-{level}", "step", mode, level, rate, 5, t, lat))
            t += 6
    (d / "segments.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "driver.json").write_text(json.dumps({"locust_version": "test", "cpu_warning": False}))
    (d / "run.json").write_text(
        json.dumps(
            {
                "modes": list(MODES),
                "slo": Slo(50.0).as_dict(),
                "config": {"rounds": 5, "trial_s": 10, "trial_rate": 10, "view_ratio": 0},
            }
        )
    )
    return d


def test_json_has_the_contracted_fields(run_dir: Path) -> None:
    doc = analyze(Run.load(run_dir))
    for mode in MODES:
        m = doc["modes"][mode]
        for field in ("p50_ms", "p99_ms", "p999_ms", "rps", "errors", "saturation_rps"):
            assert field in m, (mode, field)
        assert m["rps"] == pytest.approx(10.0) and m["errors"] == 0
    for mode in ("plain+scan", "sealed", "sealed-pq"):
        for field in ("delta_p50_ms", "delta_p99_ms"):
            d = doc["modes"][mode][field]
            assert {"ci_low", "ci_high"} <= set(d) and d["ci_low"] <= d["estimate"] <= d["ci_high"]
    assert doc["validity"]["valid"], doc["validity"]["problems"]


def test_percentiles_are_from_merged_histograms(run_dir: Path) -> None:
    run = Run.load(run_dir)
    doc = analyze(run)
    merged = hdr.merge(s.data.hists["plain:total"] for s in run.of("trial", "plain"))
    assert doc["modes"]["plain"]["p99_ms"] == pytest.approx(hdr.percentile_ms(merged, 99), abs=0.001)
    per_trial = [t["p99_ms"] for t in doc["modes"]["plain"]["trials"]]
    assert len(per_trial) == 5  # the merged value is not their mean (it need not be)


def test_real_and_null_differences_are_called_correctly(run_dir: Path) -> None:
    doc = analyze(Run.load(run_dir))
    sealed, pq = doc["modes"]["sealed"]["delta_p50_ms"], doc["modes"]["sealed-pq"]["delta_p50_ms"]
    assert sealed["significant"] and sealed["ci_low"] > 0
    assert sealed["estimate"] == pytest.approx(3.0, abs=1.0)
    assert not pq["significant"] and pq["verdict"] == NO_DIFFERENCE
    assert pq["ci_low"] <= 0 <= pq["ci_high"]


def test_saturation_is_the_highest_rate_meeting_the_slo(run_dir: Path) -> None:
    doc = analyze(Run.load(run_dir))
    assert doc["modes"]["plain"]["saturation_rps"] == 20.0
    assert doc["modes"]["sealed"]["saturation_rps"] == 10.0
    assert doc["modes"]["sealed-pq"]["saturation_rps"] == 20.0


def test_three_files_written(run_dir: Path, tmp_path: Path) -> None:
    paths = write_report(run_dir, tmp_path)
    doc = json.loads(paths["json"].read_text())
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert NO_DIFFERENCE in md and NO_DIFFERENCE in page
    assert page.count('<img src="data:image/svg+xml;base64,') == 4
    assert "<script" not in page and "http://" not in page.split("<style>")[0]
    text = summary_text(doc)
    assert "sealed-pq" in text and "VALID" in text


def test_too_few_trials_is_not_valid(run_dir: Path, tmp_path: Path) -> None:
    lines = [
        ln
        for ln in (run_dir / "segments.jsonl").read_text().splitlines()
        if json.loads(ln)["round"] <= 2 or json.loads(ln)["kind"] != "trial"
    ]
    for name in ("driver.json", "run.json"):
        (tmp_path / name).write_text((run_dir / name).read_text())
    (tmp_path / "segments.jsonl").write_text("\n".join(lines) + "\n")
    doc = analyze(Run.load(tmp_path))
    assert not doc["validity"]["valid"]
    assert any("2 trials" in p for p in doc["validity"]["problems"])
