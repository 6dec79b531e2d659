"""What a report must say about where it was measured: versions, machine, code revision.

Numbers from a 2-core laptop and from a 64-core server are not comparable;
a report that does not say which it was cannot be checked or repeated.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PACKAGES = (
    "locust",
    "hdrhistogram",
    "cryptography",
    "aiohttp",
    "redis",
    "hiredis",
    "matplotlib",
    "numpy",
    "websocket-client",
    "gevent",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _git() -> dict[str, Any]:
    """Read-only: the commit and whether the tree had local changes."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        out["dirty"] = bool(status.strip())
    return out


def redis_version(url: str) -> str | None:
    """``INFO server`` over a raw socket (no client library needed); ``None`` if unreachable."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    with (
        contextlib.suppress(OSError),
        socket.create_connection((parts.hostname, parts.port or 6379), timeout=2) as s,
    ):
        s.sendall(b"INFO server\r\n")
        data = b""
        while b"redis_version:" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
    return None


def collect(redis_url: str | None = None) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    versions["python"] = platform.python_version()
    if redis_url:
        versions["redis-server"] = redis_version(redis_url) or "unknown"
    return {
        "versions": versions,
        "machine": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "code": _git(),
    }
