"""The load driver: Locust as a library, running a plan of measured segments.

``python -m loadtests.load.drive CONFIG.json`` (the runner writes the config and
starts this in its own process, because Locust's gevent patches the whole
process).  With ``workers: 0`` it runs one Locust LocalRunner in this
process; with ``workers: N`` it is a Locust MasterRunner on 127.0.0.1 and
starts N ordinary ``locust --worker`` processes on the same locustfile.

Users are spawned once, for the whole plan; each segment only changes the
target arrival rates (loadtests.load.arrivals), so no segment measures a ramp-up.
The plan: a warm-up per mode, then trials in rounds (each round runs every
mode once, in rotated order, at the same fixed rate), then a step load that
raises all modes' rates together until each mode misses the SLO, then
bisects between its last passing and first failing rate.  Each segment is
appended to ``segments.jsonl`` with its merged histograms as soon as it
ends, so an interrupted run still leaves a report's worth of data.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import locust
from locust import User, events
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, Runner

from loadtests.load import locustfile, push
from loadtests.load.plan import DriveConfig, Planned, fixed_plan, rotated
from loadtests.load.scenarios import VIEW_PREFIX, key
from loadtests.load.worker_state import STATE, Setup
from loadtests.report import hdr
from loadtests.report.recorder import SegmentData
from loadtests.report.slo import Slo, StallRetries, Verdict, judge
from loadtests.stack import proc_cpu
from service_kernel.redis_process import free_port

HOST = "127.0.0.1"
SEGMENTS_FILE = "segments.jsonl"
DRIVER_FILE = "driver.json"
#: Time between announcing a segment and its first intended arrival (workers get ready).
LEAD_S = 0.3
#: Seconds the servers' idle CPU is sampled for, with every user connected, before the plan.
IDLE_S = 2.0


def say(text: str) -> None:
    print(text, flush=True)


class Stopping:
    """Set by SIGTERM/SIGINT: finish the current segment, keep it, skip the rest."""

    requested = False

    @classmethod
    def request(cls, signum: int, frame: FrameType | None) -> None:
        cls.requested = True


def sleep_until(deadline: float) -> None:
    while not Stopping.requested and (left := deadline - time.time()) > 0:
        time.sleep(min(left, 0.1))


# -- controlling Locust: in this process, or as the master of worker processes --------------


class Control:
    """Start and end segments; a local runner calls the process state directly."""

    def __init__(self, env: Environment, runner: Runner, workers: int) -> None:
        self.env, self.runner, self.workers = env, runner, workers

    def setup(self, cfg: DriveConfig) -> None:
        STATE.setup(Setup(cfg.dm_url, cfg.edge_url, cfg.seed_file, 1, 0, cfg.scan_dm_url), driven=True)

    def ready(self) -> int:
        """Users that finished on_start (sockets open, device keys fetched)."""
        return STATE.ready_users

    def start(self, segment: str, rates: dict[str, float], t0: float, duration_s: float) -> None:
        STATE.start_segment(segment, rates, t0, duration_s=duration_s)

    def end(self, segment: str) -> tuple[SegmentData, list[dict[str, Any]]]:
        payload = STATE.end_segment(segment)
        process = payload.pop("process")
        STATE.merger.add(payload)
        return STATE.merger.take(segment), [process]

    def close(self) -> None:
        self.runner.quit()


class MasterControl(Control):
    """The same over Locust custom messages; worker reports carry the histograms."""

    def __init__(
        self, env: Environment, runner: MasterRunner, workers: int, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        super().__init__(env, runner, workers)
        self.master = runner
        self.procs = procs
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.last_report: dict[str, float] = {}
        runner.register_message(locustfile.MSG_DATA, self._on_data)
        runner.register_message(locustfile.MSG_TAKE, self._on_take)
        hook: Any = env.events.worker_report
        hook.add_listener(self._on_report)

    def _on_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        self.last_report[client_id] = time.monotonic()

    def _on_data(self, environment: Environment, msg: Any, **_: Any) -> None:
        payload = dict(msg.data)
        process = payload.pop("process")
        STATE.merger.add(payload)
        self.replies.setdefault(process["segment"], []).append(process)

    def _on_take(self, environment: Environment, msg: Any, **_: Any) -> None:
        """A worker's new user asks which seeded pair is its: the next one, whoever asks."""
        index = STATE.next_pair_index(str(msg.data["scenario"]))
        self.master.send_message(
            locustfile.MSG_PAIR, {"ticket": msg.data["ticket"], "index": index}, client_id=msg.node_id
        )

    def ready(self) -> int:
        """As the workers last reported (every few seconds)."""
        return sum(STATE.worker_ready.values())

    def setup(self, cfg: DriveConfig) -> None:
        STATE.setup(
            Setup(cfg.dm_url, cfg.edge_url, cfg.seed_file, self.workers, 0, cfg.scan_dm_url), driven=True
        )
        self.master.send_message(
            locustfile.MSG_SETUP,
            {
                "dm_url": cfg.dm_url,
                "edge_url": cfg.edge_url,
                "seed_file": cfg.seed_file,
                "n_workers": self.workers,
                "scan_dm_url": cfg.scan_dm_url,
                "pools": cfg.pools,
            },
        )

    def start(self, segment: str, rates: dict[str, float], t0: float, duration_s: float) -> None:
        STATE.start_segment(segment, rates, t0)  # the master's own window (CPU) only
        self.master.send_message(
            locustfile.MSG_SEGMENT,
            {"segment": segment, "rates": rates, "t0": t0, "duration_s": duration_s},
        )

    def end(self, segment: str, timeout_s: float = 60.0) -> tuple[SegmentData, list[dict[str, Any]]]:
        STATE.end_segment(segment)
        self.master.send_message(locustfile.MSG_END, {"segment": segment})
        deadline = time.monotonic() + timeout_s
        while len(self.replies.get(segment, [])) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(self.replies.get(segment, []))} of "
                    f"{self.workers} workers answered for {segment}"
                )
            time.sleep(0.01)
        return STATE.merger.take(segment), self.replies.pop(segment)

    def close(self) -> None:
        """Quit once every worker has reported after the last flow, so Locust's counts are whole."""
        since = time.monotonic()
        deadline = since + 10.0
        while time.monotonic() < deadline and any(
            self.last_report.get(c.id, 0.0) <= since for c in self.master.clients.all
        ):
            time.sleep(0.05)
        self.master.quit()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait(10)


def start_workers(n: int, port: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """``n`` standard ``locust --worker`` processes on this locustfile, on loopback."""
    procs = []
    for i in range(n):
        log = open(log_dir / f"worker-{i}.log", "wb")  # noqa: SIM115 - lives as long as the child
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "locust",
                    "-f",
                    locustfile.__file__,
                    "--worker",
                    "--master-host",
                    HOST,
                    "--master-port",
                    str(port),
                    "--loglevel",
                    "WARNING",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def _fire_init(env: Environment, runner: Runner) -> None:
    """What ``locust`` itself does after creating a runner (the locustfile's hooks hear it)."""
    hook: Any = env.events.init
    hook.fire(environment=env, runner=runner, web_ui=None)


def make_control(cfg: DriveConfig, out: Path) -> Control:
    classes: list[type[User]] = [locustfile.USER_CLASSES[s] for s, n in cfg.pools.items() if n > 0]
    env = Environment(user_classes=list(classes), events=events, host=cfg.dm_url)
    env.stop_timeout = 0.0
    if cfg.workers <= 0:
        local: LocalRunner = env.create_local_runner()
        _fire_init(env, local)
        return Control(env, local, 0)
    port = free_port()
    master = env.create_master_runner(HOST, port)
    _fire_init(env, master)
    procs = start_workers(cfg.workers, port, out)
    control = MasterControl(env, master, cfg.workers, procs)
    deadline = time.monotonic() + 60
    while len(master.clients.ready) < cfg.workers:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a locust worker exited with {p.returncode} (see {out})")
        if time.monotonic() > deadline:
            raise RuntimeError("locust workers did not connect within 60 s")
        time.sleep(0.05)
    return control


def spawn(control: Control, cfg: DriveConfig) -> None:
    for scenario, n in cfg.pools.items():
        locustfile.USER_CLASSES[scenario].fixed_count = n
    total = sum(cfg.pools.values())
    classes: list[type[User]] = [locustfile.USER_CLASSES[s] for s, n in cfg.pools.items() if n > 0]
    control.runner.start(total, spawn_rate=min(100.0, float(total)), user_classes=classes)
    deadline = time.monotonic() + 60 + total / 20
    while (ready := control.ready()) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ready} of {total} users started")
        time.sleep(0.05)


# -- the plan --------------------------------------------------------------------------------


class Driver:
    def __init__(self, cfg: DriveConfig, control: Control, out: Path) -> None:
        self.cfg, self.control, self.out = cfg, control, out
        self.slo = Slo.from_dict(cfg.slo)
        self.index = 0
        self.t_start = time.monotonic()
        self.planned_total = (
            len(cfg.modes) * (1 if cfg.warmup_s > 0 else 0) + len(cfg.modes) * cfg.rounds
        )
        #: Steps run once more because the generator stalled (at most one per mode).
        self.stall_retries = StallRetries(len(cfg.modes))
        self.step_budget = len(cfg.modes) * (len(cfg.step_rates) + cfg.refine + 1)

    def rates(self, mode: str, rate: float) -> dict[str, float]:
        out = {mode: rate}
        if self.cfg.view_ratio > 0 and self.cfg.pools.get(VIEW_PREFIX + mode, 0) > 0:
            out[VIEW_PREFIX + mode] = rate * self.cfg.view_ratio
        return out

    def run_segment(self, p: Planned) -> Verdict:
        self.index += 1
        segment = f"{self.index:03d}-{p.kind}-{p.mode}-{p.round}"
        elapsed = time.monotonic() - self.t_start
        left = self.planned_total + self.step_budget - self.index + 1
        say(
            f"[{_clock(elapsed)}] segment {self.index} of <={self.planned_total + self.step_budget}"
            f": {p.label()}  ({p.duration_s:g} s; <={_clock(left * (p.duration_s + 0.6))} left)"
        )
        rates = self.rates(p.mode, p.rate)
        t0 = time.time() + LEAD_S
        cpu0, wall0 = proc_cpu.sample(self.cfg.server_pids), time.time()
        self.control.start(segment, rates, t0, p.duration_s)
        sleep_until(t0 + p.duration_s + 0.05)  # the last slot is due just before the end
        data, processes = self.control.end(segment)
        servers = {
            "window_s": round(time.time() - wall0, 6),
            "cpu_s": proc_cpu.used(cpu0, proc_cpu.sample(self.cfg.server_pids)),
        }
        verdict = judge(self.slo, p.mode, p.rate, p.duration_s, data, processes)
        views = {
            s: judge(self.slo, s, r, p.duration_s, data, processes).as_dict()
            for s, r in rates.items()
            if s != p.mode
        }
        record = {
            "segment": segment,
            "kind": p.kind,
            "mode": p.mode,
            "round": p.round,
            "rates": rates,
            "target_rps": p.rate,
            "duration_s": p.duration_s,
            "started_at": t0,
            "processes": processes,
            "servers": servers,
            "verdict": verdict.as_dict(),
            "view_verdicts": views,
            "data": data.to_json(),
        }
        with open(self.out / SEGMENTS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        total = data.hists.get(key(p.mode, "total"))
        p50 = hdr.percentile_ms(total, 50) if total is not None else None
        flags = "" if not verdict.problems else "  ! " + "; ".join(verdict.problems)
        slo = "" if p.kind != "step" else ("  SLO met" if verdict.meets_slo else "  SLO missed")
        say(
            f"{'':>8}achieved {verdict.achieved_rps:6.1f}/s  p50 {_ms(p50)}  "
            f"p99 {_ms(verdict.latency_ms)}  failed {verdict.failed}{slo}{flags}"
        )
        return verdict

    def run(self) -> dict[str, Any]:
        for p in fixed_plan(self.cfg):
            if Stopping.requested:
                return {}
            self.run_segment(p)
        return self.step_load()

    def run_step(self, p: Planned) -> Verdict:
        """One step, run once more if it missed while the generator stalled (StallRetries)."""
        return self.stall_retries.run(
            lambda: self.run_segment(p),
            lambda: say("           the generator stalled during that step: running it once more"),
        )

    def step_load(self) -> dict[str, Any]:
        """Raise every mode together; a mode stops at its first miss, then bisect."""
        passed: dict[str, float | None] = dict.fromkeys(self.cfg.modes)
        failed: dict[str, float | None] = dict.fromkeys(self.cfg.modes)
        active = list(self.cfg.modes)
        for level, rate in enumerate(self.cfg.step_rates, start=1):
            for m in rotated(active, level - 1):
                if Stopping.requested:
                    break
                v = self.run_step(Planned("step", m, rate, self.cfg.step_s, level))
                if v.meets_slo:
                    passed[m] = rate
                else:
                    failed[m] = rate
                    active.remove(m)
            if not active:
                break
        level = len(self.cfg.step_rates)
        for _ in range(self.cfg.refine):
            level += 1
            todo = [m for m in self.cfg.modes if failed[m] is not None]
            for m in rotated(todo, level):
                if Stopping.requested:
                    break
                lo, hi = passed[m], failed[m]
                assert hi is not None
                mid = round(math.sqrt(lo * hi), 1) if lo else round(hi / 2, 1)
                if mid <= 0 or (lo is not None and not lo < mid < hi):
                    continue
                v = self.run_step(Planned("step", m, mid, self.cfg.step_s, level, bisect=True))
                if v.meets_slo:
                    passed[m] = mid
                else:
                    failed[m] = mid
        return {"saturation_rps": passed, "first_miss_rps": failed}


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60}:{s % 60:02d}"


def _ms(v: float | None) -> str:
    return "    n/a" if v is None else f"{v:7.2f} ms"


def locust_totals(env: Environment) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (name, _method), entry in env.stats.entries.items():
        cur = out.setdefault(name, {"requests": 0, "failures": 0})
        cur["requests"] += int(entry.num_requests)
        cur["failures"] += int(entry.num_failures)
    return dict(sorted(out.items()))


def write_summary(
    out: Path,
    cfg: DriveConfig,
    env: Environment,
    started: float,
    cpu_warning: bool,
    outcome: dict[str, Any],
) -> None:
    """driver.json: Locust's own counts (a cross-check of the histograms) and the run's facts."""
    recorded: dict[str, int] = {}
    seg_file = out / SEGMENTS_FILE
    for line in seg_file.read_text().splitlines() if seg_file.exists() else []:
        for proc in json.loads(line)["processes"]:
            recorded[str(proc["worker_index"])] = int(proc["recorded_total"])
    doc = {
        "locust_version": locust.__version__,
        "python": platform.python_version(),
        "workers": cfg.workers,
        "distributed": cfg.workers > 0,
        "delivery": "websocket" if push.websocket_available() else "poll",
        "started_at": started,
        "ended_at": time.time(),
        "cpu_warning": cpu_warning,
        "locust_stats": locust_totals(env),
        "worker_recorded": recorded,
        **outcome,
    }
    (out / DRIVER_FILE).write_text(json.dumps(doc, indent=1))


def idle_server_cpu(cfg: DriveConfig, seconds: float = IDLE_S) -> dict[str, Any]:
    """The servers' CPU with every user connected and no flow running (tailers, heartbeats).

    A trial's CPU per share includes this background; at low rates it weighs a lot, so
    the report also gives the cost per share net of it (the marginal cost of a share).
    """
    if not cfg.server_pids or Stopping.requested:
        return {}
    before, t0 = proc_cpu.sample(cfg.server_pids), time.time()
    sleep_until(t0 + seconds)
    return {
        "window_s": round(time.time() - t0, 6),
        "cpu_s": proc_cpu.used(before, proc_cpu.sample(cfg.server_pids)),
    }


def drive(cfg: DriveConfig) -> int:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SEGMENTS_FILE).unlink(missing_ok=True)
    control = make_control(cfg, out)
    started = time.time()
    outcome: dict[str, Any] = {}
    try:
        control.setup(cfg)
        spawn(control, cfg)
        idle = idle_server_cpu(cfg)
        outcome = Driver(cfg, control, out).run()
        if idle:
            outcome["server_idle"] = idle
    finally:
        control.runner.stop()
        cpu_warning = bool(control.runner.cpu_warning_emitted)
        control.close()
        if isinstance(control, MasterControl):
            cpu_warning = cpu_warning or bool(control.master.worker_cpu_warning_emitted)
        write_summary(out, cfg, control.env, started, cpu_warning, outcome)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.load.drive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, help="JSON written by the runner")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, Stopping.request)
    signal.signal(signal.SIGINT, Stopping.request)
    return drive(DriveConfig.load(a.config))


if __name__ == "__main__":
    sys.exit(main())
