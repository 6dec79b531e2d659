"""The Range-request generator the edge and nginx benchmarks drive: GETs cycling through a
file of targets, each with one fixed ``Authorization`` and ``Range``, as fast as the server
answers.  wrk with ``lua/cycle.lua`` when it is on PATH; otherwise an aiohttp client in its
own process (``python -m loadtests.bench.rangegen``), which prints the same result line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import HOST, MARKER, REPO_ROOT, BenchError, parse_result
from .wrk import Wrk

#: One 64 KiB segment: a realistic small player request, and small enough that
#: per-request work (not copying bytes) dominates, which is what is measured.
RANGE_BYTES = 64 * 1024
RANGE_HEADER = f"bytes=0-{RANGE_BYTES - 1}"


@dataclass(frozen=True)
class LoadSpec:
    port: int
    targets_file: Path
    auth_file: Path
    duration_s: int
    connections: int


@dataclass(frozen=True)
class RawRun:
    """What a generator reports for one run (both generators emit the same JSON)."""

    requests: int
    duration_s: float
    bytes: int
    socket_errors: int
    timeouts: int
    status_errors: int  # responses >= 400
    non_206: int | None  # exact count where the generator checks statuses (Python only)
    p50_ms: float
    p99_ms: float
    sent: int
    ntargets: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RawRun:
        return cls(
            int(doc["requests"]),
            doc["duration_us"] / 1e6,
            int(doc["bytes"]),
            int(doc["connect"]) + int(doc["read"]) + int(doc["write"]),
            int(doc["timeout"]),
            int(doc["status"]),
            None if doc.get("non206") is None else int(doc["non206"]),
            doc["p50_us"] / 1000,
            doc["p99_us"] / 1000,
            int(doc["sent"]),
            int(doc["npaths"]),
        )


@dataclass(frozen=True)
class Generator:
    name: str
    version: str
    run: Callable[[LoadSpec], RawRun]


def wrk_generator(wrk: Wrk) -> Generator:
    """wrk, one thread, ``cycle.lua`` over the file of targets."""

    def run(spec: LoadSpec) -> RawRun:
        return RawRun.from_doc(
            wrk.run(
                "cycle.lua",
                spec.port,
                spec.duration_s,
                spec.connections,
                [str(spec.targets_file), str(spec.auth_file), RANGE_HEADER],
            )
        )

    return Generator("wrk", wrk.version, run)


def python_generator() -> Generator:
    """Fallback when wrk is missing: aiohttp client in a separate process (see :func:`main`)."""
    import aiohttp

    def run(spec: LoadSpec) -> RawRun:
        cmd = [
            sys.executable,
            "-m",
            "loadtests.bench.rangegen",
            "--port",
            str(spec.port),
            "--targets",
            str(spec.targets_file),
            "--auth-file",
            str(spec.auth_file),
            "--duration",
            str(spec.duration_s),
            "--connections",
            str(spec.connections),
        ]
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
            timeout=spec.duration_s + 120,
        )
        return RawRun.from_doc(parse_result(done.stdout, "python load generator", done.stderr))

    return Generator("python-aiohttp", f"aiohttp {aiohttp.__version__}", run)


def choose_generator(wanted: str, say: Callable[[str], None]) -> Generator:
    """``wanted``: ``wrk`` (required), ``python``, or ``auto`` (wrk if on PATH)."""
    if wanted == "wrk" and shutil.which("wrk") is None:
        raise BenchError("--generator wrk, but wrk is not on PATH (apt-get install wrk)")
    if wanted != "python" and shutil.which("wrk") is not None:
        return wrk_generator(Wrk.find())
    if wanted == "auto":
        say(
            "wrk not on PATH: falling back to the Python (aiohttp) load generator; "
            "it competes with the server for CPU, so absolute rates are lower"
        )
    return python_generator()


async def generate(
    port: int, targets: list[str], headers: dict[str, str], duration_s: float, connections: int
) -> dict[str, Any]:
    """The Python generator's load loop: ``connections`` keep-alive workers until the deadline."""
    import aiohttp

    latencies: list[float] = []
    counts = {
        "requests": 0,
        "bytes": 0,
        "connect": 0,
        "read": 0,
        "write": 0,
        "timeout": 0,
        "status": 0,
        "non206": 0,
        "sent": 0,
    }
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        f"http://{HOST}:{port}", connector=connector, timeout=timeout
    ) as client:
        deadline = loop.time() + duration_s

        async def worker() -> None:
            while loop.time() < deadline:
                target = targets[counts["sent"] % len(targets)]
                counts["sent"] += 1
                started = time.perf_counter()
                try:
                    async with client.get(target, headers=headers) as resp:
                        body = await resp.read()
                except TimeoutError:
                    counts["timeout"] += 1
                    continue
                except aiohttp.ClientError:
                    counts["read"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                counts["requests"] += 1
                counts["bytes"] += len(body)
                counts["status"] += resp.status >= 400
                counts["non206"] += resp.status != 206

        started = loop.time()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = loop.time() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6 if latencies else 0.0

    return {
        **counts,
        "duration_us": elapsed * 1e6,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "npaths": len(targets),
    }


def main(argv: list[str] | None = None) -> int:
    """The fallback generator's process: prints one marker line of JSON, like ``cycle.lua``."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.rangegen")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--targets", type=Path, required=True)
    p.add_argument("--auth-file", type=Path, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--connections", type=int, required=True)
    a = p.parse_args(argv)
    targets = [t for t in a.targets.read_text().splitlines() if t]
    headers = {"Authorization": a.auth_file.read_text().strip(), "Range": RANGE_HEADER}
    doc = asyncio.run(generate(a.port, targets, headers, a.duration, a.connections))
    print(MARKER + json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
