"""One Locust process's load-test state: targets, seeded pairs, timetables, the recorder.

Locust's events are process-global, so this is one module-level object per
process (the local runner's, or each worker's).  A driver (loadtests.load.drive)
tells it what to do through three calls, which a worker receives as Locust
custom messages from the master: ``setup`` (targets, seed file, how many
workers and which one this is), ``start_segment`` (target rates and a
shared start time) and ``end_segment`` (stop starting flows, let in-flight
ones finish, hand over what was recorded).  A plain ``locust -f`` run, with
no driver, configures one open-ended segment from the command line instead.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gevent import sleep as gevent_sleep  # type: ignore[import-untyped]
from gevent import spawn as gevent_spawn
from gevent.event import AsyncResult, Event  # type: ignore[import-untyped]

from loadtests.load import seed
from loadtests.load.arrivals import Arrivals
from loadtests.load.scenarios import SCENARIOS
from loadtests.report import hdr
from loadtests.report.recorder import Merger, Recorder

#: The loop-lag probe's tick: it asks to sleep this long and records by how much it overslept.
LAG_TICK_S = 0.010


@dataclass(frozen=True)
class Setup:
    dm_url: str
    edge_url: str
    seed_file: str | None
    n_workers: int = 1
    worker_index: int = 0
    scan_dm_url: str = ""
    #: Users per scenario over all workers (driven runs): each worker runs the share of a
    #: scenario's rate that its own users of it are of the total.
    pools: dict[str, int] = field(default_factory=dict)


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine from /proc/stat; (0, 0) elsewhere.

    The stack, the generator and anything else on the box share its cores; a
    trial measured while the machine was already saturated (say, by another
    benchmark) says more about that load than about the modes.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


@dataclass
class _Window:
    segment: str
    wall0: float
    cpu0: float
    machine0: tuple[int, int]
    rates: dict[str, float]


@dataclass
class ProcessState:
    setup_: Setup | None = None
    driven: bool = False
    seedfile: seed.SeedFile | None = None
    next_index: dict[str, int] = field(default_factory=dict)
    arrivals: dict[str, Arrivals] = field(default_factory=lambda: {s: Arrivals() for s in SCENARIOS})
    changed: dict[str, Any] = field(default_factory=lambda: {s: Event() for s in SCENARIOS})
    recorder: Recorder = field(default_factory=Recorder)
    merger: Merger = field(default_factory=Merger)
    inflight: int = 0
    #: Users whose on_start finished (sockets open, keys fetched), here and, on the master,
    #: as last reported by each worker.
    ready_users: int = 0
    worker_ready: dict[str, int] = field(default_factory=dict)
    window: _Window | None = None
    cpu_warned: set[str] = field(default_factory=set)
    #: How late the event loop woke a sleeping greenlet in the current window (ms).
    loop_lag: Any = field(default_factory=hdr.new)
    probe: Any = None
    #: A worker asks the master which seeded pair each new user takes (``ask_pair`` sends
    #: the request; ``pair_answered`` delivers the master's answer); the master hands out
    #: the next index per scenario (``next_pair_index``).
    ask_pair: Any = None
    pending_pairs: dict[str, Any] = field(default_factory=dict)
    tickets: int = 0
    #: Users of each scenario in this process (one pair taken each).
    users_of: dict[str, int] = field(default_factory=dict)

    # -- event-loop lag -----------------------------------------------------------------
    def _probe_loop_lag(self) -> None:
        """Sleep a tick, record the overshoot: what every flow's clock slips by, at that moment.

        A CPU-bound seal or open (or a starved process) holds the gevent loop,
        so every other flow in flight reads its timestamps late; this probe
        sees the same delay, which is what the validity check bounds.
        """
        while True:
            t = time.perf_counter()
            gevent_sleep(LAG_TICK_S)
            if self.window is not None:
                hdr.record_ms(self.loop_lag, max(0.0, (time.perf_counter() - t - LAG_TICK_S) * 1000.0))

    def loop_lag_summary(self) -> dict[str, float | int | None]:
        p50, p99 = hdr.percentiles_ms(self.loop_lag, [50.0, 99.0])
        n = hdr.count(self.loop_lag)
        return {
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": float(self.loop_lag.get_max_value()) / 1000.0 if n else None,
            "count": n,
        }

    # -- configuration ------------------------------------------------------------------
    def setup(self, s: Setup, *, driven: bool) -> None:
        self.setup_ = s
        self.driven = driven
        self.seedfile = seed.SeedFile.load(Path(s.seed_file)) if s.seed_file else None
        self.next_index = {}
        if self.probe is None:
            self.probe = gevent_spawn(self._probe_loop_lag)

    @property
    def targets(self) -> seed.Targets:
        if self.setup_ is None:
            raise RuntimeError("load test not set up (no driver message and no --edge-url)")
        return seed.Targets(
            self.setup_.dm_url.rstrip("/"),
            self.setup_.edge_url.rstrip("/"),
            self.setup_.scan_dm_url.rstrip("/"),
        )

    def _share(self, scenario: str, n: int) -> float:
        """This process's part of a scenario's rate: its users' share of the scenario's users
        when the driver said how many there are (Locust may give one worker all the users of
        a class, and arrivals nobody here can take would never start), else 1/N."""
        assert self.setup_ is not None
        total = self.setup_.pools.get(scenario, 0)
        if n > 1 and total > 0:
            return self.users_of.get(scenario, 0) / total
        return 1.0 / n

    def next_pair_index(self, scenario: str) -> int:
        """The next unused index of ``scenario``'s seeded pairs, in this process."""
        k = self.next_index.get(scenario, 0)
        self.next_index[scenario] = k + 1
        return k

    def pair_answered(self, ticket: str, index: int) -> None:
        waiting = self.pending_pairs.pop(ticket, None)
        if waiting is not None:
            waiting.set(index)

    def _index_from_master(self, scenario: str, timeout_s: float = 60.0) -> int:
        self.tickets += 1
        ticket = str(self.tickets)
        answer = self.pending_pairs[ticket] = AsyncResult()
        try:
            self.ask_pair(scenario, ticket)
            return int(answer.get(timeout=timeout_s))
        finally:
            self.pending_pairs.pop(ticket, None)

    def take_pair(self, scenario: str) -> seed.Pair:
        """This process's next pair.  With workers, the master hands out the indices: Locust
        does not spread each user class evenly over the workers, so fixed strides of the
        seed file ran out on the worker that got more than its share of a class."""
        self.users_of[scenario] = self.users_of.get(scenario, 0) + 1
        if self.seedfile is None:
            return seed.make_pair(self.targets, scenario)  # self-seeding (no seed file)
        assert self.setup_ is not None
        if self.setup_.n_workers > 1 and self.ask_pair is not None:
            idx = self._index_from_master(scenario)
        else:  # one process; or a hand-run ``locust --master`` (no driver): disjoint strides
            idx = self.setup_.worker_index + self.next_pair_index(scenario) * self.setup_.n_workers
        pairs = self.seedfile.pairs.get(scenario, [])
        if idx >= len(pairs):
            raise RuntimeError(
                f"seed file has {len(pairs)} {scenario} pairs; this process needs pair {idx}"
            )
        return pairs[idx]

    def _notify(self, scenario: str) -> None:
        old, self.changed[scenario] = self.changed[scenario], Event()
        old.set()

    def wait_change(self, scenario: str, timeout_s: float) -> None:
        """Sleep until the scenario's timetable changes, or ``timeout_s``."""
        self.changed[scenario].wait(timeout_s)

    # -- segments -----------------------------------------------------------------------
    def start_segment(
        self,
        segment: str,
        rates: dict[str, float],
        t0_epoch: float,
        *,
        closed: frozenset[str] = frozenset(),
        duration_s: float | None = None,
    ) -> None:
        """Every process runs ``rate / N`` on a shared clock, shifted so arrivals interleave."""
        assert self.setup_ is not None
        n, i = max(1, self.setup_.n_workers), self.setup_.worker_index
        t0 = time.perf_counter() + (t0_epoch - time.time())
        until = None if duration_s is None else t0 + duration_s
        self.window = _Window(segment, time.time(), _cpu_seconds(), _machine_jiffies(), dict(rates))
        self.loop_lag = hdr.new()
        for s in SCENARIOS:
            rate = float(rates.get(s, 0.0))
            if s in closed:
                self.arrivals[s].configure(segment, 0.0, t0, closed=True)
            elif rate > 0:
                self.arrivals[s].configure(
                    segment, rate * self._share(s, n), t0, offset_s=i / rate, until=until
                )
            else:
                self.arrivals[s].stop()
            self._notify(s)

    def stop_all(self) -> None:
        for s in SCENARIOS:
            self.arrivals[s].stop()
            self._notify(s)

    def current_segment(self) -> str | None:
        return self.window.segment if self.window else None

    def end_segment(self, segment: str, drain_timeout_s: float = 15.0) -> dict[str, Any]:
        """Stop the timetables, wait for in-flight flows, and hand over the segment's data."""
        self.stop_all()
        deadline = time.monotonic() + drain_timeout_s
        while self.inflight > 0 and time.monotonic() < deadline:
            gevent_sleep(0.005)
        payload = self.recorder.drain(segment)
        w = self.window
        wall = time.time() - w.wall0 if w else 0.0
        cpu = _cpu_seconds() - w.cpu0 if w else 0.0
        busy, total = _machine_jiffies()
        d_busy, d_total = (busy - w.machine0[0], total - w.machine0[1]) if w else (0, 0)
        payload["process"] = {
            "segment": segment,
            "worker_index": self.setup_.worker_index if self.setup_ else 0,
            "window_s": wall,
            "cpu_pct": 100.0 * cpu / wall if wall > 0 else 0.0,
            "machine_cpu_pct": 100.0 * d_busy / d_total if d_total > 0 else None,
            "cpu_warning": segment in self.cpu_warned,
            "undrained": self.inflight,
            "recorded_total": self.recorder.recorded_total,
            "loop_lag": self.loop_lag_summary(),
        }
        self.window = None
        return payload


STATE = ProcessState()
