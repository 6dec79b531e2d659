"""``dm-service serve``: run the DM service (settings: ``DM_*`` environment, flags on top)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web

from service_kernel.serving import add_serve_arguments, run_cli
from service_kernel.settings_base import ServiceSettings


def _serve(args: argparse.Namespace) -> int:
    from service_kernel.serving import serve

    from .app import build_app
    from .settings import DmSettings

    def build(redis_url: str | None) -> tuple[web.Application, ServiceSettings]:
        settings = DmSettings.load(
            host=args.host,
            port=args.port,
            redis_url=redis_url,
            edge_base_url=args.edge_url,
            keyring_dir=args.keyring_dir,
        )
        return build_app(settings), settings

    return serve(
        build,
        argv=["-m", "dm", *args.raw_argv],
        workers=args.workers,
        embedded_redis=args.embedded_redis,
        redis_url=args.redis_url,
        reuse_port=args.reuse_port,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dm-service", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the DM service")
    add_serve_arguments(s)
    s.add_argument("--edge-url", help="public base URL of the edge (for media URLs)")
    s.add_argument("--keyring-dir", help="pointer key ring (dm mints pointers)")
    s.set_defaults(func=_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
