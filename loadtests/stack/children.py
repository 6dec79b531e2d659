"""Server child processes: start one with its output in a log, wait until it answers,
stop it (SIGTERM, then SIGKILL), and read the end of its log when it dies.

Every way this package starts a service (the load-test stack, the benchmarks' beds, the
nginx front) goes through these, and everything binds to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"  # nothing here ever listens on or targets another address
REPO_ROOT = Path(__file__).resolve().parents[2]


class StackError(Exception):
    """A service did not start, or died."""


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM (aiohttp shuts down gracefully on it), then SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


@contextlib.contextmanager
def child_process(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server child with its output in ``log_path``; always stopped on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )
        try:
            yield proc
        finally:
            stop_process(proc)


def log_tail(path: Path, chars: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def check_alive(name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """A child that exited is a setup failure, reported with the end of its log."""
    if proc.poll() is not None:
        raise StackError(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")


def fetch(
    port: int,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request to ``127.0.0.1:port`` (setup and checks only; never part of a measurement)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def answers_200(port: int, target: str) -> bool:
    """Whether ``GET target`` answers 200 right now (a refused connection is a no)."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        return fetch(port, "GET", target, timeout_s=1.0)[0] == 200
    return False


def wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    port: int,
    target: str,
    log_path: Path,
    timeout_s: float = 30.0,
) -> None:
    """Poll ``target`` until 200; a child that exits or never answers is a setup error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_alive(name, proc, log_path)
        if answers_200(port, target):
            return
        time.sleep(0.05)
    raise StackError(f"{name} not ready after {timeout_s:.0f}s:\n{log_tail(log_path)}")
