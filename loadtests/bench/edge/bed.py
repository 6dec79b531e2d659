"""The edge benchmark's bed (Redis, the edge, the two unauthorized baselines) and what
each path requests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cdn_auth import pointer
from cdn_auth.token_format import Alg, SigningKey
from dm.identity import JWKS_FILE
from loadtests.bench.harness import BenchError, child_process, fetch, speaker, wait_ready
from loadtests.bench.pool import Pool
from loadtests.bench.rangegen import RANGE_BYTES, RANGE_HEADER
from loadtests.stack.children import check_alive
from loadtests.stack.servers import (
    CLIP_BYTES,
    INGEST,
    ORIGIN_RELPATH,
    POINTER_TTL_S,
    clip_bytes,
    edge_command,
    edge_env,
    register_media,
    session_issuer,
    write_keys,
)
from service_kernel.redis_process import RedisProcess, free_port

say = speaker("edge")


#: The unauthorized reference servers: path name -> ``--kind`` of :mod:`.baseline`.
BASELINES = {"baseline": "bytes", "baseline_fileresponse": "fileresponse"}
PATHS = ("baseline", "baseline_fileresponse", "warm", "cold_ed25519", "cold_hmac")
COLD_ALGS = {"cold_ed25519": Alg.ED25519, "cold_hmac": Alg.HMAC_SHA256}
FILE_BYTES = CLIP_BYTES
MIN_RPS_HINT = 8000.0  # sizes the first cold pointer pool before any rate is known
SETTLE_S = 0.5  # lets in-flight requests drain before the edge's counters are read


@dataclass
class Testbed:
    root: Path
    edge_port: int
    baseline_ports: dict[str, int]  # path name -> port
    media_id: str
    session: str  # Bob's session token: every request carries it
    data: bytes
    signers: dict[Alg, SigningKey]
    children: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def check_alive(self) -> None:
        """A server that died mid-benchmark is a setup failure, not a slow measurement."""
        for name, proc, log in self.children:
            check_alive(name, proc, log)


def baseline_command(kind: str, origin_file: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loadtests.bench.edge.baseline",
        "--kind",
        kind,
        "--file",
        str(origin_file),
        "--port",
        str(port),
    ]


@contextlib.contextmanager
def testbed(root: Path) -> Iterator[Testbed]:
    """Start Redis, the edge and the baseline servers; stop them all on exit, whatever happens."""
    data = clip_bytes()
    origin_file = root / "origin" / INGEST / ORIGIN_RELPATH
    origin_file.parent.mkdir(parents=True)
    origin_file.write_bytes(data)
    issuer = session_issuer(root)
    signers, pointer_jwks = write_keys(root)
    edge_port = free_port()
    edge_log = root / "edge.log"
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisProcess(root / "redis"))
        edge = stack.enter_context(
            child_process(
                edge_command(edge_port, redis.url, root / "origin"),
                edge_log,
                edge_env(pointer_jwks, root / "keys" / "session" / JWKS_FILE),
            )
        )
        children = [("edge", edge, edge_log)]
        ports: dict[str, int] = {}
        for name, kind in BASELINES.items():
            ports[name] = free_port()
            log = root / f"{name}.log"
            proc = stack.enter_context(
                child_process(baseline_command(kind, origin_file, ports[name]), log)
            )
            children.append((name, proc, log))
        wait_ready("edge", edge, edge_port, "/readyz", edge_log)
        for name, proc, log in children[1:]:
            wait_ready(name, proc, ports[name], "/healthz", log)
        media_id = register_media(edge_port, issuer)
        yield Testbed(
            root,
            edge_port,
            ports,
            media_id,
            issuer.mint("bob", age="adult", region="GB", ttl_s=6 * 3600),
            data,
            signers,
            children,
        )


def media_target(media_id: str, token: str) -> str:
    return f"/m/{media_id}?pointer={token}"


def mint_pointer(key: SigningKey, media_id: str, message_id: str) -> str:
    return pointer.mint(
        key,
        media_id=media_id,
        sub="bob",
        conversation_id="c_bench",
        message_id=message_id,
        now=time.time(),
        ttl_s=POINTER_TTL_S,
    )


@dataclass
class Workload:
    """One benchmarked path: where it goes and which request targets it cycles through."""

    name: str
    port: int
    fixed_target: str | None = None
    key: SigningKey | None = None  # the cold paths: a new pointer from this key per request
    pool: Pool | None = None

    @property
    def is_edge(self) -> bool:
        return self.name not in BASELINES

    def targets(self, expected_requests: int) -> list[str]:
        if self.pool is not None:
            return self.pool.reserve(expected_requests)
        assert self.fixed_target is not None
        return [self.fixed_target]


def cold_pool(key: SigningKey, media_id: str, label: str) -> Pool:
    """Targets each carrying a pointer never sent before: every request a cache miss."""
    return Pool(
        label, lambda i: media_target(media_id, mint_pointer(key, media_id, f"{label}_{i}")), say
    )


def workloads(bed: Testbed) -> list[Workload]:
    """The baselines and warm share one target, so their requests are byte-identical."""
    warm_target = media_target(
        bed.media_id, mint_pointer(bed.signers[Alg.ED25519], bed.media_id, "msg_warm")
    )
    out = [Workload(name, bed.baseline_ports[name], fixed_target=warm_target) for name in BASELINES]
    out.append(Workload("warm", bed.edge_port, fixed_target=warm_target))
    for name, alg in COLD_ALGS.items():
        out.append(
            Workload(
                name,
                bed.edge_port,
                key=bed.signers[alg],
                pool=cold_pool(bed.signers[alg], bed.media_id, f"msg_{name}"),
            )
        )
    return out


def preflight(bed: Testbed, loads: list[Workload]) -> None:
    """Before measuring, check each path really answers a 206 with the right bytes."""
    headers = {"Authorization": f"Bearer {bed.session}", "Range": RANGE_HEADER}
    expected_range = f"bytes 0-{RANGE_BYTES - 1}/{len(bed.data)}"
    for w in loads:
        target = (
            media_target(bed.media_id, mint_pointer(w.key, bed.media_id, f"msg_check_{w.name}"))
            if w.key is not None
            else w.targets(1)[0]
        )
        status, got, body = fetch(w.port, "GET", target, headers=headers)
        if status != 206 or got.get("Content-Range") != expected_range or body != bed.data[:RANGE_BYTES]:
            raise BenchError(
                f"{w.name}: expected 206 {expected_range}, got {status} "
                f"{got.get('Content-Range')} ({len(body)} bytes) {body[:200]!r}"
            )
