"""``python -m loadtests.bench hosts``: revocation to edges on simulated hosts, and a partition.

Each simulated host is a network namespace holding one edge process and its
nginx front (deploy/nginx/edge.conf.template), as a deployment runs them on
every machine.  Two veth links join a host to the root namespace:

- a *WAN* link to Redis, delayed one way by that host's ``--delays`` entry
  (``tc netem`` on both ends when the kernel has ``sch_netem``; otherwise a
  delay relay process, see :class:`DelayRelay`, and the JSON says which);
  the edge reaches Redis only through a relay on this link, which can also
  cut it (a partition);
- a *client* link, undelayed, on which the benchmark plays videos.

Revocation trials: play a pointer on every host (so each front holds a
cached decision), unsend it, and time from the XADD until each host's front
holds the revocation (the front's own clock; namespaces share the machine's
clock); then check every host answers 410.  ``revocation_p99_ms_by_delay``.

Partition: warm pointers on the last host, cut its WAN link, publish
unsends meanwhile; time until that host's front stops serving its cached
decisions (503: ``partition_fail_closed_s``, bounded by the edge's staleness
bound); heal, and count the missed revocations the host then enforces
(``partition_missed_revocations_applied`` of ``partition_revocations``).

Needs root (namespaces), iproute2, nginx and its Lua module; elsewhere it
prints a skip reason (and ``"skipped"`` in the JSON) and exits 0.  All
addresses are private and exist only on this machine.  Shared machine:
figures are noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from cdn_auth import pointer, revocation
from cdn_auth.media import AudienceRules, Media
from cdn_auth.registry import MediaRegistry
from cdn_auth.revocation import RevocationLog
from cdn_auth.token_format import Alg, SigningKey
from dm.identity import JWKS_FILE
from loadtests.bench.harness import (
    BenchError,
    bench_parser,
    child_process,
    common_flags,
    log_tail,
    speaker,
    stop_process,
)
from loadtests.bench.probes import percentile
from loadtests.stack.nginx import NginxFront
from loadtests.stack.servers import clip_bytes, edge_env, session_issuer, write_keys
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisProcess, free_port

from .namespaces import Host, namespaces, netem_available, why_not

TARGET_P99_MS = 100.0  # beyond the link's own one-way delay
ORIGIN_RELPATH = "hosts/clip.mp4"


say = speaker("hosts")


async def _get(http: aiohttp.ClientSession, host: Host, path: str, auth: str) -> int:
    assert host.front is not None
    async with http.get(
        host.front.url + path, headers={"Authorization": auth, "Range": "bytes=0-0"}
    ) as r:
        await r.read()
        return r.status


async def _applied_at(http: aiohttp.ClientSession, host: Host) -> float:
    assert host.front is not None
    f = host.front
    async with http.get(
        f"http://{f.host}:{f.control_port}/_front/stats", headers={"X-Front-Secret": f.control_secret}
    ) as r:
        return float((await r.json())["revocation_applied_at"])


def _path(key: SigningKey, media_id: str, msg: str) -> str:
    ptr = pointer.mint(
        key, media_id=media_id, sub="bob", conversation_id="c_hosts", message_id=msg, now=time.time()
    )
    return f"/m/{media_id}?pointer={ptr}"


async def _warm(http: aiohttp.ClientSession, hosts: list[Host], path: str, auth: str) -> None:
    for _ in range(2):  # the second is a cache hit on every front
        got = await asyncio.gather(*(_get(http, h, path, auth) for h in hosts))
        if set(got) != {206}:
            raise BenchError(f"warm-up answered {got}")


async def trials(
    hosts: list[Host], key: SigningKey, media_id: str, auth: str, log: RevocationLog, count: int
) -> dict[int, list[float]]:
    delays: dict[int, list[float]] = {h.index: [] for h in hosts}
    rng = random.Random(14)
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            msg = f"m_t{n}"
            path = _path(key, media_id, msg)
            await _warm(http, hosts, path, auth)
            published = time.time()
            await log.publish(revocation.unsent("c_hosts", msg))

            async def landed(h: Host, published: float = published) -> float:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    at = await _applied_at(http, h)
                    if at >= published:
                        return max(0.0, at - published) * 1000
                    await asyncio.sleep(0.002)
                raise BenchError(f"host {h.index} never applied the revocation")

            for h, ms in zip(hosts, await asyncio.gather(*(landed(h) for h in hosts)), strict=True):
                delays[h.index].append(ms)
            refused = await asyncio.gather(*(_get(http, h, path, auth) for h in hosts))
            if set(refused) != {410}:
                raise BenchError(f"after the unsend the fronts answered {refused}")
            # Revocations come at random times, not in step with the edges' long polls (an
            # XREAD re-issued just before the next trial would still be on its way up).
            await asyncio.sleep(rng.uniform(0.1, 0.4))
    return delays


async def partition(
    hosts: list[Host],
    key: SigningKey,
    media_id: str,
    auth: str,
    log: RevocationLog,
    missed: int,
    bound_s: float,
) -> dict[str, Any]:
    cut = hosts[-1]
    assert cut.relay is not None
    async with aiohttp.ClientSession() as http:
        keep = _path(key, media_id, "m_keep")
        doomed = [(f"m_p{n}", _path(key, media_id, f"m_p{n}")) for n in range(missed)]
        for p in [keep, *(p for _, p in doomed)]:
            await _warm(http, [cut], p, auth)
        cut.relay.send_signal(signal.SIGUSR1)
        cut_at = time.monotonic()
        for msg, _ in doomed:
            await log.publish(revocation.unsent("c_hosts", msg))
        served_revoked = 0
        fail_closed_s = None
        while time.monotonic() - cut_at < bound_s + 10:
            if await _get(http, cut, keep, auth) == 503:
                fail_closed_s = time.monotonic() - cut_at
                break
            # Exposure while the host cannot hear: stale cached decisions still answered.
            served_revoked += await _get(http, cut, doomed[0][1], auth) == 206
            await asyncio.sleep(0.05)
        if fail_closed_s is None:
            raise BenchError("the partitioned host never failed closed")
        others = [await _get(http, h, doomed[0][1], auth) for h in hosts[:-1]]
        cut.relay.send_signal(signal.SIGUSR2)
        healed_at = time.monotonic()
        applied = 0
        while time.monotonic() - healed_at < 30:
            got = [await _get(http, cut, p, auth) for _, p in doomed]
            applied = got.count(410)
            if applied == len(doomed) and await _get(http, cut, keep, auth) == 206:
                break
            await asyncio.sleep(0.05)
        return {
            "partition_fail_closed_s": round(fail_closed_s, 2),
            "partition_staleness_bound_s": bound_s,
            "partition_revocations": len(doomed),
            "partition_missed_revocations_applied": applied,
            "partition_catch_up_s": round(time.monotonic() - healed_at, 2),
            "partition_other_hosts_refused": others.count(410) == len(others),
            "partition_polls_served_stale": served_revoked,
        }


async def register(redis_url: str, size: int) -> str:
    redis = connect(redis_url)
    try:
        await MediaRegistry(redis).put(
            Media(
                id="m_hosts",
                owner="alice",
                visibility="private",
                allow_reshare=False,
                audience=AudienceRules(),
                status="active",
                content_type="video/mp4",
                size=size,
                sha256="0" * 64,
                origin=ORIGIN_RELPATH,
                created_at=int(time.time()),
            )
        )
    finally:
        await redis.aclose()
    return "m_hosts"


async def measure(
    hosts: list[Host],
    key: SigningKey,
    media_id: str,
    auth: str,
    redis_url: str,
    count: int,
    missed: int,
    bound_s: float,
) -> dict[str, Any]:
    redis = connect(redis_url)
    try:
        log = RevocationLog(redis)
        delays = await trials(hosts, key, media_id, auth, log, count)
        part = await partition(hosts, key, media_id, auth, log, missed, bound_s)
    finally:
        await redis.aclose()
    return {"delays": delays, **part}


def wait_alive(host: Host, log: Path, timeout_s: float = 60) -> None:
    assert host.front is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if host.front.stats()["alive"]:
                return
        time.sleep(0.1)
    raise BenchError(f"host {host.index}: its edge never made its front alive:\n{log_tail(log)}")


def run(root: Path, delays: list[float], count: int, missed: int, bound_s: float) -> dict[str, Any]:
    netem = netem_available()
    say(
        "delay by tc netem"
        if netem
        else "this kernel has no sch_netem: delaying with the userspace relay instead"
    )
    keys, jwks = write_keys(root)
    issuer = session_issuer(root)
    origin = root / "origin"
    (origin / ORIGIN_RELPATH).parent.mkdir(parents=True)
    data = clip_bytes(256 * 1024)
    (origin / ORIGIN_RELPATH).write_bytes(data)
    env = {
        **edge_env(jwks, root / "keys" / "session" / JWKS_FILE),
        "CDN_AUTH_STALENESS_BOUND_S": str(bound_s),
        "CDN_AUTH_LOG_LEVEL": os.environ.get("BENCH_HOSTS_EDGE_LOG_LEVEL", "WARNING"),
    }
    with namespaces(delays, netem) as hosts, contextlib.ExitStack() as stack:
        # Redis stays on 127.0.0.1 of the root namespace; hosts reach it through their relay.
        redis = stack.enter_context(RedisProcess(root / "redis", appendonly=False))
        for h in hosts:
            relay_port = free_port()
            relay_log = root / f"relay{h.index}.log"
            h.relay = stack.enter_context(
                child_process(
                    [
                        sys.executable,
                        "-m",
                        "loadtests.bench.hosts.relay",
                        "--listen",
                        f"{h.wan_root}:{relay_port}",
                        "--target",
                        f"127.0.0.1:{redis.port}",
                        "--delay-ms",
                        "0" if netem else str(h.delay_ms),
                    ],
                    relay_log,
                )
            )
            edge_port = free_port()
            front = NginxFront(
                root / f"nginx{h.index}",
                port=free_port(),
                authorizer=f"127.0.0.1:{edge_port}",
                origin=origin,
                listen=h.client_host,
                netns=h.ns,
            )
            h.front = front
            cmd = [
                "ip",
                "netns",
                "exec",
                h.ns,
                sys.executable,
                "-m",
                "cdn_auth",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(edge_port),
                "--redis-url",
                f"redis://{h.wan_root}:{relay_port}/0",
                "--origin-dir",
                str(origin),
            ]
            stack.enter_context(
                child_process(cmd, root / f"edge{h.index}.log", {**env, **front.edge_env()})
            )
            stack.enter_context(front)
        media_id = asyncio.run(register(redis.url, len(data)))
        for h in hosts:
            wait_alive(h, root / f"edge{h.index}.log")
        say(f"{len(hosts)} hosts up (one-way delays {delays} ms); {count} trials")
        out = asyncio.run(
            measure(
                hosts,
                keys[Alg.ED25519],
                media_id,
                f"Bearer {issuer.mint('bob', ttl_s=3600)}",
                redis.url,
                count,
                missed,
                bound_s,
            )
        )
        for h in hosts:
            if h.relay is not None:
                stop_process(h.relay)
    by_delay: dict[str, list[float]] = {}
    for h in hosts:
        by_delay.setdefault(f"{h.delay_ms:g}", []).extend(out["delays"][h.index])
    p99 = {d: round(percentile(v, 0.99), 2) for d, v in by_delay.items()}
    p50 = {d: round(statistics.median(v), 2) for d, v in by_delay.items()}
    part = {k: v for k, v in out.items() if k != "delays"}
    return {
        "benchmark": "hosts",
        "hosts": len(hosts),
        "trials": count,
        "delay_method": "netem" if netem else "relay (kernel lacks sch_netem)",
        "revocation_p50_ms_by_delay": p50,
        "revocation_p99_ms_by_delay": p99,
        "target": f"p99 <= one-way delay + {TARGET_P99_MS:.0f} ms",
        "target_met": all(p99[d] <= float(d) + TARGET_P99_MS for d in p99)
        and part["partition_fail_closed_s"] <= bound_s + 1
        and part["partition_missed_revocations_applied"] == part["partition_revocations"],
        **part,
        "note": "hosts are namespaces on one shared 2-core machine: noisy figures",
    }


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("hosts", __doc__)
    p.add_argument(
        "--delays",
        default="0,20,80",
        help="one-way delay (ms) between each host and Redis; one host each",
    )
    p.add_argument("--trials", type=int, default=40)
    p.add_argument(
        "--missed", type=int, default=5, help="revocations published while the last host is cut off"
    )
    p.add_argument(
        "--staleness-s",
        type=float,
        default=5.0,
        help="the edges' staleness bound (CDN_AUTH_STALENESS_BOUND_S)",
    )
    common_flags(p)
    a = p.parse_args(argv)
    delays = [float(d) for d in a.delays.split(",") if d.strip()]
    if not delays or a.trials < 1 or a.missed < 1:
        p.error("--delays, --trials and --missed must be non-empty / positive")
    reason = why_not()
    if reason is not None:
        say(f"skipped: {reason}")
        if a.json:
            print(json.dumps({"benchmark": "hosts", "skipped": reason}))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-hosts-") as tmp:
        result = run(Path(tmp), delays, a.trials, a.missed, a.staleness_s)
    print(
        f"revocation p99 by one-way delay: {result['revocation_p99_ms_by_delay']} ms "
        f"(p50 {result['revocation_p50_ms_by_delay']}); partition: failed closed after "
        f"{result['partition_fail_closed_s']} s (bound {a.staleness_s} s), "
        f"{result['partition_missed_revocations_applied']}/{result['partition_revocations']} "
        f"missed revocations applied {result['partition_catch_up_s']} s after healing",
        file=sys.stderr,
    )
    if a.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
