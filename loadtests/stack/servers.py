"""One edge or one dm as its production entry point, for a benchmark's bed: the command
line, the environment an operator would give it, the keys it trusts, and what a content
pipeline would register.  :mod:`.processes` starts the load-test stack from the same
commands (with ``reuse_port`` for N processes on one port).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.token_format import Alg, SigningKey
from dm.identity import JWKS_FILE, DevIssuer
from service_kernel.files import atomic_write
from service_kernel.redis_process import RedisProcess, free_port

from . import clip
from .children import HOST, StackError, check_alive, child_process, fetch, wait_ready

#: The origin file a bed registers, under the edge's ingest root (``<origin>/ingest``).
ORIGIN_RELPATH = "bench/clip.mp4"
INGEST = "ingest"
CLIP_BYTES = 4 * 1024 * 1024
POINTER_TTL_S = 900  # the edge's default max_token_lifetime_s: covers any sane run


# -- the edge ---------------------------------------------------------------------------------


def clip_bytes(size: int = CLIP_BYTES) -> bytes:
    """A bed's stand-in video (:func:`.clip.clip_bytes` with the benchmarks' seed)."""
    return clip.clip_bytes(size, b"bench-edge")


def write_keys(root: Path) -> tuple[dict[Alg, SigningKey], Path]:
    """One ring per algorithm, and one JWKS holding both, so ONE edge verifies either."""
    rings = {
        alg: KeyRing.create(root / "keys" / f"pointer-{alg.name.lower()}", alg)
        for alg in (Alg.ED25519, Alg.HMAC_SHA256)
    }
    jwks = {"keys": [k for ring in rings.values() for k in ring.verify_jwks()["keys"]]}
    path = root / "keys" / "pointer.jwks.json"
    atomic_write(path, json.dumps(jwks).encode(), 0o600)  # it holds the HMAC secret
    return {alg: ring.signer() for alg, ring in rings.items()}, path


def edge_command(port: int, redis_url: str, origin: Path, *, reuse_port: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cdn_auth",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        "--origin-dir",
        str(origin),
        *(["--reuse-port"] if reuse_port else []),
    ]


def edge_env(pointer_jwks: Path, session_jwks: Path) -> dict[str, str]:
    """The edge's settings, as an operator would give them; no inherited CDN_AUTH_* leaks in.

    WARNING log level turns the JSON access log off: a per-request log line is not what
    a benchmark measures.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDN_AUTH_")}
    env.update(
        CDN_AUTH_POINTER_JWKS=str(pointer_jwks),
        CDN_AUTH_SESSION_JWKS=str(session_jwks),
        CDN_AUTH_LOG_LEVEL="WARNING",
        CDN_AUTH_MAX_TOKEN_LIFETIME_S=str(POINTER_TTL_S),
    )
    return env


def register_media(port: int, issuer: DevIssuer, *, min_age: int = 16) -> str:
    """Register the origin file as Alice's private video, as a content pipeline would."""
    publisher = issuer.mint("publisher", roles=["publisher"])
    body = json.dumps(
        {
            "origin_path": ORIGIN_RELPATH,
            "content_type": "video/mp4",
            "visibility": "private",
            "min_age": min_age,
            "owner": "alice",
        }
    ).encode()
    status, _, raw = fetch(
        port,
        "POST",
        "/v1/media",
        body=body,
        headers={"Authorization": f"Bearer {publisher}", "Content-Type": "application/json"},
    )
    if status != 201:
        raise StackError(f"media registration failed: {status} {raw[:300]!r}")
    return str(json.loads(raw)["id"])


def start_edge(stack: contextlib.ExitStack, root: Path, ring: KeyRing) -> Server:
    """Its own Redis, then ``python -m cdn_auth serve`` holding ``ring`` (so it mints grants
    too), trusting the dev issuer's sessions; both stopped when ``stack`` closes."""
    redis = stack.enter_context(RedisProcess(root / "edge-redis"))
    port, log = free_port(), root / "edge.log"
    env = edge_env(ring.path / VERIFY_JWKS_FILE, root / "keys" / "session" / JWKS_FILE)
    env["CDN_AUTH_KEYRING_DIR"] = str(ring.path)
    proc = stack.enter_context(child_process(edge_command(port, redis.url, root / "origin"), log, env))
    wait_ready("edge", proc, port, "/readyz", log)
    assert redis.proc is not None
    return Server("edge", port, proc, log, redis.url, redis.proc.pid)


# -- the dm -----------------------------------------------------------------------------------


@dataclass
class Server:
    """One server child, its log and its Redis; ``check_alive`` turns a crash into an error."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    redis_url: str
    redis_pid: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def check_alive(self) -> None:
        check_alive(self.name, self.proc, self.log)


def session_issuer(root: Path) -> DevIssuer:
    """The dev issuer's keys, made before any server starts so they all trust the same JWKS."""
    return DevIssuer.load_or_create(root / "keys" / "session")


def dm_env(
    root: Path, *, send_rate_per_s: int | None, log_level: str, event_loop: str = "asyncio"
) -> dict[str, str]:
    """dm's settings as an operator would give them; no inherited DM_* leaks in.

    WARNING turns the per-request access log off, as for the edge.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_")}
    env.update(
        DM_ISSUER_DIR=str(root / "keys" / "session"),
        DM_FRANKING_KEY_PATH=str(root / "keys" / "franking.key"),
        DM_LOG_LEVEL=log_level,
        DM_DEV_ISSUER="true",
        DM_EVENT_LOOP=event_loop,
    )
    # One address signs every user up, and a few senders drive the whole load: those two
    # per-user limits are lifted (still charged, so their cost is in the figures) and the
    # per-conversation limit below stays what a benchmark measures.
    limits = {"signup": [1_000_000, 1_000_000], "send": [1_000_000, 1_000_000]}
    if send_rate_per_s is not None:
        env["DM_SEND_RATE_PER_S"] = str(send_rate_per_s)
    env["DM_RATE_LIMITS"] = json.dumps(limits)
    return env


def dm_command(
    port: int, redis_url: str, edge_url: str, keyring_dir: Path, *, reuse_port: bool = False
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dm",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        "--edge-url",
        edge_url,
        "--keyring-dir",
        str(keyring_dir),
        *(["--reuse-port"] if reuse_port else []),
    ]


def start_dm(
    stack: contextlib.ExitStack,
    root: Path,
    keyring_dir: Path,
    *,
    edge_url: str,
    send_rate_per_s: int | None = None,
    log_level: str = "WARNING",
    event_loop: str = "asyncio",
) -> Server:
    """Its own Redis, then ``python -m dm serve``; both stopped when ``stack`` closes."""
    redis = stack.enter_context(RedisProcess(root / "dm-redis"))
    port, log = free_port(), root / "dm.log"
    proc = stack.enter_context(
        child_process(
            dm_command(port, redis.url, edge_url, keyring_dir),
            log,
            dm_env(root, send_rate_per_s=send_rate_per_s, log_level=log_level, event_loop=event_loop),
        )
    )
    wait_ready("dm", proc, port, "/readyz", log)
    assert redis.proc is not None
    return Server("dm", port, proc, log, redis.url, redis.proc.pid)
