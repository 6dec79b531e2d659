"""``dm-service serve``: run the DM service (settings: ``DM_*`` environment, flags on top)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web


def _serve(args: argparse.Namespace) -> int:
    from cdn_auth.serving import serve

    from .app import build_app
    from .settings import DmSettings

    def build(redis_url: str | None) -> tuple[web.Application, str, int, str]:
        settings = DmSettings.load(host=args.host, port=args.port, redis_url=redis_url,
                                   edge_base_url=args.edge_url, keyring_dir=args.keyring_dir)
        return build_app(settings), settings.host, settings.port, settings.log_level

    return serve(build, argv=["-m", "dm", *args.raw_argv], workers=args.workers,
                 embedded_redis=args.embedded_redis, redis_url=args.redis_url,
                 reuse_port=args.reuse_port)


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
    s.add_argument("--workers", type=int, default=1,
                   help="run this many processes sharing the port")
    s.set_defaults(func=_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(raw)
    args.raw_argv = raw
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
