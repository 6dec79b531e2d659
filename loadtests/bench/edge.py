"""Edge benchmark: what does authorization cost, next to serving the same bytes bare?

Five paths are driven by one load generator, one after another, on this machine:

``baseline``               the edge's own byte path with NO authorization: an aiohttp route
                           (same app shell: the edge's error middleware) that plans the
                           response with :func:`cdn_auth.ranges.plan` and streams it with
                           :func:`cdn_auth.byte_response.open_origin` and
                           :class:`cdn_auth.byte_response.ByteRangeResponse`, with the same
                           response headers, in its own server process.  The ratios are taken
                           against this, so they isolate what authorization costs.
``baseline_fileresponse``  aiohttp's ``web.FileResponse`` on the same file, no authorization,
                           in its own process: a reference for how the edge's byte path
                           compares with aiohttp's stock file server (``*_vs_fileresponse``)
``warm``                   the edge's hot path: repeat Range requests under ONE pointer and
                           session, so every decision is three cache hits and the rights checks
``cold_ed25519``           a pointer never seen before on every request: Ed25519 verification
                           each time
``cold_hmac``              the same with an HMAC-SHA256 key ring

Every path sends byte-identical request shapes (same ``/m/{id}?pointer=...`` target
length, same ``Authorization`` and ``Range`` headers; the baselines ignore them), so
the only difference the generator sees is what the server does.  The edge runs as
``python -m cdn_auth serve`` (its production entry point) in its own process, with its
own Redis, and verifies pointers of both algorithms from one combined JWKS.

Runs are interleaved (each round rotates the order) and repeated, and the report
takes medians, because a 2-core machine drifts: a single long run per path would
mostly measure *when* it ran.  A run is INVALID, and reported as such, if any
response was not a 206 of the requested size, the edge denied anything, or a cold
run reused a pointer (which would turn it into a cache hit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cdn_auth import pointer
from cdn_auth.keyring import KeyRing
from cdn_auth.token_format import Alg, SigningKey
from dm.identity import JWKS_FILE, DevIssuer
from loadtests.bench.cache_memory import cache_bytes_per_entry
from service_kernel.files import atomic_write
from service_kernel.redis_process import RedisProcess, free_port

HOST = "127.0.0.1"  # the benchmark never targets anything else
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The unauthorized reference servers: path name -> ``serve-baseline --kind`` value.
BASELINES = {"baseline": "bytes", "baseline_fileresponse": "fileresponse"}
PATHS = ("baseline", "baseline_fileresponse", "warm", "cold_ed25519", "cold_hmac")
COLD_ALGS = {"cold_ed25519": Alg.ED25519, "cold_hmac": Alg.HMAC_SHA256}
#: ratio name -> (path, minimum of path rps / baseline rps); ``baseline`` is the edge's
#: byte path without authorization, so these are the cost of authorization alone.
TARGETS: dict[str, tuple[str, float]] = {
    "warm_ratio": ("warm", 0.85),
    "cold_ratio_ed25519": ("cold_ed25519", 0.35),
    "cold_ratio_hmac": ("cold_hmac", 0.70),
}
#: The same ratios against aiohttp's FileResponse (reported, no target): ratio name -> path.
FILERESPONSE_RATIOS = {f"{name}_vs_fileresponse": path for name, (path, _) in TARGETS.items()}
FILE_BYTES = 4 * 1024 * 1024
#: Heap bytes per cached pointer decision an edge may hold (issue 15: 10^5 entries per
#: cache x five caches must stay far from a worker's memory).
CACHE_BYTES_PER_ENTRY_MAX = 400
#: One 64 KiB segment: a realistic small player request, and small enough that
#: per-request work (not copying bytes) dominates, which is what is measured.
RANGE_BYTES = 64 * 1024
RANGE_HEADER = f"bytes=0-{RANGE_BYTES - 1}"
ORIGIN_RELPATH = "bench/clip.mp4"
#: The edge's ingest root under its origin directory: where ``origin_path`` registrations live.
INGEST = "ingest"
POINTER_TTL_S = 900  # the edge's default max_token_lifetime_s: covers any sane run
MIN_RPS_HINT = 8000.0  # sizes the first cold pointer pool before any rate is known
SETTLE_S = 0.5  # lets in-flight requests drain before the edge's counters are read
MARKER = "BENCH_EDGE_RESULT "

LUA_SCRIPT = """\
-- Cycles through a file of request paths (one GET each) with fixed headers, and
-- reports one JSON line.  args: <paths file> <authorization file> <Range value>.
-- Use one thread: each thread would start again at the first path.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   paths = {}
   for line in io.lines(args[1]) do
      if #line > 0 then paths[#paths + 1] = line end
   end
   npaths = #paths
   local f = assert(io.open(args[2], "r"))
   hdrs = {["Authorization"] = f:read("*l"), ["Range"] = args[3]}
   f:close()
   idx = 0
   sent = 0
end

function request()
   idx = idx + 1
   if idx > npaths then idx = 1 end
   sent = sent + 1
   return wrk.format("GET", paths[idx], hdrs)
end

function done(summary, latency, requests)
   local sent_all, npaths_min = 0, nil
   for _, t in ipairs(threads) do
      sent_all = sent_all + t:get("sent")
      local n = t:get("npaths")
      if npaths_min == nil or n < npaths_min then npaths_min = n end
   end
   local e = summary.errors
   io.write(string.format(
      '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"timeout":%d,"status":%d,"p50_us":%.1f,"p99_us":%.1f,"sent":%d,"npaths":%d}\\n',
      "__MARKER__", summary.requests, summary.duration, summary.bytes, e.connect, e.read,
      e.write, e.timeout, e.status, latency:percentile(50), latency:percentile(99),
      sent_all, npaths_min or 0))
end
"""


class BenchError(Exception):
    """The benchmark could not be set up or run (as opposed to a run that measured badly)."""


# -- plumbing: child processes and plain HTTP -------------------------------------------------

def say(message: str) -> None:
    """Progress goes to stderr so that stdout stays the report (or pure JSON)."""
    print(f"[bench edge] {message}", file=sys.stderr, flush=True)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM (aiohttp shuts down gracefully on it), then SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


@contextlib.contextmanager
def child_process(args: list[str], log_path: Path,
                  env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server child with its output in ``log_path``; always stopped on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        try:
            yield proc
        finally:
            stop_process(proc)


def log_tail(path: Path, chars: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def fetch(port: int, method: str, target: str, *, headers: dict[str, str] | None = None,
          body: bytes | None = None,
          timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One request to ``127.0.0.1:port`` (setup and checks only; never part of a measurement)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_ready(name: str, proc: subprocess.Popen[bytes], port: int, target: str,
               log_path: Path, timeout_s: float = 30.0) -> None:
    """Poll ``target`` until 200; a child that exits or never answers is a setup error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{log_tail(log_path)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if fetch(port, "GET", target, timeout_s=1.0)[0] == 200:
                return
        time.sleep(0.05)
    raise BenchError(f"{name} not ready after {timeout_s:.0f}s:\n{log_tail(log_path)}")


# -- the test bed: origin file, keys, Redis, edge, baseline ----------------------------------

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
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")


def clip_bytes(size: int = FILE_BYTES) -> bytes:
    """Deterministic stand-in for a video: the edge only cares about bytes and ranges."""
    out, block = bytearray(), hashlib.sha256(b"bench-edge").digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def write_keys(root: Path) -> tuple[dict[Alg, SigningKey], Path]:
    """One ring per algorithm, and one JWKS holding both, so ONE edge verifies either."""
    rings = {alg: KeyRing.create(root / "keys" / f"pointer-{alg.name.lower()}", alg)
             for alg in (Alg.ED25519, Alg.HMAC_SHA256)}
    jwks = {"keys": [k for ring in rings.values() for k in ring.verify_jwks()["keys"]]}
    path = root / "keys" / "pointer.jwks.json"
    atomic_write(path, json.dumps(jwks).encode(), 0o600)  # it holds the HMAC secret
    return {alg: ring.signer() for alg, ring in rings.items()}, path


def edge_command(port: int, redis_url: str, origin: Path) -> list[str]:
    return [sys.executable, "-m", "cdn_auth", "serve", "--host", HOST, "--port", str(port),
            "--redis-url", redis_url, "--origin-dir", str(origin)]


def baseline_command(kind: str, origin_file: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "loadtests.bench.edge", "serve-baseline", "--kind", kind,
            "--file", str(origin_file), "--port", str(port)]


def edge_env(pointer_jwks: Path, session_jwks: Path) -> dict[str, str]:
    """The edge's settings, as an operator would give them; no inherited CDN_AUTH_* leaks in.

    WARNING log level turns the JSON access log off: the baseline has none
    either, and a per-request log line is not what this benchmark measures.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDN_AUTH_")}
    env.update(CDN_AUTH_POINTER_JWKS=str(pointer_jwks), CDN_AUTH_SESSION_JWKS=str(session_jwks),
               CDN_AUTH_LOG_LEVEL="WARNING", CDN_AUTH_MAX_TOKEN_LIFETIME_S=str(POINTER_TTL_S))
    return env


def register_media(port: int, issuer: DevIssuer) -> str:
    """Register the origin file as Alice's private video, as a content pipeline would."""
    publisher = issuer.mint("publisher", roles=["publisher"])
    body = json.dumps({"origin_path": ORIGIN_RELPATH, "content_type": "video/mp4",
                       "visibility": "private", "min_age": 16, "owner": "alice"}).encode()
    status, _, raw = fetch(port, "POST", "/v1/media", body=body, headers={
        "Authorization": f"Bearer {publisher}", "Content-Type": "application/json"})
    if status != 201:
        raise BenchError(f"media registration failed: {status} {raw[:300]!r}")
    return str(json.loads(raw)["id"])


@contextlib.contextmanager
def testbed(root: Path) -> Iterator[Testbed]:
    """Start Redis, the edge and the baseline servers; stop them all on exit, whatever happens."""
    data = clip_bytes()
    origin_file = root / "origin" / INGEST / ORIGIN_RELPATH
    origin_file.parent.mkdir(parents=True)
    origin_file.write_bytes(data)
    issuer = DevIssuer.load_or_create(root / "keys" / "session")
    signers, pointer_jwks = write_keys(root)
    edge_port = free_port()
    edge_log = root / "edge.log"
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisProcess(root / "redis"))
        edge = stack.enter_context(child_process(
            edge_command(edge_port, redis.url, root / "origin"), edge_log,
            edge_env(pointer_jwks, root / "keys" / "session" / JWKS_FILE)))
        children = [("edge", edge, edge_log)]
        ports: dict[str, int] = {}
        for name, kind in BASELINES.items():
            ports[name] = free_port()
            log = root / f"{name}.log"
            proc = stack.enter_context(child_process(
                baseline_command(kind, origin_file, ports[name]), log))
            children.append((name, proc, log))
        wait_ready("edge", edge, edge_port, "/readyz", edge_log)
        for name, proc, log in children[1:]:
            wait_ready(name, proc, ports[name], "/healthz", log)
        media_id = register_media(edge_port, issuer)
        yield Testbed(root, edge_port, ports, media_id,
                      issuer.mint("bob", age="adult", region="GB", ttl_s=6 * 3600), data, signers,
                      children)


# -- what each path requests ------------------------------------------------------------------

def media_target(media_id: str, token: str) -> str:
    return f"/m/{media_id}?pointer={token}"


def mint_pointer(key: SigningKey, media_id: str, message_id: str) -> str:
    return pointer.mint(key, media_id=media_id, sub="bob", conversation_id="c_bench",
                        message_id=message_id, now=time.time(), ttl_s=POINTER_TTL_S)


@dataclass
class PointerPool:
    """Distinct pointers for one key, handed out so that none is ever sent twice.

    A run gets a slice of unused pointers; afterwards only the ones the generator
    actually sent are retired, so the unsent tail is still cold for the next run.
    """

    key: SigningKey
    media_id: str
    label: str
    targets: list[str] = field(default_factory=list)
    used: int = 0

    def reserve(self, count: int) -> list[str]:
        short = self.used + count - len(self.targets)
        if short > 0:
            started = time.perf_counter()
            base = len(self.targets)
            self.targets += [media_target(self.media_id, mint_pointer(
                self.key, self.media_id, f"{self.label}_{base + i}")) for i in range(short)]
            say(f"minted {short} {self.label} pointers in {time.perf_counter() - started:.1f}s")
        return self.targets[self.used:self.used + count]

    def retire(self, sent: int) -> None:
        self.used = min(self.used + sent, len(self.targets))


@dataclass
class Workload:
    """One benchmarked path: where it goes and which request targets it cycles through."""

    name: str
    port: int
    fixed_target: str | None = None
    pool: PointerPool | None = None

    @property
    def is_edge(self) -> bool:
        return self.name not in BASELINES

    def targets(self, expected_requests: int) -> list[str]:
        if self.pool is not None:
            return self.pool.reserve(expected_requests)
        assert self.fixed_target is not None
        return [self.fixed_target]


def workloads(bed: Testbed) -> list[Workload]:
    """The baselines and warm share one target, so their requests are byte-identical."""
    warm_target = media_target(bed.media_id, mint_pointer(bed.signers[Alg.ED25519],
                                                          bed.media_id, "msg_warm"))
    out = [Workload(name, bed.baseline_ports[name], fixed_target=warm_target)
           for name in BASELINES]
    out.append(Workload("warm", bed.edge_port, fixed_target=warm_target))
    for name, alg in COLD_ALGS.items():
        out.append(Workload(name, bed.edge_port,
                            pool=PointerPool(bed.signers[alg], bed.media_id, f"msg_{name}")))
    return out


def preflight(bed: Testbed, loads: list[Workload]) -> None:
    """Before measuring, check each path really answers a 206 with the right bytes."""
    headers = {"Authorization": f"Bearer {bed.session}", "Range": RANGE_HEADER}
    expected_range = f"bytes 0-{RANGE_BYTES - 1}/{len(bed.data)}"
    for w in loads:
        target = (media_target(bed.media_id, mint_pointer(w.pool.key, bed.media_id,
                                                          f"msg_check_{w.name}"))
                  if w.pool is not None else w.targets(1)[0])
        status, got, body = fetch(w.port, "GET", target, headers=headers)
        if status != 206 or got.get("Content-Range") != expected_range \
                or body != bed.data[:RANGE_BYTES]:
            raise BenchError(f"{w.name}: expected 206 {expected_range}, got {status} "
                             f"{got.get('Content-Range')} ({len(body)} bytes) {body[:200]!r}")


# -- load generators --------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadSpec:
    port: int
    targets_file: Path
    auth_file: Path
    duration_s: int
    connections: int


@dataclass(frozen=True)
class RawRun:
    """What a generator reports for one run (both generators emit the same JSON)."""

    requests: int
    duration_s: float
    bytes: int
    socket_errors: int
    timeouts: int
    status_errors: int  # responses >= 400
    non_206: int | None  # exact count where the generator checks statuses (Python only)
    p50_ms: float
    p99_ms: float
    sent: int
    ntargets: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RawRun:
        return cls(int(doc["requests"]), doc["duration_us"] / 1e6, int(doc["bytes"]),
                   int(doc["connect"]) + int(doc["read"]) + int(doc["write"]),
                   int(doc["timeout"]), int(doc["status"]),
                   None if doc.get("non206") is None else int(doc["non206"]),
                   doc["p50_us"] / 1000, doc["p99_us"] / 1000, int(doc["sent"]),
                   int(doc["npaths"]))


@dataclass(frozen=True)
class Generator:
    name: str
    version: str
    run: Callable[[LoadSpec], RawRun]


def parse_marker(stdout: str, what: str, stderr: str) -> RawRun:
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            return RawRun.from_doc(json.loads(line[len(MARKER):]))
    raise BenchError(f"{what} printed no result:\n{stdout[-800:]}\n{stderr[-800:]}")


def wrk_generator(wrk: str, script: Path) -> Generator:
    """wrk, one thread, driven by a Lua script that cycles through a file of targets."""
    script.write_text(LUA_SCRIPT.replace("__MARKER__", MARKER))
    probe = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    banner = (probe.stdout or probe.stderr).split("\n", 1)[0]  # "wrk 4.1.0 [epoll] Copyright..."
    version = banner.split(" [", 1)[0].strip() or "wrk"

    def run(spec: LoadSpec) -> RawRun:
        cmd = [wrk, "-t1", f"-c{spec.connections}", f"-d{spec.duration_s}s", "--timeout", "10s",
               "-s", str(script), f"http://{HOST}:{spec.port}", "--",
               str(spec.targets_file), str(spec.auth_file), RANGE_HEADER]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=spec.duration_s + 120)
        return parse_marker(done.stdout, "wrk", done.stderr)

    return Generator("wrk", version, run)


def python_generator() -> Generator:
    """Fallback when wrk is missing: aiohttp client in a separate process (see ``loadgen``)."""
    import aiohttp

    def run(spec: LoadSpec) -> RawRun:
        cmd = [sys.executable, "-m", "loadtests.bench.edge", "loadgen", "--port", str(spec.port),
               "--targets", str(spec.targets_file), "--auth-file", str(spec.auth_file),
               "--duration", str(spec.duration_s), "--connections", str(spec.connections)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO_ROOT,
                              timeout=spec.duration_s + 120)
        return parse_marker(done.stdout, "python load generator", done.stderr)

    return Generator("python-aiohttp", f"aiohttp {aiohttp.__version__}", run)


def choose_generator(wanted: str, work: Path) -> Generator:
    wrk = shutil.which("wrk")
    if wanted == "wrk" and wrk is None:
        raise BenchError("--generator wrk, but wrk is not on PATH (apt-get install wrk)")
    if wanted != "python" and wrk is not None:
        return wrk_generator(wrk, work / "cycle.lua")
    if wanted == "auto":
        say("wrk not on PATH: falling back to the Python (aiohttp) load generator; "
            "it competes with the server for CPU, so absolute rates are lower")
    return python_generator()


async def generate(port: int, targets: list[str], headers: dict[str, str], duration_s: float,
                   connections: int) -> dict[str, Any]:
    """The Python generator's load loop: ``connections`` keep-alive workers until the deadline."""
    import aiohttp

    latencies: list[float] = []
    counts = {"requests": 0, "bytes": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0,
              "status": 0, "non206": 0, "sent": 0}
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(f"http://{HOST}:{port}", connector=connector,
                                     timeout=timeout) as client:
        deadline = loop.time() + duration_s

        async def worker() -> None:
            while loop.time() < deadline:
                target = targets[counts["sent"] % len(targets)]
                counts["sent"] += 1
                started = time.perf_counter()
                try:
                    async with client.get(target, headers=headers) as resp:
                        body = await resp.read()
                except TimeoutError:
                    counts["timeout"] += 1
                    continue
                except aiohttp.ClientError:
                    counts["read"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                counts["requests"] += 1
                counts["bytes"] += len(body)
                counts["status"] += resp.status >= 400
                counts["non206"] += resp.status != 206

        started = loop.time()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = loop.time() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6 if latencies else 0.0

    return {**counts, "duration_us": elapsed * 1e6, "p50_us": pct(0.50), "p99_us": pct(0.99),
            "npaths": len(targets)}


# -- measuring and judging one run ------------------------------------------------------------

@dataclass(frozen=True)
class EdgeCounters:
    """The edge's own view of a run, from /metrics: did it allow, and was the cache cold?"""

    allowed: float = 0.0
    denied: float = 0.0
    pointer_hits: float = 0.0
    pointer_misses: float = 0.0

    def minus(self, before: EdgeCounters) -> EdgeCounters:
        return EdgeCounters(self.allowed - before.allowed, self.denied - before.denied,
                            self.pointer_hits - before.pointer_hits,
                            self.pointer_misses - before.pointer_misses)


_SAMPLE_RE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL_RE = re.compile(r'(\w+)="([^"]*)"')


def edge_counters(port: int) -> EdgeCounters:
    try:
        _, _, body = fetch(port, "GET", "/metrics")
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"the edge did not answer /metrics: {exc}") from exc
    sums = {"allow": 0.0, "deny": 0.0, "hit": 0.0, "miss": 0.0}
    for line in body.decode().splitlines():
        m = _SAMPLE_RE.match(line)
        if m is None:
            continue
        labels = dict(_LABEL_RE.findall(m["labels"]))
        if m["name"] == "cdn_auth_decisions_total":
            sums[labels.get("outcome", "")] = sums.get(labels.get("outcome", ""), 0.0) \
                + float(m["value"])
        elif m["name"] == "cdn_auth_cache_lookups_total" and labels.get("cache") == "pointer":
            sums[labels.get("result", "")] = sums.get(labels.get("result", ""), 0.0) \
                + float(m["value"])
    return EdgeCounters(sums["allow"], sums["deny"], sums["hit"], sums["miss"])


@dataclass(frozen=True)
class RunResult:
    path: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors, timeouts and non-2xx/3xx responses
    bytes_per_response: float
    pointer_cache_misses: int | None
    problems: tuple[str, ...]


def generator_problems(raw: RawRun, cold: bool) -> list[str]:
    """What the generator saw: every response must be a 206 carrying exactly the range."""
    out = []
    if raw.requests == 0:
        out.append("no responses")
    if raw.status_errors:
        out.append(f"{raw.status_errors} non-2xx/3xx responses")
    if raw.non_206:
        out.append(f"{raw.non_206} responses were not 206")
    if raw.socket_errors or raw.timeouts:
        out.append(f"{raw.socket_errors} socket errors, {raw.timeouts} timeouts")
    per = raw.bytes / raw.requests if raw.requests else 0.0
    if raw.requests and not RANGE_BYTES <= per <= RANGE_BYTES * 1.5:
        out.append(f"responses average {per:.0f} bytes; a 206 of {RANGE_BYTES} was expected")
    if cold and raw.sent > raw.ntargets:
        out.append(f"pointer pool wrapped ({raw.sent} sent, {raw.ntargets} minted): "
                   "pointers were reused, so some requests hit the cache")
    return out


def edge_problems(delta: EdgeCounters, raw: RawRun, cold: bool) -> list[str]:
    """What the edge saw: nothing denied, one allow per response, and cold really cold."""
    out = []
    if delta.denied:
        out.append(f"the edge denied {delta.denied:.0f} requests")
    if delta.allowed < raw.requests:
        out.append(f"the edge allowed {delta.allowed:.0f} but {raw.requests} responses arrived")
    lookups = delta.pointer_hits + delta.pointer_misses
    if cold and delta.pointer_hits:
        out.append(f"{delta.pointer_hits:.0f} pointer cache hits in a cold run")
    if not cold and lookups and delta.pointer_misses > 0.01 * lookups:
        out.append(f"{delta.pointer_misses:.0f} pointer cache misses in a warm run")
    return out


def run_once(w: Workload, bed: Testbed, gen: Generator, *, round_no: int, seconds: int,
             connections: int, rps_hint: float) -> RunResult:
    """One generator run against one path, judged by the generator and by the edge."""
    targets = w.targets(int(max(rps_hint, MIN_RPS_HINT) * (seconds + 2) * 1.3))
    targets_file = bed.root / "targets" / f"{w.name}-{round_no}.txt"
    targets_file.write_text("\n".join(targets) + "\n")
    bed.check_alive()
    before = edge_counters(bed.edge_port) if w.is_edge else None
    raw = gen.run(LoadSpec(w.port, targets_file, bed.root / "auth.txt", seconds, connections))
    bed.check_alive()
    if w.pool is not None:
        w.pool.retire(raw.sent)
    problems = generator_problems(raw, cold=w.pool is not None)
    misses = None
    if before is not None:
        time.sleep(SETTLE_S)
        delta = edge_counters(bed.edge_port).minus(before)
        misses = int(delta.pointer_misses)
        problems += edge_problems(delta, raw, cold=w.pool is not None)
    rps = raw.requests / raw.duration_s if raw.duration_s else 0.0
    return RunResult(w.name, round_no, rps, raw.p50_ms, raw.p99_ms, raw.requests,
                     raw.socket_errors + raw.timeouts + raw.status_errors + (raw.non_206 or 0),
                     raw.bytes / raw.requests if raw.requests else 0.0, misses, tuple(problems))


def progress(r: RunResult, label: str) -> None:
    verdict = "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)
    say(f"{label} {r.path:<21} {r.rps:9.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
        f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}  {verdict}")


@dataclass(frozen=True)
class Options:
    duration_s: int
    connections: int
    rounds: int
    warmup_s: int
    json: bool
    generator: str
    dir: Path | None


def measure(bed: Testbed, loads: list[Workload], gen: Generator, opts: Options) -> list[RunResult]:
    """A warm-up pass, then ``rounds`` interleaved rounds, each rotating the order of paths."""
    best = 0.0
    if opts.warmup_s > 0:
        for w in loads:
            r = run_once(w, bed, gen, round_no=0, seconds=opts.warmup_s,
                         connections=opts.connections, rps_hint=best)
            best = max(best, r.rps)
            progress(r, "warm-up  ")
    results = []
    for n in range(1, opts.rounds + 1):
        shift = (n - 1) % len(loads)
        for w in loads[shift:] + loads[:shift]:
            r = run_once(w, bed, gen, round_no=n, seconds=opts.duration_s,
                         connections=opts.connections, rps_hint=best)
            best = max(best, r.rps)
            results.append(r)
            progress(r, f"round {n}/{opts.rounds}")
    return results


# -- the report -------------------------------------------------------------------------------

def path_summary(runs: list[RunResult]) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]
    return {
        "rps": round(statistics.median(r.rps for r in runs), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in runs), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in runs), 3),
        "errors": sum(r.errors for r in runs),
        "requests": sum(r.requests for r in runs),
        "rps_rounds": [round(r.rps, 1) for r in sorted(runs, key=lambda r: r.round)],
        "valid": not problems,
        "problems": problems,
    }


def summarize(results: list[RunResult], gen: Generator, opts: Options,
              file_bytes: int) -> dict[str, Any]:
    paths = {name: path_summary([r for r in results if r.path == name]) for name in PATHS}
    base = paths["baseline"]["rps"]
    report: dict[str, Any] = {
        "benchmark": "edge", "valid": all(p["valid"] for p in paths.values()),
        "generator": gen.name, "generator_version": gen.version, "threads": 1,
        "connections": opts.connections, "duration_s": opts.duration_s, "rounds": opts.rounds,
        "warmup_s": opts.warmup_s, "range": RANGE_HEADER, "range_bytes": RANGE_BYTES,
        "file_bytes": file_bytes, "cpus": os.cpu_count(), "statistic": "median of rounds",
    }
    targets = {}
    for ratio, (path, minimum) in TARGETS.items():
        value = round(paths[path]["rps"] / base, 3) if base else None
        report[ratio] = value
        targets[ratio] = {"target": minimum, "value": value,
                          "met": value is not None and value >= minimum}
    report["targets"] = targets
    report["targets_met"] = all(t["met"] for t in targets.values())
    fr = paths["baseline_fileresponse"]["rps"]
    for ratio, path in FILERESPONSE_RATIOS.items():
        report[ratio] = round(paths[path]["rps"] / fr, 3) if fr else None
    report["baseline_vs_fileresponse"] = round(base / fr, 3) if fr else None
    report["paths"] = paths
    report["runs"] = [{"path": r.path, "round": r.round, "rps": round(r.rps, 1),
                       "p50_ms": round(r.p50_ms, 3), "p99_ms": round(r.p99_ms, 3),
                       "requests": r.requests, "errors": r.errors,
                       "bytes_per_response": round(r.bytes_per_response, 1),
                       "pointer_cache_misses": r.pointer_cache_misses,
                       "problems": list(r.problems)} for r in results]
    return report


def render_table(report: dict[str, Any]) -> str:
    head = (f"edge benchmark: generator {report['generator']} ({report['generator_version']}), "
            f"{report['threads']} thread, {report['connections']} connections; "
            f"median of {report['rounds']} interleaved rounds x {report['duration_s']} s; "
            f"Range {report['range']} of a {report['file_bytes']}-byte file; {report['cpus']} CPUs")
    lines = [head, "",
             f"{'path':<23}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
             f"{'ratio':>8}{'vs FR':>8}  {'target':<9}{'met':<5}{'valid':<6}"]
    ratio_of = {path: (name, minimum) for name, (path, minimum) in TARGETS.items()}
    fr_of = {path: name for name, path in FILERESPONSE_RATIOS.items()}

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for path in PATHS:
        p = report["paths"][path]
        ratio, target, met = "", "", ""
        vs_fr = fmt(report["baseline_vs_fileresponse"]) if path == "baseline" else ""
        if path == "baseline":
            ratio = "1.000"
        elif path == "baseline_fileresponse":
            vs_fr = "1.000"
        if path in ratio_of:
            name, minimum = ratio_of[path]
            t = report["targets"][name]
            ratio = fmt(t["value"])
            target, met = f">= {minimum:.2f}", "yes" if t["met"] else "NO"
        if path in fr_of:
            vs_fr = fmt(report[fr_of[path]])
        lines.append(f"{path:<23}{p['rps']:>10.0f}{p['p50_ms']:>10.2f}{p['p99_ms']:>10.2f}"
                     f"{p['errors']:>8}{ratio:>8}{vs_fr:>8}  {target:<9}{met:<5}"
                     f"{'yes' if p['valid'] else 'NO':<6}")
    if "cache_bytes_per_entry" in report:
        t = report["targets"]["cache_bytes_per_entry"]
        lines.append(f"cache_bytes_per_entry {t['value']:.0f} (target <= {t['target_max']}: "
                     f"{'met' if t['met'] else 'NOT met'}; heap bytes per cached pointer)")
    lines.append("")
    lines.append("ratio: req/s over `baseline` (the edge's byte path, no authorization); "
                 "vs FR: over `baseline_fileresponse` (aiohttp FileResponse)")
    if report["valid"]:
        lines.append("VALID: every response a 206 of the range, no edge denials, "
                     "no pointer reused in the cold runs")
    else:
        lines.append("INVALID measurement; problems:")
        lines += [f"  {path}: {msg}" for path in PATHS for msg in report["paths"][path]["problems"]]
    verdict = "all met" if report["targets_met"] else "NOT all met"
    lines.append(f"targets: {verdict} (a missed target does not fail the run)" if report["valid"]
                 else f"targets: {verdict} by the figures above, but they are not trustworthy")
    return "\n".join(lines)


# -- entry points -----------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench edge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds per measured run (default 5)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path (3)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per path (1; 0: none)")
    p.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                   help="load generator: wrk if on PATH (auto), or force one")
    p.add_argument("--dir", type=Path, help="working directory, recreated and kept "
                   "(default: a temporary one, removed at the end)")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON on stdout (the table then goes to stderr)")
    return p


def options(argv: list[str] | None) -> Options:
    a = parser().parse_args(argv)
    if a.duration < 1 or a.connections < 1 or a.rounds < 1 or a.warmup < 0:
        parser().error("--duration, --connections and --rounds must be >= 1, --warmup >= 0")
    return Options(a.duration, a.connections, a.rounds, a.warmup, a.json, a.generator, a.dir)


WORKDIR_MARK = ".bench-edge"


def workdir(stack: contextlib.ExitStack, wanted: Path | None) -> Path:
    """A fresh directory; a temporary one is removed after every process in it has stopped.

    A given ``--dir`` is only ever wiped if it is empty or an earlier run made it
    (it carries a marker file), so a mistyped path cannot delete someone's files.
    """
    if wanted is not None:
        if wanted.exists() and any(wanted.iterdir()) and not (wanted / WORKDIR_MARK).exists():
            raise BenchError(f"{wanted} is not empty and was not made by this benchmark")
        shutil.rmtree(wanted, ignore_errors=True)
        wanted.mkdir(parents=True)
        (wanted / WORKDIR_MARK).touch()
        return wanted.resolve()
    root = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    return root


def run(opts: Options) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        root = workdir(stack, opts.dir)
        (root / "targets").mkdir()
        gen = choose_generator(opts.generator, root)
        say(f"starting Redis, the edge and the baseline under {root} (generator: {gen.version})")
        bed = stack.enter_context(testbed(root))
        atomic_write(root / "auth.txt", f"Bearer {bed.session}\n".encode(), 0o600)
        loads = workloads(bed)
        preflight(bed, loads)
        results = measure(bed, loads, gen, opts)
        say("stopping the servers")
    report = summarize(results, gen, opts, FILE_BYTES)
    say("measuring memory per cached pointer decision")
    add_cache_memory(report, cache_bytes_per_entry())
    return report


def add_cache_memory(report: dict[str, Any], bytes_per_entry: float) -> None:
    """``cache_bytes_per_entry``: heap bytes per cached pointer decision (in-process,
    :mod:`loadtests.bench.cache_memory`), with its target (at most CACHE_BYTES_PER_ENTRY_MAX)."""
    value = round(bytes_per_entry, 1)
    report["cache_bytes_per_entry"] = value
    report["targets"]["cache_bytes_per_entry"] = {
        "target_max": CACHE_BYTES_PER_ENTRY_MAX, "value": value,
        "met": value <= CACHE_BYTES_PER_ENTRY_MAX}
    report["targets_met"] = all(t["met"] for t in report["targets"].values())


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every child is stopped on the way out."""
    raise KeyboardInterrupt


def run_and_report(run: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str], *,
                   as_json: bool, say: Callable[[str], None]) -> int:
    """What every benchmark's ``main`` does once its options are parsed: run with SIGTERM
    unwinding like Ctrl-C (so every child process is stopped), print the table (to stderr
    when stdout carries the JSON), and exit 0 on a valid measurement, 1 if invalid or
    failed, 130 if interrupted.  A missed target is not a failure."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run()
    except KeyboardInterrupt:
        say("interrupted; every process was stopped")
        return 130
    except BenchError as exc:
        say(f"error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(render(report), file=sys.stderr if as_json else sys.stdout, flush=True)
    if as_json:
        print(json.dumps(report, indent=2))
    return 0 if report["valid"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on a valid measurement (targets met or not), 1 if invalid or failed."""
    opts = options(argv)
    return run_and_report(lambda: run(opts), render_table, as_json=opts.json, say=say)


# -- child roles: ``python -m loadtests.bench.edge serve-baseline|loadgen`` -------------------

def serve_baseline(argv: list[str]) -> int:
    """A baseline server: no authorization, no access log.

    ``--kind bytes`` (the ``baseline`` path) serves the file exactly as the edge's
    ``GET /m/{id}`` does once a request is allowed: the same app shell (the edge's error
    middleware), :func:`cdn_auth.ranges.plan` for the conditional/Range decision,
    :func:`cdn_auth.byte_response.open_origin` (open + size check per request) and
    :class:`cdn_auth.byte_response.ByteRangeResponse` (sendfile), with the same response
    headers.  The representation's validators (content-hash ETag, Last-Modified) are
    computed once at start-up, as a registry record would carry them, so the route does
    only per-request work.  ``--kind fileresponse`` is aiohttp's ``web.FileResponse``.
    """
    from aiohttp import web

    from cdn_auth import ranges
    from cdn_auth.byte_response import ByteRangeResponse, open_origin
    from cdn_auth.errors import RangeNotSatisfiable
    from service_kernel.web_errors import error_middleware, error_response

    p = argparse.ArgumentParser(prog="bench_edge serve-baseline")
    p.add_argument("--kind", choices=sorted(set(BASELINES.values())), default="bytes")
    p.add_argument("--file", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args(argv)
    file: Path = a.file.resolve()
    size = file.stat().st_size
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    etag = f'"{digest[:32]}"'  # as Media.etag
    last_modified = email.utils.formatdate(int(file.stat().st_mtime), usegmt=True)

    async def fileresponse(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(file)

    async def edge_bytes(request: web.Request) -> web.StreamResponse:
        # Mirrors cdn_auth.web_edge.media after the decision; keep the two in step.
        plan = ranges.plan(request.headers, size=size, etag=etag, last_modified=last_modified)
        headers = {**plan.headers, "Cache-Control": "private, max-age=0, must-revalidate",
                   "Vary": "Authorization"}
        if plan.status == 304:
            return web.Response(status=304, headers=headers)
        if plan.status == 416:
            resp = error_response(RangeNotSatisfiable(size))
            resp.headers.update(headers)
            return resp
        headers["Content-Type"] = "video/mp4"
        fobj = open_origin(file, size)
        return ByteRangeResponse(fobj=fobj, offset=plan.start, count=plan.length,
                                 status=plan.status, headers=headers)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    if a.kind == "bytes":
        app = web.Application(middlewares=[error_middleware()], client_max_size=1024 * 1024)
        app.router.add_get("/m/{media_id}", edge_bytes)
    else:
        app = web.Application()
        app.router.add_get("/m/{media_id}", fileresponse)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=HOST, port=a.port, access_log=None, print=None)
    return 0


def loadgen(argv: list[str]) -> int:
    """The fallback generator's process: prints one marker line of JSON, like the Lua script."""
    p = argparse.ArgumentParser(prog="bench_edge loadgen")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--targets", type=Path, required=True)
    p.add_argument("--auth-file", type=Path, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--connections", type=int, required=True)
    a = p.parse_args(argv)
    targets = [t for t in a.targets.read_text().splitlines() if t]
    headers = {"Authorization": a.auth_file.read_text().strip(), "Range": RANGE_HEADER}
    doc = asyncio.run(generate(a.port, targets, headers, a.duration, a.connections))
    print(MARKER + json.dumps(doc), flush=True)
    return 0


def child_main(argv: list[str]) -> int:
    roles = {"serve-baseline": serve_baseline, "loadgen": loadgen}
    if argv and argv[0] in roles:
        return roles[argv[0]](argv[1:])
    return main(argv)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
