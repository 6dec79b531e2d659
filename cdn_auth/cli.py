"""``cdn-auth``: run the service, manage the pointer key ring.

cdn-auth serve [--port 8080] [--redis-url URL | --embedded-redis DIR]
cdn-auth keys init|add|switch|retire|rotate|list|jwks --dir DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from service_kernel.serving import add_serve_arguments, run_cli
from service_kernel.settings_base import ServiceSettings

from .errors import KeyRingError
from .keyring import KeyRing
from .token_format import Alg


def _serve(args: argparse.Namespace) -> int:
    from service_kernel.serving import serve

    from .app import build_app
    from .settings import EdgeSettings

    def build(redis_url: str | None) -> tuple[web.Application, ServiceSettings]:
        settings = EdgeSettings.load(
            host=args.host, port=args.port, redis_url=redis_url, origin_dir=args.origin_dir
        )
        return build_app(settings), settings

    return serve(
        build,
        argv=["-m", "cdn_auth", *args.raw_argv],
        workers=args.workers,
        embedded_redis=args.embedded_redis,
        redis_url=args.redis_url,
        reuse_port=args.reuse_port,
    )


def _keys(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    try:
        if args.action == "init":
            ring = KeyRing.create(d, Alg.from_name(args.alg))
            print(f"created ring {d} signing with {ring.signing_kid} ({args.alg})")
        elif args.action == "add":
            ring = KeyRing.load(d).add()
            print(f"added {ring.keys[-1].kid}: published for verification, not signing yet")
        elif args.action == "switch":
            ring = KeyRing.load(d).switch(args.kid)
            print(f"now signing with {ring.signing_kid}")
        elif args.action in ("retire", "rotate"):
            ring = KeyRing.load(d)
            if args.action == "rotate":
                ring = ring.add()
                # Give every edge time to re-read the JWKS before anything signs with the key.
                time.sleep(args.publish_wait_s)
                ring = ring.switch(ring.keys[-1].kid)
                print(f"rotated: now signing with {ring.signing_kid}")
            ring, gone = ring.retire(args.max_token_lifetime_s)
            print("retired: " + (", ".join(gone) if gone else "none yet (tokens may be live)"))
        elif args.action == "list":
            ring = KeyRing.load(d)
            for k in ring.keys:
                state = (
                    "signing"
                    if k.kid == ring.signing_kid
                    else (
                        f"superseded {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(k.superseded_at))}"
                        if k.superseded_at
                        else "published"
                    )
                )
                print(f"{k.kid}\t{k.alg.jwa}\t{state}")
        elif args.action == "jwks":
            ring = KeyRing.load(d)
            if ring.has_secrets_in_jwks and not args.include_secrets:
                print("this HMAC ring's JWKS holds secrets; pass --include-secrets", file=sys.stderr)
                return 2
            print(json.dumps(ring.verify_jwks(), indent=1))
    except KeyRingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cdn-auth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the media API and edge (settings: CDN_AUTH_* env)")
    add_serve_arguments(s)
    s.add_argument("--origin-dir")
    s.set_defaults(func=_serve)
    k = sub.add_parser("keys", help="manage the pointer/grant key ring")
    k.add_argument("action", choices=["init", "add", "switch", "retire", "rotate", "list", "jwks"])
    k.add_argument("--dir", required=True, help="key ring directory")
    k.add_argument("--alg", default="ed25519", choices=["ed25519", "hmac"])
    k.add_argument("--kid", help="for switch: the kid to sign with (default: newest)")
    k.add_argument(
        "--max-token-lifetime-s",
        type=int,
        default=6 * 3600,
        help="for retire/rotate: keep superseded keys this long",
    )
    k.add_argument("--include-secrets", action="store_true")
    k.add_argument(
        "--publish-wait-s",
        type=float,
        default=2.0,
        help="for rotate: wait between publishing and signing with the new key",
    )
    k.set_defaults(func=_keys)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
