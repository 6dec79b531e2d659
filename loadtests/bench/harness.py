"""What every benchmark shares once its bed is up: progress lines, the working directory,
the flags they all take, and running with every child stopped on the way out, then
reporting (table, JSON, exit status).

Process control itself (children, readiness, logs, plain HTTP) is the stack's
(:mod:`loadtests.stack.children`); it is re-exported here so a benchmark has one place to
import its plumbing from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from loadtests.stack.children import (
    HOST,
    REPO_ROOT,
    StackError,
    child_process,
    fetch,
    log_tail,
    stop_process,
    wait_ready,
)

__all__ = [
    "HOST",
    "MARKER",
    "REPO_ROOT",
    "BenchError",
    "StackError",
    "child_process",
    "common_flags",
    "fetch",
    "log_tail",
    "parse_result",
    "run_and_report",
    "speaker",
    "stop_process",
    "wait_ready",
    "workdir",
]

#: Prefix of the one JSON line a load generator (wrk's Lua or a Python child) prints.
MARKER = "BENCH_RESULT "


class BenchError(Exception):
    """The benchmark could not be set up or run (as opposed to a run that measured badly)."""


def speaker(name: str) -> Callable[[str], None]:
    """A benchmark's progress line: to stderr, so that stdout stays the report (or pure JSON)."""

    def say(message: str) -> None:
        print(f"[bench {name}] {message}", file=sys.stderr, flush=True)

    return say


def common_flags(p: argparse.ArgumentParser, *, workdir: bool = False) -> argparse.ArgumentParser:
    """``--json`` (and ``--dir`` for benchmarks that keep a working directory)."""
    if workdir:
        p.add_argument(
            "--dir",
            type=Path,
            help="working directory, recreated and kept (default: a temporary one, removed at the end)",
        )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (the table then goes to stderr)",
    )
    return p


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m loadtests.bench NAME``, its module docstring as the help."""
    return argparse.ArgumentParser(
        prog=f"python -m loadtests.bench {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_flags(
    p: argparse.ArgumentParser,
    *,
    duration: int,
    rounds: int,
    connections: int,
    warmup: int | None = None,
) -> argparse.ArgumentParser:
    """The flags every load-driving benchmark shares, with its own defaults."""
    p.add_argument(
        "--duration", type=int, default=duration, help=f"seconds per measured run ({duration})"
    )
    p.add_argument("--rounds", type=int, default=rounds, help=f"interleaved rounds ({rounds})")
    if warmup is not None:
        p.add_argument(
            "--warmup",
            type=int,
            default=warmup,
            help=f"seconds of warm-up per workload ({warmup}; 0: none)",
        )
    p.add_argument(
        "--connections", type=int, default=connections, help=f"keep-alive connections ({connections})"
    )
    return p


def parse_result(stdout: str, what: str, stderr: str = "") -> dict[str, Any]:
    """The :data:`MARKER` line a generator printed, as JSON; none is a failed run."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            doc: dict[str, Any] = json.loads(line[len(MARKER) :])
            return doc
    raise BenchError(f"{what} printed no result:\n{stdout[-800:]}\n{stderr[-800:]}")


def workdir(stack: contextlib.ExitStack, wanted: Path | None, name: str) -> Path:
    """A fresh directory; a temporary one is removed after every process in it has stopped.

    A given ``--dir`` is only wiped if it is empty or an earlier run of this benchmark
    made it (it carries a marker file), so a mistyped path cannot delete someone's files.
    """
    mark = f".bench-{name}"
    if wanted is not None:
        if wanted.exists() and any(wanted.iterdir()) and not (wanted / mark).exists():
            raise BenchError(f"{wanted} is not empty and was not made by this benchmark")
        shutil.rmtree(wanted, ignore_errors=True)
        wanted.mkdir(parents=True)
        (wanted / mark).touch()
        return wanted.resolve()
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    return root


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every child is stopped on the way out."""
    raise KeyboardInterrupt


def run_and_report(
    run: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    *,
    as_json: bool,
    say: Callable[[str], None],
) -> int:
    """What a benchmark's ``main`` does once its options are parsed: run with SIGTERM
    unwinding like Ctrl-C (so every child process is stopped), print the table (to stderr
    when stdout carries the JSON), and exit 0 on a valid measurement, 1 if invalid or
    failed, 130 if interrupted.  A missed target is not a failure."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run()
    except KeyboardInterrupt:
        say("interrupted; every process was stopped")
        return 130
    except (BenchError, StackError) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(render(report), file=sys.stderr if as_json else sys.stdout, flush=True)
    if as_json:
        print(json.dumps(report, indent=2))
    return 0 if report["valid"] else 1
