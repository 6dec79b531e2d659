"""``dm-service serve``: run the DM service (settings: ``DM_*`` environment, flags on top)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web


def _serve(args: argparse.Namespace) -> int:
    from cdn_auth import logs
    from cdn_auth.redis_process import RedisProcess

    from .app import build_app
    from .settings import DmSettings

    embedded = None
    redis_url = args.redis_url
    if args.embedded_redis:
        embedded = RedisProcess(args.embedded_redis).start()
        redis_url = embedded.url
    settings = DmSettings.load(host=args.host, port=args.port, redis_url=redis_url,
                               edge_base_url=args.edge_url, keyring_dir=args.keyring_dir)
    logs.configure(settings.log_level)
    try:
        web.run_app(build_app(settings), host=settings.host, port=settings.port,
                    access_log_class=logs.AccessLogger, print=None, reuse_port=args.reuse_port)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dm-service", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the DM service")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--redis-url")
    s.add_argument("--embedded-redis", metavar="DIR")
    s.add_argument("--edge-url", help="public base URL of the edge (for media URLs)")
    s.add_argument("--keyring-dir", help="pointer key ring (dm mints pointers)")
    s.add_argument("--reuse-port", action="store_true")
    s.set_defaults(func=_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
