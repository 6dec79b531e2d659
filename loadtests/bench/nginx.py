"""``python -m loadtests.bench nginx``: nginx + authorizer against nginx ``secure_link``.

Both serve the same file from the same nginx (deploy/nginx/edge.conf.template),
under the same generator (wrk, one thread), in interleaved rounds:

- ``nginx_auth``: repeat Range requests to ``/m/{id}?pointer=...`` with a
  session; nginx asks the authorizer once and reuses the decision (up to
  ``--auth-cache-s`` seconds, ended at once by a revocation), then serves the
  bytes itself;
- ``secure_link``: the same Range requests to ``/sl/...`` signed URLs that
  nginx checks alone (the scheme the seeds' "signed link" CDNs use).

``nginx_front_ratio`` = nginx_auth rps / secure_link rps (target >= 0.5).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cdn_auth import pointer
from cdn_auth.token_format import Alg
from dm.identity import JWKS_FILE
from loadtests.bench.harness import (
    bench_parser,
    child_process,
    common_flags,
    run_flags,
    speaker,
    wait_ready,
)
from loadtests.bench.rangegen import RANGE_BYTES, LoadSpec, RawRun, choose_generator
from loadtests.stack.nginx import NginxFront, secure_link
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
from service_kernel.redis_process import RedisProcess, free_port

TARGET = 0.5


say = speaker("nginx")


def run(
    root: Path, *, rounds: int, duration_s: int, connections: int, auth_cache_s: int
) -> dict[str, object]:
    keys, jwks = write_keys(root)
    issuer = session_issuer(root)
    origin = root / "origin"
    (origin / INGEST / ORIGIN_RELPATH).parent.mkdir(parents=True, exist_ok=True)
    (origin / INGEST / ORIGIN_RELPATH).write_bytes(clip_bytes())
    gen = choose_generator("wrk", say)
    with RedisProcess(root / "redis", appendonly=False) as redis:
        port = free_port()
        log = root / "edge.log"
        front = NginxFront(
            root / "nginx",
            port=free_port(),
            authorizer=f"127.0.0.1:{port}",
            origin=origin,
            auth_cache_s=auth_cache_s,
        )
        env = {**edge_env(jwks, root / "keys" / "session" / JWKS_FILE), **front.edge_env()}
        with child_process(edge_command(port, redis.url, origin), log, env) as proc:
            wait_ready("edge", proc, port, "/readyz", log)
            media_id = register_media(port, issuer)
            ptr = pointer.mint(
                keys[Alg.ED25519],
                media_id=media_id,
                sub="bob",
                conversation_id="c_bench",
                message_id="m_1",
                now=time.time(),
            )
            paths = {
                "nginx_auth": f"/m/{media_id}?pointer={ptr}",
                "secure_link": secure_link(
                    f"/sl/{INGEST}/{ORIGIN_RELPATH}", front.secure_link_secret, int(time.time()) + 3600
                ),
            }
            auth = root / "auth.txt"
            auth.write_text(f"Bearer {issuer.mint('bob')}\n")
            results: dict[str, list[RawRun]] = {k: [] for k in paths}
            with front:
                for r in range(rounds):
                    order = list(paths) if r % 2 == 0 else list(reversed(paths))
                    for name in order:
                        targets = root / f"{name}.txt"
                        targets.write_text(paths[name] + "\n")
                        raw = gen.run(LoadSpec(front.port, targets, auth, duration_s, connections))
                        results[name].append(raw)
                        rps = raw.requests / raw.duration_s
                        say(
                            f"round {r + 1}/{rounds} {name:<12} {rps:8.0f} req/s "
                            f"p50 {raw.p50_ms:6.2f} ms p99 {raw.p99_ms:6.2f} ms "
                            f"errors {raw.status_errors + raw.socket_errors}"
                        )
                front_stats = front.stats()
    result = summarize(results, gen.version, rounds, duration_s, connections, auth_cache_s)
    # The front's own counters: how many requests the decision cache answered.
    result["front_stats"] = {k: front_stats[k] for k in ("hits", "auth_calls", "invalidated")}
    return result


def summarize(
    results: dict[str, list[RawRun]],
    generator: str,
    rounds: int,
    duration_s: int,
    connections: int,
    auth_cache_s: int,
) -> dict[str, object]:
    paths: dict[str, dict[str, float | int | bool]] = {}
    for name, runs in results.items():
        errors = sum(r.status_errors + r.socket_errors + r.timeouts for r in runs)
        per_resp = [r.bytes / max(1, r.requests) for r in runs]
        paths[name] = {
            "rps": round(statistics.median(r.requests / r.duration_s for r in runs), 1),
            "p50_ms": round(statistics.median(r.p50_ms for r in runs), 3),
            "p99_ms": round(statistics.median(r.p99_ms for r in runs), 3),
            "errors": errors,
            # every response must be the 64 KiB range (plus headers), not an error page
            "valid": errors == 0 and all(RANGE_BYTES <= b <= RANGE_BYTES + 1024 for b in per_resp),
        }
    ratio = float(paths["nginx_auth"]["rps"]) / float(paths["secure_link"]["rps"])
    return {
        "benchmark": "nginx",
        "generator": generator,
        "rounds": rounds,
        "duration_s": duration_s,
        "connections": connections,
        "auth_cache_s": auth_cache_s,
        "range_bytes": RANGE_BYTES,
        "paths": paths,
        "nginx_front_ratio": round(ratio, 3),
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "valid": all(bool(p["valid"]) for p in paths.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("nginx", __doc__)
    run_flags(p, duration=5, rounds=3, connections=64)
    p.add_argument("--auth-cache-s", type=int, default=30)
    common_flags(p)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        result = run(
            Path(tmp),
            rounds=a.rounds,
            duration_s=a.duration,
            connections=a.connections,
            auth_cache_s=a.auth_cache_s,
        )
    paths = result["paths"]
    assert isinstance(paths, dict)
    for name, v in paths.items():
        print(
            f"{name:<12} {v['rps']:>9} req/s  p50 {v['p50_ms']:>7} ms  p99 {v['p99_ms']:>7} ms  "
            f"errors {v['errors']}  valid {v['valid']}",
            file=sys.stderr,
        )
    print(
        f"nginx_front_ratio {result['nginx_front_ratio']} (target >= {TARGET}: "
        f"{'met' if result['target_met'] else 'MISSED'})",
        file=sys.stderr,
    )
    if a.json:
        print(json.dumps(result, indent=2))
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
