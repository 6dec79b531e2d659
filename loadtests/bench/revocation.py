"""``python -m loadtests.bench revocation``: how fast an unsend reaches every edge process.

Starts one Redis and N >= 4 edge processes (``python -m cdn_auth serve``, as
many processes per machine run), each on its own port so every process can
be asked directly.  Each trial mints a pointer, warms it on every edge (so
the refusal must come from the revocation view, not a cold cache), writes
the unsend event, and polls all edges concurrently until each answers 410;
the trial's figure is the time until the *last* edge refuses.  Reported as
p50/p99 over many trials (JSON key ``revocation_p99_ms``; target <= 100 ms).
Polling every ~1 ms per edge bounds the resolution at about a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from cdn_auth import pointer, revocation
from cdn_auth.revocation import RevocationLog
from cdn_auth.token_format import Alg, SigningKey
from dm.identity import JWKS_FILE
from loadtests.bench.harness import bench_parser, child_process, common_flags, speaker, wait_ready
from loadtests.bench.probes import percentile
from loadtests.stack.servers import (
    INGEST,
    ORIGIN_RELPATH,
    clip_bytes,
    edge_command,
    edge_env,
    register_media,
    session_issuer,
    write_keys,
)
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisProcess, free_port

TARGET_P99_MS = 100.0


say = speaker("revocation")


async def _status(http: aiohttp.ClientSession, port: int, path: str, auth: str) -> int:
    async with http.get(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": auth, "Range": "bytes=0-0"}
    ) as r:
        await r.read()
        return r.status


async def trial(
    http: aiohttp.ClientSession,
    ports: list[int],
    key: SigningKey,
    media_id: str,
    auth: str,
    log: RevocationLog,
    n: int,
) -> float:
    msg = f"msg_{n}"
    ptr = pointer.mint(
        key, media_id=media_id, sub="bob", conversation_id="c_bench", message_id=msg, now=time.time()
    )
    path = f"/m/{media_id}?pointer={ptr}"
    warm = await asyncio.gather(*(_status(http, p, path, auth) for p in ports))
    if set(warm) != {206}:
        raise RuntimeError(f"warm-up answered {warm}")
    started = time.perf_counter()
    await log.publish(revocation.unsent("c_bench", msg))

    async def until_refused(port: int) -> float:
        deadline = started + 5.0
        while time.perf_counter() < deadline:
            if await _status(http, port, path, auth) == 410:
                return time.perf_counter() - started
            await asyncio.sleep(0.001)
        raise RuntimeError(f"edge on {port} never refused within 5 s")

    return max(await asyncio.gather(*(until_refused(p) for p in ports))) * 1000


async def measure(
    ports: list[int], key: SigningKey, media_id: str, session: str, redis_url: str, trials: int
) -> list[float]:
    redis = connect(redis_url)
    log = RevocationLog(redis)
    out: list[float] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for n in range(trials):
                out.append(await trial(http, ports, key, media_id, f"Bearer {session}", log, n))
                if (n + 1) % 25 == 0:
                    say(f"{n + 1}/{trials} trials, last {out[-1]:.1f} ms")
    finally:
        await redis.aclose()
    return out


def run(edges: int, trials: int, root: Path) -> dict[str, object]:
    keys, jwks = write_keys(root)
    issuer = session_issuer(root)
    origin = root / "origin"
    (origin / INGEST / ORIGIN_RELPATH).parent.mkdir(parents=True, exist_ok=True)
    (origin / INGEST / ORIGIN_RELPATH).write_bytes(clip_bytes(256 * 1024))
    env = edge_env(jwks, root / "keys" / "session" / JWKS_FILE)
    with RedisProcess(root / "redis", appendonly=False) as redis, contextlib.ExitStack() as stack:
        ports = [free_port() for _ in range(edges)]
        for i, port in enumerate(ports):
            log = root / f"edge{i}.log"
            proc = stack.enter_context(child_process(edge_command(port, redis.url, origin), log, env))
            wait_ready(f"edge {i}", proc, port, "/readyz", log)
        say(f"{edges} edge processes up on ports {ports}; {trials} trials")
        media_id = register_media(ports[0], issuer)
        lat = asyncio.run(
            measure(ports, keys[Alg.ED25519], media_id, issuer.mint("bob"), redis.url, trials)
        )
    p99 = percentile(lat, 0.99)
    return {
        "benchmark": "revocation",
        "edges": edges,
        "trials": trials,
        "revocation_p50_ms": round(statistics.median(lat), 2),
        "revocation_p99_ms": round(p99, 2),
        "revocation_max_ms": round(max(lat), 2),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": p99 <= TARGET_P99_MS,
    }


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("revocation", __doc__)
    p.add_argument("--edges", type=int, default=4)
    p.add_argument("--trials", type=int, default=200)
    common_flags(p)
    args = p.parse_args(argv)
    if args.edges < 1 or args.trials < 1:
        p.error("--edges and --trials must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp:
        result = run(args.edges, args.trials, Path(tmp))
    print(
        f"revocation propagation to all {result['edges']} edges over {result['trials']} "
        f"trials: p50 {result['revocation_p50_ms']} ms, p99 {result['revocation_p99_ms']} ms, "
        f"max {result['revocation_max_ms']} ms (target p99 <= {TARGET_P99_MS:.0f} ms: "
        f"{'met' if result['target_met'] else 'MISSED'})",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
