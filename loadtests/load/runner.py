"""``python -m loadtests run``: one command from nothing to the comparison report.

1. Start the stack as processes on the embedded Redis (``--procs`` edges and
   dm services), or use the deployment at ``--dm-url``/``--edge-url``.
2. Seed users, device keys, conversations and private videos (untimed).
3. Drive Locust (loadtests.load.drive, in its own process because gevent patches
   everything it touches): warm-up, interleaved trials of plain, plain+scan,
   sealed and sealed-pq at a fixed rate, then a step load to each mode's saturation
   point under the SLO given by flags.  Progress is printed as it goes.
4. Write report.json, report.md and report.html in the run directory and
   print the summary table.

``--quick`` is the same path, short (about two minutes): its numbers show
the pipeline works, not a result to quote.  This process never imports
Locust, so it stays a plain Python program (no gevent monkey-patching).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from loadtests.load.plan import DriveConfig
from loadtests.load.scenarios import MODES, SCANNED_MODES, SUITE_OF, VIEW_PREFIX, video_ranges
from loadtests.load.seed import NO_SCAN_DM, ApiError, Targets, seed
from loadtests.report import analysis, envinfo, floor
from loadtests.report import render as report
from loadtests.report.slo import Slo
from loadtests.stack import proc_cpu
from loadtests.stack.children import StackError
from loadtests.stack.clip import ORIGIN_RELPATH
from loadtests.stack.processes import process_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Seconds of concurrency each user pool is sized for at the highest rate it will see.
POOL_SECONDS = 0.25
MAX_POOL = 400


@dataclass(frozen=True)
class Profile:
    rate: float
    rounds: int
    trial_s: float
    warmup_s: float
    step_rates: tuple[float, ...]
    step_s: float
    refine: int


QUICK = Profile(
    rate=10, rounds=5, trial_s=3, warmup_s=1, step_rates=(10, 20, 40, 80), step_s=3, refine=1
)
FULL = Profile(
    rate=20,
    rounds=5,
    trial_s=20,
    warmup_s=5,
    step_rates=tuple(round(10 * 1.5**i, 1) for i in range(10)),
    step_s=10,
    refine=2,
)


def say(text: str) -> None:
    print(f"[loadtests] {text}", flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short run end to end (about two minutes) on the embedded stack",
    )
    p.add_argument("--dir", type=Path, help="run directory (default var/loadtests/<time>)")
    where = p.add_argument_group("what to load")
    where.add_argument(
        "--procs", type=int, default=1, help="embedded stack: edge and dm processes each (default 1)"
    )
    where.add_argument("--dm-url", help="target this dm service instead of starting a stack")
    where.add_argument("--edge-url", help="... and this edge (both, or neither)")
    where.add_argument(
        "--scan-dm-url",
        help="with --dm-url: a dm that scans plain sends (DM_SCAN_LISTS), for "
        "the plain+scan mode; required when --modes includes plain+scan",
    )
    where.add_argument(
        "--server-pid",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="with --dm-url: a server process on this machine whose CPU per "
        "share to measure (dm-0=123, edge-0=456, redis=789; repeatable; "
        "`python -m loadtests.stack.processes` prints them)",
    )
    where.add_argument(
        "--redis-url",
        help="with --dm-url: the target's Redis, if this machine "
        "reaches it (the floor's binding round trip, its version in the report)",
    )
    where.add_argument(
        "--origin-path",
        help="with --edge-url: register videos by this "
        "origin path (publisher role) instead of uploading one per sender",
    )
    load = p.add_argument_group("load (defaults: full run; --quick shortens them)")
    load.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    load.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Locust workers (0: one local runner; N: master + N workers)",
    )
    load.add_argument("--rate", type=float, help="trial rate, shares/s per mode")
    load.add_argument(
        "--rounds",
        type=int,
        help="trials per mode, interleaved (>= 5 for a valid report; 2 is accepted for smoke runs)",
    )
    load.add_argument("--trial-seconds", type=float)
    load.add_argument("--warmup-seconds", type=float)
    load.add_argument(
        "--view-ratio", type=float, default=0.5, help="views per share in every segment (0: no viewing)"
    )
    load.add_argument(
        "--step-rates", help="comma-separated step-load rates (shares/s); 'none' skips the step load"
    )
    load.add_argument("--step-seconds", type=float)
    load.add_argument("--refine", type=int, help="bisection steps after the first SLO miss")
    slo = p.add_argument_group("SLO (saturation = highest rate meeting it)")
    slo.add_argument(
        "--slo-p99-ms", type=float, default=100.0, help="p99 of the whole share, ms (default 100)"
    )
    slo.add_argument(
        "--slo-errors-pct", type=float, default=0.1, help="failed shares, percent (default 0.1)"
    )
    slo.add_argument("--slo-phase", default="total", help="entry the p99 applies to")
    slo.add_argument(
        "--max-loop-lag-ms",
        type=float,
        default=Slo().loop_lag_p99_ms,
        help="p99 of the generator's event-loop lag above which a trial is not "
        "valid (default %(default)g)",
    )
    p.add_argument(
        "--fail-invalid",
        action="store_true",
        help="exit 1 when the validity check fails (default: report it, exit 0)",
    )
    return p


@dataclass
class Options:
    run_dir: Path
    profile: Profile
    modes: list[str]
    workers: int
    view_ratio: float
    procs: int
    dm_url: str | None
    edge_url: str | None
    origin_path: str | None
    slo: Slo
    quick: bool
    fail_invalid: bool
    scan_dm_url: str | None = None
    server_pids: dict[str, int] = field(default_factory=dict)
    redis_url: str | None = None


def options(argv: list[str] | None) -> Options:
    p = parser()
    a = p.parse_args(argv)
    base = QUICK if a.quick else FULL
    steps = base.step_rates
    if a.step_rates:
        steps = (
            ()
            if a.step_rates.strip() == "none"
            else tuple(float(x) for x in a.step_rates.split(",") if x.strip())
        )
    prof = Profile(
        a.rate or base.rate,
        a.rounds or base.rounds,
        a.trial_seconds or base.trial_s,
        base.warmup_s if a.warmup_seconds is None else a.warmup_seconds,
        tuple(sorted(steps)),
        a.step_seconds or base.step_s,
        base.refine if a.refine is None else a.refine,
    )
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        p.error(f"--modes must be some of {','.join(MODES)}")
    if prof.rounds < 2 or prof.rate <= 0 or prof.trial_s <= 0 or prof.step_s <= 0:
        p.error("--rounds >= 2, --rate, --trial-seconds and --step-seconds > 0")
    if any(r <= 0 for r in prof.step_rates) or prof.refine < 0 or a.view_ratio < 0:
        p.error("step rates > 0, --refine >= 0, --view-ratio >= 0")
    if not a.max_loop_lag_ms > 0:
        p.error("--max-loop-lag-ms must be > 0")
    if bool(a.dm_url) != bool(a.edge_url):
        p.error("--dm-url and --edge-url go together")
    if a.scan_dm_url and not a.dm_url:
        p.error("--scan-dm-url is for --dm-url targets (the embedded stack starts its own)")
    if a.dm_url and not a.scan_dm_url and set(modes) & SCANNED_MODES:
        p.error(NO_SCAN_DM)
    if a.origin_path and not a.edge_url:
        p.error("--origin-path is for --edge-url targets (the embedded stack has its own)")
    if a.procs < 1 or a.workers < 0:
        p.error("--procs >= 1, --workers >= 0")
    server_pids: dict[str, int] = {}
    for item in a.server_pid:
        name, _, pid = item.partition("=")
        if not name or not pid.isdigit() or proc_cpu.role(name) not in proc_cpu.ROLES:
            p.error(
                f"--server-pid {item!r}: NAME=PID with NAME one of "
                f"{', '.join(proc_cpu.ROLES)} (optionally -N)"
            )
        server_pids[name] = int(pid)
    if (server_pids or a.redis_url) and not a.dm_url:
        p.error(
            "--server-pid and --redis-url are for --dm-url targets (the embedded stack knows its own)"
        )
    run_dir = a.dir or REPO_ROOT / "var" / "loadtests" / time.strftime("%Y%m%d-%H%M%S")
    return Options(
        run_dir,
        prof,
        modes,
        a.workers,
        a.view_ratio,
        a.procs,
        a.dm_url,
        a.edge_url,
        a.origin_path,
        Slo(
            p99_ms=a.slo_p99_ms,
            error_pct=a.slo_errors_pct,
            phase=a.slo_phase,
            loop_lag_p99_ms=a.max_loop_lag_ms,
        ),
        a.quick,
        a.fail_invalid,
        a.scan_dm_url,
        server_pids,
        a.redis_url,
    )


def pools(o: Options) -> dict[str, int]:
    """Users per scenario: enough for POOL_SECONDS of flows at the highest rate used."""
    top = max((o.profile.rate, *o.profile.step_rates))
    out = {}
    for m in o.modes:
        out[m] = min(MAX_POOL, math.ceil(top * POOL_SECONDS) + 2)
        if o.view_ratio > 0:
            out[VIEW_PREFIX + m] = min(MAX_POOL, math.ceil(top * o.view_ratio * POOL_SECONDS) + 2)
    return out


def meta(o: Options, target: str, redis_url: str | None, user_pools: dict[str, int]) -> dict[str, Any]:
    return {
        "command": ["python", "-m", "loadtests", "run", *sys.argv[2:]],
        "modes": o.modes,
        "slo": o.slo.as_dict(),
        "config": {
            **asdict(o.profile),
            "trial_rate": o.profile.rate,
            "view_ratio": o.view_ratio,
            "workers": o.workers,
            "procs": o.procs,
            "quick": o.quick,
            "target": target,
            "pools": user_pools,
            "ranges": video_ranges(),
        },
        "environment": envinfo.collect(redis_url),
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def drive(cfg_path: Path) -> int:
    """Run the driver process; Ctrl-C (or SIGTERM) stops it gracefully, keeping its data."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtests.load.drive", str(cfg_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        return proc.wait()
    except KeyboardInterrupt:
        say("interrupted: stopping the load (the segments measured so far are kept)")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def execute(
    o: Options,
    targets: Targets,
    origin_path: str | None,
    target: str,
    redis_url: str | None,
    server_pids: dict[str, int],
) -> int:
    user_pools = pools(o)
    if any(m in SUITE_OF for m in o.modes):
        say("measuring the floor's primitives in-process (seal, open, grant check, binding)")
        floor.save(o.run_dir, floor.measure(redis_url))
    extra = max(1, o.workers)  # each worker takes a stride of the pairs
    say(
        f"seeding {sum(user_pools.values()) + extra * len(user_pools)} sender/recipient pairs "
        f"({', '.join(f'{s} {n}' for s, n in user_pools.items())} users)"
    )
    t0 = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 2 or done == total:
            last[0] = time.monotonic()
            say(f"  seeded {done}/{total}")

    seeded = seed(
        targets,
        {s: n + extra for s, n in user_pools.items()},
        origin_path=origin_path,
        progress=progress,
    )
    seed_path = o.run_dir / "seed.json"
    seeded.save(seed_path)
    say(f"seeded in {time.monotonic() - t0:.1f} s")
    (o.run_dir / analysis.RUN_FILE).write_text(
        json.dumps(meta(o, target, redis_url, user_pools), indent=1)
    )
    cfg = DriveConfig(
        targets.dm_url,
        targets.edge_url,
        str(seed_path),
        str(o.run_dir),
        user_pools,
        modes=o.modes,
        workers=o.workers,
        view_ratio=o.view_ratio,
        warmup_s=o.profile.warmup_s,
        rounds=o.profile.rounds,
        trial_rate=o.profile.rate,
        trial_s=o.profile.trial_s,
        step_rates=list(o.profile.step_rates),
        step_s=o.profile.step_s,
        refine=o.profile.refine,
        slo=o.slo.as_dict(),
        scan_dm_url=targets.scan_dm_url,
        server_pids=server_pids,
    )
    cfg_path = o.run_dir / "drive.json"
    cfg.save(cfg_path)
    say(f"driving Locust ({'1 local runner' if not o.workers else f'master + {o.workers} workers'})")
    rc = drive(cfg_path)
    if rc != 0:
        say(f"the driver exited with {rc}")
    return rc


def run(o: Options) -> int:
    o.run_dir.mkdir(parents=True, exist_ok=True)
    say(f"run directory {o.run_dir}")
    rc = 0
    try:
        if o.dm_url and o.edge_url:
            targets = Targets(
                o.dm_url.rstrip("/"), o.edge_url.rstrip("/"), (o.scan_dm_url or "").rstrip("/")
            )
            rc = execute(
                o, targets, o.origin_path, f"{o.dm_url} + {o.edge_url}", o.redis_url, o.server_pids
            )
        else:
            say(f"starting Redis (embedded), {o.procs} edge and {o.procs} dm process(es)")
            with process_stack(o.run_dir / "stack", procs=o.procs) as st:
                say(f"stack up: dm {st.dm_url}, edge {st.edge_url}")
                rc = execute(
                    o,
                    Targets(st.dm_url, st.edge_url, st.scan_dm_url),
                    ORIGIN_RELPATH,
                    f"embedded stack: {o.procs} edge + {o.procs} dm processes, "
                    "embedded Redis, 127.0.0.1",
                    st.redis_url,
                    st.pids(),
                )
                st.check_alive()
                say("stopping the stack")
    except KeyboardInterrupt:
        rc = 130
    except (StackError, ApiError, OSError) as exc:
        say(f"error: {exc}")
        return 1
    if not (o.run_dir / analysis.SEGMENTS_FILE).exists():
        say("no measurements were recorded; no report")
        return rc or 1
    say("writing the report")
    paths = report.write_report(o.run_dir)
    doc = json.loads(paths["json"].read_text())
    print()
    print(report.summary_text(doc))
    print()
    for kind, path in paths.items():
        print(f"report ({kind}): {path}")
    if rc:
        return rc
    return 1 if o.fail_invalid and not doc["validity"]["valid"] else 0


def main(argv: list[str] | None = None) -> int:
    o = options(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(o)
    finally:
        signal.signal(signal.SIGTERM, previous)
