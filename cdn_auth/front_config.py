"""The production nginx front's config, rendered from deploy/nginx/edge.conf.template.

Operators render it with ``python -m cdn_auth.front_config --authorizer HOST:PORT ...``
(docs/operations.md); deploy/nginx/compose.conf is this renderer's output for the compose
stack, and the tests and benchmarks start nginx from the same template
(``loadtests.stack.nginx.NginxFront``).  Placeholders in the template are upper-case names
in double braces.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .settings import EdgeSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "nginx"
TEMPLATE = DEPLOY / "edge.conf.template"
#: Where Debian's nginx keeps dynamic modules (libnginx-mod-http-lua and its NDK dependency).
MODULES_DIR = Path("/usr/lib/nginx/modules")
LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
#: The environment variable nginx's Lua reads the control secret from (the template's ``env``).
SECRET_ENV = "POINTER_FRONT_SECRET"  # noqa: S105 - a variable name


def load_modules(modules_dir: Path | None = MODULES_DIR) -> str:
    """``load_module`` lines for the Lua module; none where it is built in (OpenResty)."""
    if modules_dir is None:
        return ""
    return "\n".join(f"load_module {modules_dir / name};" for name in LUA_MODULES)


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


def render(
    *,
    prefix: Path,
    port: int,
    authorizer: str | list[str],
    origin: Path,
    auth_cache_s: int,
    control_listen: str,
    secure_link_secret: str | None = None,
    workers: int | str = 1,
    listen: str = "127.0.0.1",
    user: str | None = None,
    lua_dir: Path = DEPLOY,
    modules_dir: Path | None = MODULES_DIR,
    cors_origins: tuple[str, ...] = (),
) -> str:
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
    values = {
        "USER_DIRECTIVE": f"user {user};" if user else "",
        "WORKERS": str(workers),
        "PREFIX": str(prefix),
        "PORT": str(port),
        "LISTEN": listen,
        "UPSTREAM_SERVERS": "\n".join(f"        server {s};" for s in servers),
        "SECURE_LINK_LOCATION": SECURE_LINK_LOCATION if secure_link_secret else "",
        "ORIGIN": str(origin),
        "CONTROL_LISTEN": control_listen,
        "LOAD_MODULES": load_modules(modules_dir),
        "LUA_DIR": str(lua_dir),
        "AUTH_CACHE_S": str(auth_cache_s),
        "SECURE_LINK_SECRET": secure_link_secret or "",
        "CORS_ORIGINS": "\n".join(f'        "{o}" $http_origin;' for o in cors_origins),
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():  # the location block first: it holds placeholders too
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise ValueError("unfilled placeholder in the nginx template")
    return text


def main(argv: list[str] | None = None) -> int:
    """Render the config for a deployment: ``python -m cdn_auth.front_config --authorizer ...``."""
    p = argparse.ArgumentParser(prog="python -m cdn_auth.front_config", description=main.__doc__)
    p.add_argument("--authorizer", action="append", required=True, help="host:port, repeatable")
    p.add_argument("--origin", required=True)
    p.add_argument("--prefix", default="/tmp/nginx")  # noqa: S108 - nginx's own scratch dir
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--listen", default="0.0.0.0")  # noqa: S104 - a front door listens widely
    p.add_argument("--auth-cache-s", type=int, default=30)
    p.add_argument(
        "--control-listen",
        default="127.0.0.1:8001",
        help="where the host's edge pushes revocations (never a public address)",
    )
    p.add_argument("--lua-dir", default=str(DEPLOY), help="directory of pointer_front.lua")
    p.add_argument(
        "--openresty",
        action="store_true",
        help="the Lua module is built in: render no load_module lines",
    )
    p.add_argument(
        "--secure-link-secret",
        default=None,
        help="benchmarks only: add the /sl/ secure_link baseline location",
    )
    p.add_argument("--workers", default="auto")
    p.add_argument("--user", default="nginx")
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="a web origin allowed to fetch media with credentials, repeatable",
    )
    a = p.parse_args(argv)
    print(
        render(
            prefix=Path(a.prefix),
            port=a.port,
            authorizer=a.authorizer,
            origin=Path(a.origin),
            auth_cache_s=a.auth_cache_s,
            control_listen=a.control_listen,
            secure_link_secret=a.secure_link_secret,
            workers=a.workers,
            listen=a.listen,
            user=a.user,
            lua_dir=Path(a.lua_dir),
            modules_dir=None if a.openresty else MODULES_DIR,
            cors_origins=tuple(a.cors_origin),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
