"""Run nginx in front of the authorizer, with the config :mod:`cdn_auth.front_config`
renders from deploy/nginx/edge.conf.template (as a deployment does).

Used by the integration tests and the benchmarks.  ``secure_link`` URLs for the
benchmarks' baseline are made here too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from cdn_auth.front_config import LUA_MODULES, MODULES_DIR, SECRET_ENV, render
from service_kernel.redis_process import free_port


class NginxUnavailable(RuntimeError):
    pass


def find_nginx() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NginxUnavailable("nginx is not installed (Debian: apt-get install nginx)")


def check_lua_module(modules_dir: Path = MODULES_DIR) -> None:
    """Raise :class:`NginxUnavailable` unless this machine has the Lua module the front needs."""
    missing = [str(modules_dir / n) for n in LUA_MODULES if not (modules_dir / n).exists()]
    if missing:
        raise NginxUnavailable(
            "the nginx Lua module is not installed (Debian: apt-get install "
            f"libnginx-mod-http-lua); missing {', '.join(missing)}"
        )


def secure_link(path: str, secret: str, expires: int) -> str:
    """A URL nginx's secure_link accepts: md5(expires + uri + " " + secret), base64url."""
    digest = hashlib.md5(f"{expires}{path} {secret}".encode()).digest()  # noqa: S324 - nginx's scheme
    md5 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{path}?md5={md5}&expires={expires}"


class NginxFront:
    """One nginx front for tests and benchmarks: rendered config, process, control secret.

    ``control_port`` is where the edge pushes (``front_control_url``); ``control_secret``
    is what it sends (``front_control_secret``).  ``netns`` runs nginx inside a network
    namespace (the multi-host benchmark).
    """

    def __init__(
        self,
        prefix: Path,
        *,
        port: int,
        authorizer: str | list[str],
        origin: Path,
        auth_cache_s: int = 30,
        secure_link_secret: str | None = None,
        workers: int = 1,
        control_port: int | None = None,
        control_secret: str | None = None,
        listen: str = "127.0.0.1",
        netns: str | None = None,
        cors_origins: tuple[str, ...] = (),
    ) -> None:
        self.prefix = prefix
        self.port = port
        self.host = listen
        self.netns = netns
        self.control_port = control_port or free_port()
        self.control_secret = control_secret or secrets.token_urlsafe(24)
        self.secure_link_secret = secure_link_secret or secrets.token_urlsafe(16)
        self.proc: subprocess.Popen[bytes] | None = None
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            render(
                prefix=prefix,
                port=port,
                authorizer=authorizer,
                origin=origin,
                auth_cache_s=auth_cache_s,
                control_listen=f"{listen}:{self.control_port}",
                secure_link_secret=self.secure_link_secret,
                workers=workers,
                listen=listen,
                cors_origins=cors_origins,
            )
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        """The edge's ``front_control_url``."""
        return f"http://{self.host}:{self.control_port}/_front/revocations"

    def edge_env(self) -> dict[str, str]:
        """What an edge on this host needs to feed this front (``CDN_AUTH_FRONT_*``)."""
        return {
            "CDN_AUTH_FRONT_CONTROL_URL": self.control_url,
            "CDN_AUTH_FRONT_CONTROL_SECRET": self.control_secret,
        }

    def stats(self) -> dict[str, int | bool]:
        """The front's counters (hits, authorizer calls, invalidations, alive)."""
        req = urllib.request.Request(
            f"http://{self.host}:{self.control_port}/_front/stats",
            headers={"X-Front-Secret": self.control_secret},
        )
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - our own nginx
            doc: dict[str, int | bool] = json.loads(r.read())
        return doc

    def _cmd(self, *args: str) -> list[str]:
        # In the foreground, as the nginx image runs it (the config does not say so).
        base = [find_nginx(), "-g", "daemon off;", "-c", str(self.conf), "-p", str(self.prefix), *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def start(self, timeout_s: float = 10.0) -> NginxFront:
        check_lua_module()
        env = {**os.environ, SECRET_ENV: self.control_secret}
        check = subprocess.run(
            self._cmd("-t"), capture_output=True, timeout=timeout_s, check=False, env=env
        )
        if check.returncode != 0:
            raise NginxUnavailable(check.stderr.decode(errors="replace")[-800:])
        self.proc = subprocess.Popen(
            self._cmd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        raise NginxUnavailable(f"nginx did not start: {self.error_log()}")

    def error_log(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text()[-800:] if log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> NginxFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
