"""Comparing two runs: known shifts called right, incomparable runs refused, a quotable sentence.

The runs are synthetic (made of segments with known latencies, as in
test_load_report) so the differences the comparison must find are known;
tests/integration/test_load_run.py compares two real runs.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from loadtests.load.scenarios import MODES
from loadtests.report import compare
from loadtests.report.analysis import Run, analyze
from loadtests.report.headline import single_run
from loadtests.report.slo import Slo
from loadtests.report.stats import NO_DIFFERENCE

from ..support.load_report import segment

META: dict[str, Any] = {
    "modes": list(MODES),
    "slo": Slo(50.0).as_dict(),
    "config": {
        "rounds": 5,
        "trial_s": 10,
        "trial_rate": 10,
        "view_ratio": 0,
        "procs": 1,
        "workers": 0,
        "quick": False,
        "target": "embedded stack",
    },
    "environment": {
        "versions": {"python": "3.12.0", "cryptography": "44.0.0"},
        "machine": {"hostname": "box", "cpu": "Test CPU", "cpus": 2, "memory_gib": 4.0},
        "code": {"commit": "abc1234", "dirty": False},
    },
}


def make_run(d: Path, shift: dict[str, float], seed: int, meta: dict[str, Any]) -> Path:
    """Five rounds of trials; ``shift`` ms added to every latency of a mode in this run."""
    rng = random.Random(seed)
    lines, t, n = [], 1_000_000.0, 0
    for rnd in range(1, 6):
        base = 10.0 + rng.gauss(0, 0.3)
        for mode in MODES:
            n += 1
            lat = [base + shift.get(mode, 0.0) + abs(rng.gauss(0, 1.0)) for _ in range(100)]
            lines.append(segment(f"{n:03d}-trial-{mode}-{rnd}", "trial", mode, rnd, 10, 10, t, lat))
            t += 11
    d.mkdir(parents=True, exist_ok=True)
    (d / "segments.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "driver.json").write_text(json.dumps({"locust_version": "test", "cpu_warning": False}))
    (d / "run.json").write_text(json.dumps(meta))
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    a = make_run(root / "a", {"sealed": 1.5}, 1, META)
    b_meta = copy.deepcopy(META)
    b_meta["environment"]["code"]["commit"] = "def5678"
    b = make_run(root / "b", {"plain": 2.0, "sealed": 3.5}, 2, b_meta)
    return a, b


@pytest.fixture(scope="module")
def doc(runs: tuple[Path, Path]) -> dict[str, Any]:
    return compare.compare_runs(*runs)


def test_known_shift_is_found_and_null_is_not(doc: dict[str, Any]) -> None:
    plain, pq = doc["modes"]["plain"]["delta_p50_ms"], doc["modes"]["sealed-pq"]["delta_p50_ms"]
    assert plain["significant"] and plain["estimate"] == pytest.approx(2.0, abs=0.6)
    assert not pq["significant"] and pq["verdict"] == NO_DIFFERENCE
    assert not pq["paired"]  # two runs' rounds did not run back to back
    send = doc["modes"]["plain"]["phases"]["send"]["delta_p50_ms"]
    assert send["significant"] and send["estimate"] == pytest.approx(0.5, abs=0.2)
    assert doc["comparability"] == {"comparable": True, "blocking": [], "caveats": [], "forced": False}


def test_headline_is_one_quotable_sentence(runs: tuple[Path, Path], doc: dict[str, Any]) -> None:
    text = doc["headline"]
    assert text.startswith("At the median, from run A to run B, a plain share is 2.")
    assert "ms slower" in text and "95 % CI" in text
    assert "post-quantum sealed share shows no significant difference" in text
    one = single_run(analyze(Run.load(runs[0])))
    assert "; sealed adds 1." in one and "95 % CI +" in one and "ms plain share" in one
    assert one.startswith("Plain with scanning makes no significant difference")


def test_three_formats_written(runs: tuple[Path, Path], tmp_path: Path) -> None:
    paths = compare.write_compare(*runs, tmp_path)
    doc = json.loads(paths["json"].read_text())
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert doc["schema"] == compare.SCHEMA and set(doc["modes"]) == set(MODES)
    assert doc["headline"] in md and NO_DIFFERENCE in md
    assert NO_DIFFERENCE in page and "<script" not in page and 'class="lead"' in page
    assert "first byte" in md  # per phase


def test_different_load_shape_is_refused(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = copy.deepcopy(META)
    meta["config"]["trial_rate"] = 40
    meta["environment"]["machine"]["cpus"] = 64
    other = make_run(tmp_path / "other", {}, 3, meta)
    rc = compare.main([str(runs[0]), str(other), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == compare.EXIT_INCOMPARABLE
    assert "trial_rate: A 10 vs B 40" in err and "machine cpus: A 2 vs B 64" in err
    assert not (tmp_path / "out").exists()


def test_forced_comparison_is_flagged_loudly(runs: tuple[Path, Path], tmp_path: Path) -> None:
    meta = copy.deepcopy(META)
    meta["config"]["trial_s"] = 30
    other = make_run(tmp_path / "other", {}, 3, meta)
    assert compare.main([str(runs[0]), str(other), "--out", str(tmp_path / "out"), "--force"]) == 0
    doc = json.loads((tmp_path / "out" / compare.JSON_FILE).read_text())
    assert doc["comparability"]["forced"] and not doc["comparability"]["comparable"]
    assert "NOT COMPARABLE (forced)" in doc["headline"]
    assert "INCOMPARABLE RUNS" in (tmp_path / "out" / compare.MD_FILE).read_text()


def test_version_differences_are_caveats_not_refusals(runs: tuple[Path, Path], tmp_path: Path) -> None:
    meta = copy.deepcopy(META)
    meta["environment"]["versions"]["cryptography"] = "45.0.0"
    other = make_run(tmp_path / "other", {}, 3, meta)
    doc = compare.compare_runs(runs[0], other)
    assert doc["comparability"]["comparable"]
    assert any("cryptography" in c for c in doc["comparability"]["caveats"])


def test_runs_without_configuration_are_refused(runs: tuple[Path, Path], tmp_path: Path) -> None:
    other = make_run(tmp_path / "other", {}, 3, {"modes": list(MODES)})
    with pytest.raises(compare.Incomparable, match="no recorded configuration"):
        compare.compare_runs(runs[0], other)
