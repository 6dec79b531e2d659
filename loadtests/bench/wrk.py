"""wrk, one thread, driven by one of the Lua scripts beside this module (``lua/*.lua``).

Each script reads its requests from a file prepared before the run (so the run only hands
out strings) and ends with one ``BENCH_RESULT {json}`` line (:data:`harness.MARKER`):

``requests.lua``  a file of request lines (:func:`request_line`); checks every response's
                  status and size (:class:`WrkSpec`, :class:`WrkRun`)
``cycle.lua``     a file of GET paths with one Authorization and one Range for all
``trace.lua``     a trace of GETs, each with its own Authorization and Range, in order
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import HOST, BenchError, parse_result

LUA_DIR = Path(__file__).resolve().parent / "lua"


@dataclass(frozen=True)
class Wrk:
    binary: str
    version: str

    @classmethod
    def find(cls) -> Wrk:
        """wrk from PATH, with its version (``wrk 4.1.0``) for the report."""
        binary = shutil.which("wrk")
        if binary is None:
            raise BenchError("wrk is not on PATH (apt-get install wrk)")
        probe = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        banner = (probe.stdout or probe.stderr).split("\n", 1)[0]  # "wrk 4.1.0 [epoll] ..."
        return cls(binary, banner.split(" [", 1)[0].strip() or "wrk")

    def run(
        self, script: str, port: int, duration_s: float, connections: int, args: Sequence[str]
    ) -> dict[str, Any]:
        """One run of ``lua/<script>`` against ``127.0.0.1:port``: the script's result line."""
        cmd = [
            self.binary,
            "-t1",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_DIR / script),
            f"http://{HOST}:{port}",
            "--",
            *args,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=duration_s + 120)
        return parse_result(done.stdout, "wrk", done.stderr)


# -- requests.lua: a file of request lines, every response checked ----------------------------


def request_line(method: str, path: str, *, auth: str = "", key: str = "", body: str = "") -> str:
    """One line of a request file; the fields may hold neither tabs nor newlines."""
    fields = (method, path, auth, key, body)
    if any("\t" in f or "\n" in f for f in fields):
        raise BenchError(f"a request field holds a tab or newline: {path}")
    return "\t".join(fields)


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class WrkSpec:
    port: int
    lines_file: Path
    auth_file: Path  # the default Authorization value, for lines that leave it empty
    duration_s: float
    connections: int
    expected_status: int
    expected_len: int = -1  # -1: any body length
    extra_header: str = "-"  # "Name: value" sent with every request, or "-"


@dataclass(frozen=True)
class WrkRun:
    """What wrk saw in one run; ``ok`` counts only responses of the expected status and size."""

    requests: int
    duration_s: float
    ok: int
    bad_status: int
    bad_length: int
    first_bad: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float
    sent: int
    nlines: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> WrkRun:
        return cls(
            int(doc["requests"]),
            doc["duration_us"] / 1e6,
            int(doc["ok"]),
            int(doc["bad_status"]),
            int(doc["bad_length"]),
            int(doc["first_bad"]),
            int(doc["connect"]) + int(doc["read"]) + int(doc["write"]),
            int(doc["timeout"]),
            doc["p50_us"] / 1000,
            doc["p99_us"] / 1000,
            int(doc["sent"]),
            int(doc["nlines"]),
        )

    @property
    def rps(self) -> float:
        """Good responses per second: a refused or malformed answer is not throughput."""
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.bad_status + self.bad_length + self.socket_errors + self.timeouts

    def problems(self, *, once: bool) -> list[str]:
        """Why this run cannot be trusted (empty if it can)."""
        out = []
        if self.ok == 0:
            out.append("no good responses")
        if self.bad_status:
            out.append(f"{self.bad_status} responses of the wrong status (first: {self.first_bad})")
        if self.bad_length:
            out.append(f"{self.bad_length} responses of the wrong size")
        if self.socket_errors or self.timeouts:
            out.append(f"{self.socket_errors} socket errors, {self.timeouts} timeouts")
        if once and self.sent > self.nlines:
            out.append(
                f"request file wrapped ({self.sent} sent, {self.nlines} lines): "
                "some requests were repeats"
            )
        return out


def run_requests(wrk: Wrk, spec: WrkSpec) -> WrkRun:
    """One ``requests.lua`` run."""
    return WrkRun.from_doc(
        wrk.run(
            "requests.lua",
            spec.port,
            spec.duration_s,
            spec.connections,
            [
                str(spec.lines_file),
                str(spec.auth_file),
                str(spec.expected_status),
                str(spec.expected_len),
                spec.extra_header,
            ],
        )
    )
