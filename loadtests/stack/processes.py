"""The stack as separate processes: embedded Redis, N edges, N dm services, and N more dm
services that scan plain sends (the plain+scan mode).

Used by the load-test runner, the abuse benchmark, ``python -m loadtests web`` and the
tests that need real processes.  :mod:`.inprocess` runs everything in one asyncio process,
which suits the demo but not a load test: Locust runs on gevent (which cannot share a
process with asyncio), and a service sharing the generator's process and core would
measure the generator.  Here each service is its production entry point (``python -m
cdn_auth serve``, ``python -m dm serve``, the commands of :mod:`.servers`), ``procs`` of
each listening on one port with SO_REUSEPORT, configured by environment as an operator
would, with access logs off (level WARNING; ``web=True`` turns INFO logs on).
Everything binds to 127.0.0.1 only.

``python -m loadtests.stack.processes --dir DIR [--procs N]`` runs one until
interrupted and prints its URLs, for Locust runs by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.token_format import Alg
from dm.identity import JWKS_FILE, DevIssuer
from service_kernel.files import load_or_create_secret
from service_kernel.redis_process import RedisProcess, free_port

from .children import HOST, StackError, answers_200, check_alive, child_process
from .clip import ORIGIN_RELPATH, clip_bytes
from .servers import dm_command, edge_command

#: Realistic scan lists for the plain+scan mode (the messages the load test sends match none).
SCAN_LISTS = Path(__file__).resolve().parents[1] / "scan_lists.json"


@dataclass
class ProcStack:
    root: Path
    redis_url: str
    edge_url: str
    dm_url: str
    procs: int
    origin_path: str = ORIGIN_RELPATH
    #: The dm processes that scan plain sends (lists, media hashes): the plain+scan mode.
    scan_dm_url: str = ""
    #: The embedded Redis's pid (None when the stack uses a Redis it did not start).
    redis_pid: int | None = None
    children: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def check_alive(self) -> None:
        for name, proc, log in self.children:
            check_alive(name, proc, log)

    def pids(self) -> dict[str, int]:
        """Every server process this stack started, by name (``edge-0``, ``dm-0``, ``redis``)."""
        out = {name: proc.pid for name, proc, _ in self.children}
        if self.redis_pid is not None:
            out["redis"] = self.redis_pid
        return out

    def describe(self) -> dict[str, object]:
        return {
            "redis_url": self.redis_url,
            "edge_url": self.edge_url,
            "dm_url": self.dm_url,
            "scan_dm_url": self.scan_dm_url,
            "procs": self.procs,
            "origin_path": self.origin_path,
            "root": str(self.root),
            "pids": {name: proc.pid for name, proc, _ in self.children},
        }


def _listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (SO_REUSEPORT shows one line per process)."""
    want = f"0100007F:{port:04X}"
    n = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) > 3 and cols[1] == want and cols[3] == "0A":
                n += 1
    return n


#: All load comes from one address, so the per-address sign-up limit is lifted, and
#: open-model arrivals may land many sends on one simulated user, so the per-user send
#: limit is too (both still charged, so their cost is in the figures).  The abuse
#: benchmark passes the real limits back in through ``dm_settings``.
LOAD_TEST_RATE_LIMITS = json.dumps({"signup": [1_000_000, 1_000_000], "send": [1_000_000, 1_000_000]})
#: The seeding publisher registers one video per sender (hundreds in a few seconds), so its
#: per-user registration limit is lifted too; every other edge limit stays as shipped.
LOAD_TEST_EDGE_RATE_LIMITS = json.dumps({"media_create": [1_000_000, 1_000_000]})


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDN_AUTH_", "DM_"))}
    env.update(values)
    return env


@contextlib.contextmanager
def process_stack(
    root: Path,
    *,
    procs: int = 1,
    redis_url: str | None = None,
    timeout_s: float = 60.0,
    dm_settings: dict[str, str] | None = None,
    web: bool = False,
) -> Iterator[ProcStack]:
    """Start Redis (unless ``redis_url``), ``procs`` edges and ``procs`` dm services.
    ``dm_settings`` adds ``DM_*`` variables (say, a tighter send rate limit).

    ``web``: set up for the web client (loadtests.web and the browser tests): the dev
    issuer on, browser playback on (one media-cookie secret for every edge), CORS for
    dm's origin, and INFO logs (with the access log, which never records a query or a
    header) in ``<root>/<service>.log``.
    """
    if procs < 1:
        raise ValueError("procs must be >= 1")
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    origin = root / "origin"
    clip = origin / "ingest" / ORIGIN_RELPATH  # the edge's ingest root (origin_path)
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(clip_bytes())
    session_dir = root / "keys" / "session"
    DevIssuer.load_or_create(session_dir)
    ring = KeyRing.load_or_create(root / "keys" / "pointer", Alg.ED25519)
    franking = root / "keys" / "franking.key"
    load_or_create_secret(franking)  # before the dm processes, so they do not race to create it
    edge_port, dm_port, scan_port = free_port(), free_port(), free_port()
    web_edge_env: dict[str, str] = {}
    web_dm_env: dict[str, str] = {}
    if web:
        playback_key = root / "keys" / "playback.key"
        load_or_create_secret(playback_key)  # one secret for every edge, made before they start
        web_edge_env = {
            "CDN_AUTH_PLAYBACK_SECRET_PATH": str(playback_key),
            "CDN_AUTH_CORS_ORIGINS": json.dumps([f"http://{HOST}:{dm_port}"]),
            "CDN_AUTH_LOG_LEVEL": "INFO",
        }
        # The web client asks for no roles: nobody at the page mints a moderator.
        web_dm_env = {"DM_DEV_ISSUER_ROLES": "false", "DM_LOG_LEVEL": "INFO"}
    with contextlib.ExitStack() as stack:
        redis_pid = None
        if redis_url is None:
            embedded = stack.enter_context(RedisProcess(root / "redis"))
            redis_url = embedded.url
            redis_pid = embedded.proc.pid if embedded.proc is not None else None
        st = ProcStack(
            root,
            redis_url,
            f"http://{HOST}:{edge_port}",
            f"http://{HOST}:{dm_port}",
            procs,
            scan_dm_url=f"http://{HOST}:{scan_port}",
            redis_pid=redis_pid,
        )
        edge_env = _clean_env(
            CDN_AUTH_POINTER_JWKS=str(ring.path / VERIFY_JWKS_FILE),
            CDN_AUTH_KEYRING_DIR=str(ring.path),
            CDN_AUTH_SESSION_JWKS=str(session_dir / JWKS_FILE),
            CDN_AUTH_LOG_LEVEL="WARNING",
            CDN_AUTH_RATE_LIMITS=LOAD_TEST_EDGE_RATE_LIMITS,
        )
        edge_env.update(web_edge_env)
        # A local stack for load tests and demos: the dev issuer (and its roles, for the
        # seeding publisher) switched on explicitly; production leaves both off.
        # Every simulated user signs up from 127.0.0.1: the per-address sign-up limit is
        # lifted (per-user limits stay as an operator would have them).
        dm_env = _clean_env(
            **{
                "DM_ISSUER_DIR": str(session_dir),
                "DM_FRANKING_KEY_PATH": str(franking),
                "DM_LOG_LEVEL": "WARNING",
                "DM_DEV_ISSUER": "true",
                "DM_DEV_ISSUER_ROLES": "true",
                "DM_RATE_LIMITS": LOAD_TEST_RATE_LIMITS,
                **(dm_settings or {}),
            }
        )
        dm_env.update(web_dm_env)
        commands = []
        for i in range(procs):
            commands.append(
                (f"edge-{i}", edge_command(edge_port, redis_url, origin, reuse_port=True), edge_env)
            )
        scan_env = {**dm_env, "DM_SCAN_LISTS": str(SCAN_LISTS)}
        for i in range(procs):
            for name, port, env in (("dm", dm_port, dm_env), ("dm-scan", scan_port, scan_env)):
                commands.append(
                    (
                        f"{name}-{i}",
                        dm_command(port, redis_url, st.edge_url, ring.path, reuse_port=True),
                        env,
                    )
                )
        for name, args, env in commands:
            log = root / f"{name}.log"
            proc = stack.enter_context(child_process(args, log, env))
            st.children.append((name, proc, log))
        deadline = time.monotonic() + timeout_s
        for port, path in ((edge_port, "/readyz"), (dm_port, "/readyz"), (scan_port, "/readyz")):
            while not (_listeners(port) >= procs and answers_200(port, path)):
                st.check_alive()
                if time.monotonic() > deadline:
                    raise StackError(f"port {port} not ready after {timeout_s:.0f}s")
                time.sleep(0.05)
        yield st


def interrupt_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.stack.processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", type=Path, default=Path("var/loadstack"), help="working directory")
    p.add_argument("--procs", type=int, default=1, help="edge and dm processes each (1)")
    p.add_argument("--redis-url", help="use this Redis instead of starting one")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_signal)
    try:
        with process_stack(a.dir, procs=a.procs, redis_url=a.redis_url) as st:
            print(json.dumps(st.describe()), flush=True)
            while True:
                st.check_alive()
                time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
