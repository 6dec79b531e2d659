"""Run nginx in front of the authorizer with deploy/nginx/edge.conf.template.

Used by the integration test and the benchmark; operators render the same
template (docs/operations.md).  ``secure_link`` URLs for the benchmark's
baseline are made here too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cdn_auth.settings import EdgeSettings

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "edge.conf.template"


class NginxUnavailable(RuntimeError):
    pass


def find_nginx() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NginxUnavailable("nginx is not installed (Debian: apt-get install nginx)")


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
           auth_cache_s: int, secure_link_secret: str | None = None, workers: int | str = 1,
           listen: str = "127.0.0.1", user: str | None = None,
           cors_origins: tuple[str, ...] = ()) -> str:
    """The nginx config; ``authorizer`` is one ``host:port`` or several (load-balanced).

    With ``secure_link_secret`` the benchmark's ``/sl/`` baseline location is added.
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
              "ORIGIN": str(origin),
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
    def __init__(self, prefix: Path, *, port: int, authorizer: str, origin: Path,
                 auth_cache_s: int = 5, secure_link_secret: str | None = None,
                 workers: int = 1, cors_origins: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.port = port
        self.secure_link_secret = secure_link_secret or secrets.token_urlsafe(16)
        self.proc: subprocess.Popen[bytes] | None = None
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(render(prefix=prefix, port=port, authorizer=authorizer,
                                    origin=origin, auth_cache_s=auth_cache_s,
                                    secure_link_secret=self.secure_link_secret,
                                    workers=workers, cors_origins=cors_origins))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> NginxFront:
        nginx = find_nginx()
        # In the foreground, as the nginx image runs it (the config does not say so).
        args = [nginx, "-g", "daemon off;", "-c", str(self.conf), "-p", str(self.prefix)]
        check = subprocess.run([*args, "-t"],
                               capture_output=True, timeout=timeout_s, check=False)
        if check.returncode != 0:
            raise NginxUnavailable(check.stderr.decode(errors="replace")[-800:])
        self.proc = subprocess.Popen(args,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
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
    """Render the config for a deployment: ``python -m loadtests.nginx_front --authorizer ...``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m loadtests.nginx_front", description=main.__doc__)
    p.add_argument("--authorizer", action="append", required=True, help="host:port, repeatable")
    p.add_argument("--origin", required=True)
    p.add_argument("--prefix", default="/tmp/nginx")  # noqa: S108 - nginx's own scratch dir
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--listen", default="0.0.0.0")  # noqa: S104 - a front door listens widely
    p.add_argument("--auth-cache-s", type=int, default=5)
    p.add_argument("--secure-link-secret", default=None,
                   help="benchmarks only: add the /sl/ secure_link baseline location")
    p.add_argument("--workers", default="auto")
    p.add_argument("--user", default="nginx")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="a web origin allowed to fetch media with credentials, repeatable")
    a = p.parse_args(argv)
    print(render(prefix=Path(a.prefix), port=a.port, authorizer=a.authorizer,
                 origin=Path(a.origin), auth_cache_s=a.auth_cache_s,
                 secure_link_secret=a.secure_link_secret,
                 workers=a.workers, listen=a.listen, user=a.user,
                 cors_origins=tuple(a.cors_origin)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
