"""The supervisor's crash-loop backoff (``serve --workers N``), run on a fake clock.

A worker that dies at once, again and again, is respawned after growing waits (0.5 s
doubling to 30 s) while the other worker is left alone; after MAX_QUICK_DEATHS quick
deaths in a row the supervisor stops every worker and exits with the dead one's code.
No real process is started and nothing waits: ``clock``, ``sleep`` and ``popen`` are the
supervisor's injected ones.
"""

from __future__ import annotations

import logging
import signal

import pytest

from service_kernel import serving


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeProcess:
    """A worker that exits with ``code`` once it has run ``lives_s`` (None: never)."""

    def __init__(self, clock: FakeClock, pid: int, lives_s: float | None, code: int = 3) -> None:
        self.clock, self.pid, self.code = clock, pid, code
        self.dies_at = None if lives_s is None else clock.now + lives_s
        self.signals: list[int] = []

    def poll(self) -> int | None:
        if self.signals or (self.dies_at is not None and self.clock.now >= self.dies_at):
            return self.code
        return None

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def wait(self, timeout: float | None = None) -> int:
        return self.code

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)


def _run(lives: list[float | None]) -> tuple[int, list[FakeProcess], FakeClock]:
    """Supervise two worker slots; slot 0's successive processes live ``lives`` seconds
    each (the last repeating), slot 1's never die."""
    clock = FakeClock()
    spawned: list[FakeProcess] = []
    first_two: list[int] = []

    def popen(argv: list[str]) -> FakeProcess:
        pid = len(spawned) + 1
        if len(first_two) < 2:
            first_two.append(pid)
            life = lives[0] if len(first_two) == 1 else None
        else:  # a respawn: only slot 0 dies in these tests
            n = sum(1 for p in spawned if p.dies_at is not None)
            life = lives[min(n, len(lives) - 1)]
        proc = FakeProcess(clock, pid, life)
        spawned.append(proc)
        return proc

    code = serving._supervise(["serve"], 2, clock=clock, sleep=clock.sleep, popen=popen)
    return code, spawned, clock


def test_backoff_doubles_to_the_cap() -> None:
    assert [serving.backoff_s(n) for n in range(9)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]


def test_crash_loop_backs_off_then_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=serving.__name__)
    code, spawned, _ = _run([0.0])
    delays = [
        r.__dict__["delay_s"] for r in caplog.records if r.getMessage() == "worker died; respawning"
    ]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30]  # a respawn after each of 7 quick deaths
    assert any(r.getMessage() == "worker crash loop: giving up" for r in caplog.records)
    assert code == 3  # the worker's own exit code
    dying = [p for p in spawned if p.dies_at is not None]
    steady = [p for p in spawned if p.dies_at is None]
    assert len(dying) == serving.MAX_QUICK_DEATHS and len(steady) == 1
    # Each respawn waited at least its delay after the death before it (the fake clock
    # only moves in the supervisor's 0.1 s sleeps, so the wait is the delay rounded up).
    for before, after, delay in zip(dying[:-1], dying[1:], delays, strict=True):
        assert before.dies_at is not None and after.dies_at is not None
        waited = after.dies_at - before.dies_at  # each lives 0 s: born when it dies
        assert delay <= waited < delay + 0.5
    # Giving up stops the worker that was fine too (the runtime restarts the unit).
    assert steady[0].signals == [signal.SIGTERM]


def test_a_worker_that_ran_a_while_is_respawned_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A death after MIN_UPTIME_S resets the count: no wait, and no giving up."""
    caplog.set_level(logging.WARNING, logger=serving.__name__)
    long = serving.MIN_UPTIME_S + 1
    # Two quick deaths, one after a long life, then quick deaths until giving up.
    code, _, _ = _run([0.0, 0.0, long, 0.0])
    delays = [
        r.__dict__["delay_s"] for r in caplog.records if r.getMessage() == "worker died; respawning"
    ]
    assert delays[:3] == [0.5, 1, 0.0]
    assert delays[3:] == [0.5, 1, 2, 4, 8, 16, 30]
    assert code == 3
