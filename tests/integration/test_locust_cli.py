"""Locust as an SRE runs it by hand: its own CLI, headless, against the process stack.

The by-hand command of docs/benchmarks.md (section 7.6) must give a clean result: every
user has conversations of its own, and answers asking to come back later (429 with
Retry-After) are honoured and reported as ``throttled``, not as failures.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.stack.processes import ProcStack, process_stack

from ..support.paths import REPO_ROOT

REPO = REPO_ROOT
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def locust(stack: ProcStack, out: Path, seconds: int) -> tuple[list[dict[str, str]], str]:
    """``locust -f loadtests/load/locustfile.py --host DM --edge-url EDGE --headless -u 4 -r 4
    -t Ns PlainShare SealedShare``; the stats CSV rows and the output."""
    exe = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    proc = subprocess.run(
        [
            exe,
            "-f",
            "loadtests/load/locustfile.py",
            "--host",
            stack.dm_url,
            "--edge-url",
            stack.edge_url,
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            f"{seconds}s",
            "--csv",
            str(out / "run"),
            "--only-summary",
            "PlainShare",
            "SealedShare",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, output
    with open(out / "run_stats.csv", newline="") as f:
        return list(csv.DictReader(f)), output


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcStack]:
    with process_stack(tmp_path_factory.mktemp("locuststack")) as st:
        yield st


def test_by_hand_locust_run_is_clean(stack: ProcStack, tmp_path: Path) -> None:
    rows, output = locust(stack, tmp_path, 15)
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0, output
    assert int(total["Failure Count"]) == 0, output
    for scenario in ("plain", "sealed"):  # both user classes completed flows
        flows = next(r for r in rows if r["Name"] == f"{scenario}:total")
        assert int(flows["Request Count"]) > 0, output


def test_rate_limited_sends_are_honoured_not_failed(tmp_path: Path) -> None:
    """With a send limit the closed-loop users exceed (1 per second per conversation), every
    429 is waited out as Retry-After asks, and shows as ``throttled``: zero failures."""
    with process_stack(tmp_path / "stack", dm_settings={"DM_SEND_RATE_PER_S": "1"}) as st:
        rows, output = locust(st, tmp_path, 15)  # users seed themselves first: not too short
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0, output
    assert int(total["Failure Count"]) == 0, output
    throttled = [r for r in rows if r["Type"] == "throttled"]
    assert throttled and all(r["Name"].endswith(":send:rate_limited") for r in throttled), rows
    assert sum(int(r["Request Count"]) for r in throttled) > 0
