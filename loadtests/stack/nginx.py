"""Run nginx in front of the authorizer with deploy/nginx/edge.conf.template.

Used by the integration test and the benchmark; operators render the same
template (docs/operations.md).  ``secure_link`` URLs for the benchmark's
baseline are made here too.
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

from cdn_auth.settings import EdgeSettings
from service_kernel.redis_process import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
TEMPLATE = DEPLOY / "edge.conf.template"
#: Where Debian's nginx keeps dynamic modules (libnginx-mod-http-lua and its NDK dependency).
MODULES_DIR = Path("/usr/lib/nginx/modules")
LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
#: The environment variable nginx's Lua reads the control secret from (the template's ``env``).
SECRET_ENV = "POINTER_FRONT_SECRET"  # noqa: S105 - a variable name


class NginxUnavailable(RuntimeError):
    pass


def find_nginx() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NginxUnavailable("nginx is not installed (Debian: apt-get install nginx)")


def load_modules(modules_dir: Path | None = MODULES_DIR) -> str:
    """``load_module`` lines for the Lua module; none where it is built in (OpenResty)."""
    if modules_dir is None:
        return ""
    return "\n".join(f"load_module {modules_dir / name};" for name in LUA_MODULES)


def check_lua_module(modules_dir: Path = MODULES_DIR) -> None:
    """Raise :class:`NginxUnavailable` unless this machine has the Lua module the front needs."""
    missing = [str(modules_dir / n) for n in LUA_MODULES if not (modules_dir / n).exists()]
    if missing:
        raise NginxUnavailable("the nginx Lua module is not installed (Debian: apt-get install "
                               f"libnginx-mod-http-lua); missing {', '.join(missing)}")


SECURE_LINK_LOCATION = """
        # Benchmark baseline only: the same files behind nginx secure_link (no authorizer).
        # Never render this into a deployment: anyone with the secret reads any origin file.
        location /sl/ {
            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "$secure_link_expires$uri {{SECURE_LINK_SECRET}}";
            if ($secure_link = "") { return 403; }
            if ($secure_link = "0") { return 410; }
            alias {{ORIGIN}}/;
        }"""


def render(*, prefix: Path, port: int, authorizer: str | list[str], origin: Path,
           auth_cache_s: int, control_listen: str, secure_link_secret: str | None = None,
           workers: int | str = 1, listen: str = "127.0.0.1", user: str | None = None,
           lua_dir: Path = DEPLOY, modules_dir: Path | None = MODULES_DIR,
           cors_origins: tuple[str, ...] = ()) -> str:
    """The nginx config; ``authorizer`` is one ``host:port`` or several (load-balanced).

    ``control_listen`` is where the host's edge pushes revocations (``host:port``; keep it
    off public interfaces).  With ``secure_link_secret`` the benchmark's ``/sl/`` baseline
    location is added.  ``modules_dir`` None: the Lua module is built in (OpenResty).
    ``cors_origins`` are the web origins allowed to fetch media with credentials (the
    edge's ``CDN_AUTH_CORS_ORIGINS``; validated the same way).
    """
    cors_origins = EdgeSettings.load(cors_origins=cors_origins).cors_origins
    if user is None:
        user = "root" if os.geteuid() == 0 else ""  # workers must read the test's files
    servers = [authorizer] if isinstance(authorizer, str) else authorizer
    values = {"USER_DIRECTIVE": f"user {user};" if user else "", "WORKERS": str(workers),
              "PREFIX": str(prefix), "PORT": str(port), "LISTEN": listen,
              "UPSTREAM_SERVERS": "\n".join(f"        server {s};" for s in servers),
              "SECURE_LINK_LOCATION": SECURE_LINK_LOCATION if secure_link_secret else "",
              "ORIGIN": str(origin), "CONTROL_LISTEN": control_listen,
              "LOAD_MODULES": load_modules(modules_dir), "LUA_DIR": str(lua_dir),
              "AUTH_CACHE_S": str(auth_cache_s), "SECURE_LINK_SECRET": secure_link_secret or "",
              "CORS_ORIGINS": "\n".join(f'        "{o}" $http_origin;' for o in cors_origins)}
    text = TEMPLATE.read_text()
    for name, value in values.items():  # the location block first: it holds placeholders too
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise ValueError("unfilled placeholder in the nginx template")
    return text


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

    def __init__(self, prefix: Path, *, port: int, authorizer: str | list[str], origin: Path,
                 auth_cache_s: int = 30, secure_link_secret: str | None = None,
                 workers: int = 1, control_port: int | None = None,
                 control_secret: str | None = None, listen: str = "127.0.0.1",
                 netns: str | None = None, cors_origins: tuple[str, ...] = ()) -> None:
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
        self.conf.write_text(render(prefix=prefix, port=port, authorizer=authorizer,
                                    origin=origin, auth_cache_s=auth_cache_s,
                                    control_listen=f"{listen}:{self.control_port}",
                                    secure_link_secret=self.secure_link_secret,
                                    workers=workers, listen=listen,
                                    cors_origins=cors_origins))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        """The edge's ``front_control_url``."""
        return f"http://{self.host}:{self.control_port}/_front/revocations"

    def edge_env(self) -> dict[str, str]:
        """What an edge on this host needs to feed this front (``CDN_AUTH_FRONT_*``)."""
        return {"CDN_AUTH_FRONT_CONTROL_URL": self.control_url,
                "CDN_AUTH_FRONT_CONTROL_SECRET": self.control_secret}

    def stats(self) -> dict[str, int | bool]:
        """The front's counters (hits, authorizer calls, invalidations, alive)."""
        req = urllib.request.Request(f"http://{self.host}:{self.control_port}/_front/stats",
                                     headers={"X-Front-Secret": self.control_secret})
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - our own nginx
            doc: dict[str, int | bool] = json.loads(r.read())
        return doc

    def _cmd(self, *args: str) -> list[str]:
        # In the foreground, as the nginx image runs it (the config does not say so).
        base = [find_nginx(), "-g", "daemon off;", "-c", str(self.conf), "-p", str(self.prefix),
                *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def start(self, timeout_s: float = 10.0) -> NginxFront:
        check_lua_module()
        env = {**os.environ, SECRET_ENV: self.control_secret}
        check = subprocess.run(self._cmd("-t"), capture_output=True, timeout=timeout_s,
                               check=False, env=env)
        if check.returncode != 0:
            raise NginxUnavailable(check.stderr.decode(errors="replace")[-800:])
        self.proc = subprocess.Popen(self._cmd(), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
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


def main(argv: list[str] | None = None) -> int:
    """Render the config for a deployment: ``python -m loadtests.stack.nginx --authorizer ...``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m loadtests.stack.nginx", description=main.__doc__)
    p.add_argument("--authorizer", action="append", required=True, help="host:port, repeatable")
    p.add_argument("--origin", required=True)
    p.add_argument("--prefix", default="/tmp/nginx")  # noqa: S108 - nginx's own scratch dir
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--listen", default="0.0.0.0")  # noqa: S104 - a front door listens widely
    p.add_argument("--auth-cache-s", type=int, default=30)
    p.add_argument("--control-listen", default="127.0.0.1:8001",
                   help="where the host's edge pushes revocations (never a public address)")
    p.add_argument("--lua-dir", default=str(DEPLOY), help="directory of pointer_front.lua")
    p.add_argument("--openresty", action="store_true",
                   help="the Lua module is built in: render no load_module lines")
    p.add_argument("--secure-link-secret", default=None,
                   help="benchmarks only: add the /sl/ secure_link baseline location")
    p.add_argument("--workers", default="auto")
    p.add_argument("--user", default="nginx")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="a web origin allowed to fetch media with credentials, repeatable")
    a = p.parse_args(argv)
    print(render(prefix=Path(a.prefix), port=a.port, authorizer=a.authorizer,
                 origin=Path(a.origin), auth_cache_s=a.auth_cache_s,
                 control_listen=a.control_listen, secure_link_secret=a.secure_link_secret,
                 workers=a.workers, listen=a.listen, user=a.user, lua_dir=Path(a.lua_dir),
                 modules_dir=None if a.openresty else MODULES_DIR,
                 cors_origins=tuple(a.cors_origin)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
