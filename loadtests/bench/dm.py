"""DM benchmark: how many sends does ONE dm process accept, and how soon are they pushed?

Two measurements against ``python -m dm serve`` (its production entry point) in its own
process, with its own Redis, on 127.0.0.1 only:

``send``  closed loop: wrk (one thread, ``--connections`` keep-alive connections) POSTs
          messages as fast as the dm accepts them, cycling over ``--pairs`` sender ->
          recipient conversations, so the per-sender, per-conversation rate limit
          (``DM_SEND_RATE_PER_S``, left at its default of 50/s unless ``--send-rate-limit``)
          never binds: at 2000 sends/s over 128 conversations each sees ~16/s.  Every
          request carries a fresh Idempotency-Key (as the SDK's do).  Every response must
          be a 201, no line of the request file may be sent twice, and the dm's own
          ``dm_sends_total`` must agree with what wrk saw.
``push``  open loop at fixed rates (1000 messages/s, the target's rate, then 500 and 250
          for the shape of the curve): a Python load generator in its own process
          (prepared requests on keep-alive asyncio streams, to stay cheap; aiohttp for the
          WebSockets) holds every recipient's WebSocket
          (``GET /v1/stream``) and fires send k at its *intended* time ``t0 + k / rate``
          whether or not earlier sends have finished.  Latency runs from that intended
          time to the frame's arrival at the recipient, so a server (or generator) that
          stalls shows up as latency instead of silently lowering the rate (coordinated
          omission).  A recipient whose socket the dm drops reconnects with its last
          cursor, as the SDK does, so those messages arrive late (and count so) rather
          than never.  Every accepted send must be pushed exactly once.  Besides latency,
          each run reports refused sends by status, dropped sockets, and the dm's CPU per
          message (from ``/proc``, which a noisy machine distorts less than wall time).

Messages are plain-mode video shares by default (``--message media``): each sender shares
a private video it owns, so the dm checks the media record and the right to share, and
mints a pointer for each reader (the sender's 201 and every push).  ``--message text``
sends text only.  Access logs are off (``DM_LOG_LEVEL=WARNING``), as in the edge benchmark.

Runs are interleaved (each round rotates the order) and repeated; the report takes the
median of the rounds, because a 2-core machine drifts.  Progress goes to stderr.

This module also holds the pieces ``bench_sealed`` reuses: the wrk request-file runner,
the dm child process, and the users/conversations set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cdn_auth.media import AudienceRules, Media
from cdn_auth.registry import MediaRegistry
from dm.client import DmClient
from dm.envelope import DeviceKey
from dm.identity import DevIssuer
from loadtests.bench.edge import (
    HOST,
    REPO_ROOT,
    BenchError,
    child_process,
    fetch,
    run_and_report,
    wait_ready,
)
from service_kernel.files import atomic_write
from service_kernel.ids import new_id
from service_kernel.redis_client import connect
from service_kernel.redis_process import RedisProcess, free_port

TARGET_SEND_RPS = 2000.0
TARGET_PUSH_P99_MS = 20.0
#: dm CPU per message when one process both accepts the send and pushes it (issue 10).
TARGET_CPU_US_PER_MESSAGE = 400.0
#: An open-loop run met its rate if at least this share of it was accepted on schedule.
RATE_MET_FRACTION = 0.98
MARKER = "BENCH_RESULT "
SETTLE_S = 0.3  # lets the last responses land before the server's counters are read
MIN_SEND_HINT = 3000.0  # sizes the first request file before any rate is known
MEDIA_BYTES = 4 * 1024 * 1024  # the size the media records claim (the dm never reads bytes)

REQUESTS_LUA = """\
-- Cycles through a file of requests, one per line, tab-separated:
--   METHOD  PATH  AUTHORIZATION  IDEMPOTENCY-KEY  BODY
-- (an empty Authorization takes the default from the auth file; an empty key or body
-- means none).  Requests are formatted once, in init, so the run only hands out strings.
-- Every response's status (and body length, unless -1) is checked; reports one JSON line.
-- args: <lines file> <auth file> <expected status> <expected body bytes> <"Name: value" | ->
-- Use one thread: each thread would start again at the first line.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local f = assert(io.open(args[2], "r"))
   local default_auth = f:read("*l") or ""
   f:close()
   expected = tonumber(args[3])
   expected_len = tonumber(args[4])
   local xname, xvalue = nil, nil
   if args[5] ~= "-" then xname, xvalue = string.match(args[5], "^([^:]+):%s*(.*)$") end
   reqs = {}
   for line in io.lines(args[1]) do
      if #line > 0 then
         local method, path, auth, key, body = string.match(line,
            "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         local h = {}
         if auth == "" then auth = default_auth end
         if auth ~= "" then h["Authorization"] = auth end
         if key ~= "" then h["Idempotency-Key"] = key end
         if body == "" then body = nil else h["Content-Type"] = "application/json" end
         if xname then h[xname] = xvalue end
         reqs[#reqs + 1] = wrk.format(method, path, h, body)
      end
   end
   nreqs = #reqs
   idx, sent, ok, bad_status, bad_length, first_bad = 0, 0, 0, 0, 0, 0
end

function request()
   idx = idx + 1
   if idx > nreqs then idx = 1 end
   sent = sent + 1
   return reqs[idx]
end

function response(status, headers, body)
   if status ~= expected then
      bad_status = bad_status + 1
      if first_bad == 0 then first_bad = status end
   elseif expected_len >= 0 and (body and #body or 0) ~= expected_len then
      bad_length = bad_length + 1
   else
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local t = {sent = 0, ok = 0, bad_status = 0, bad_length = 0, first_bad = 0, nreqs = -1}
   for _, th in ipairs(threads) do
      for _, name in ipairs({"sent", "ok", "bad_status", "bad_length"}) do
         t[name] = t[name] + th:get(name)
      end
      if t.first_bad == 0 then t.first_bad = th:get("first_bad") end
      local n = th:get("nreqs")
      if t.nreqs < 0 or n < t.nreqs then t.nreqs = n end
   end
   local e = summary.errors
   io.write(string.format(
      '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,'
      .. '"p50_us":%.1f,"p99_us":%.1f,"sent":%d,"ok":%d,"bad_status":%d,"bad_length":%d,'
      .. '"first_bad":%d,"nlines":%d}\\n',
      "__MARKER__", summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), t.sent, t.ok, t.bad_status,
      t.bad_length, t.first_bad, t.nreqs))
end
"""


# -- plumbing ---------------------------------------------------------------------------------

def say(message: str) -> None:
    """Progress goes to stderr so that stdout stays the report (or pure JSON)."""
    print(f"[bench dm] {message}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every child is stopped on the way out."""
    raise KeyboardInterrupt


def workdir(stack: contextlib.ExitStack, wanted: Path | None, name: str) -> Path:
    """A fresh directory; a temporary one is removed after every process in it has stopped.

    A given ``--dir`` is only wiped if it is empty or an earlier run of this benchmark
    made it (it carries a marker file), so a mistyped path cannot delete someone's files.
    """
    mark = f".bench-{name}"
    if wanted is not None:
        if wanted.exists() and any(wanted.iterdir()) and not (wanted / mark).exists():
            raise BenchError(f"{wanted} is not empty and was not made by this benchmark")
        shutil.rmtree(wanted, ignore_errors=True)
        wanted.mkdir(parents=True)
        (wanted / mark).touch()
        return wanted.resolve()
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    return root


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


# -- Prometheus scraping: the servers' own view of a run --------------------------------------

_SAMPLE_RE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL_RE = re.compile(r'(\w+)="([^"]*)"')
Sample = tuple[str, dict[str, str], float]


def scrape(port: int) -> list[Sample]:
    """Every sample of ``GET /metrics``; a server that does not answer is a setup failure."""
    try:
        status, _, body = fetch(port, "GET", "/metrics")
    except OSError as exc:
        raise BenchError(f"port {port} did not answer /metrics: {exc}") from exc
    if status != 200:
        raise BenchError(f"/metrics on port {port} answered {status}")
    out: list[Sample] = []
    for line in body.decode().splitlines():
        m = _SAMPLE_RE.match(line)
        if m is not None and not line.startswith("#"):
            out.append((m["name"], dict(_LABEL_RE.findall(m["labels"] or "")), float(m["value"])))
    return out


def metric_sum(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used so far (Linux ``/proc``; None elsewhere).

    CPU per operation is the figure a noisy 2-core machine distorts least: other
    processes steal wall-clock time from the server, not the CPU it spends per request.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a server process and of its Redis at one moment."""

    server: float | None
    redis: float | None

    def per_op_us(self, before: Cpu, ops: int) -> dict[str, float | None]:
        """Microseconds of CPU per operation since ``before``, for the server and its Redis."""
        def each(now: float | None, then: float | None) -> float | None:
            return None if now is None or then is None or ops <= 0 \
                else round((now - then) / ops * 1e6, 1)

        return {"server": each(self.server, before.server), "redis": each(self.redis, before.redis)}


# -- wrk driven by a file of requests (shared with bench_sealed) ------------------------------

def request_line(method: str, path: str, *, auth: str = "", key: str = "", body: str = "") -> str:
    """One line of a request file; the fields may hold neither tabs nor newlines."""
    fields = (method, path, auth, key, body)
    if any("\t" in f or "\n" in f for f in fields):
        raise BenchError(f"a request field holds a tab or newline: {path}")
    return "\t".join(fields)


@dataclass(frozen=True)
class WrkSpec:
    port: int
    lines_file: Path
    auth_file: Path  # the default Authorization value, for lines that leave it empty
    duration_s: float
    connections: int
    expected_status: int
    expected_len: int = -1  # -1: any body length
    extra_header: str = "-"  # "Name: value" sent with every request, or "-"


@dataclass(frozen=True)
class WrkRun:
    """What wrk saw in one run; ``ok`` counts only responses of the expected status and size."""

    requests: int
    duration_s: float
    ok: int
    bad_status: int
    bad_length: int
    first_bad: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float
    sent: int
    nlines: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> WrkRun:
        return cls(int(doc["requests"]), doc["duration_us"] / 1e6, int(doc["ok"]),
                   int(doc["bad_status"]), int(doc["bad_length"]), int(doc["first_bad"]),
                   int(doc["connect"]) + int(doc["read"]) + int(doc["write"]),
                   int(doc["timeout"]), doc["p50_us"] / 1000, doc["p99_us"] / 1000,
                   int(doc["sent"]), int(doc["nlines"]))

    @property
    def rps(self) -> float:
        """Good responses per second: a refused or malformed answer is not throughput."""
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.bad_status + self.bad_length + self.socket_errors + self.timeouts

    def problems(self, *, once: bool) -> list[str]:
        """Why this run cannot be trusted (empty if it can)."""
        out = []
        if self.ok == 0:
            out.append("no good responses")
        if self.bad_status:
            out.append(f"{self.bad_status} responses of the wrong status (first: {self.first_bad})")
        if self.bad_length:
            out.append(f"{self.bad_length} responses of the wrong size")
        if self.socket_errors or self.timeouts:
            out.append(f"{self.socket_errors} socket errors, {self.timeouts} timeouts")
        if once and self.sent > self.nlines:
            out.append(f"request file wrapped ({self.sent} sent, {self.nlines} lines): "
                       "some requests were repeats")
        return out


@dataclass(frozen=True)
class Wrk:
    binary: str
    script: Path
    version: str

    @classmethod
    def find(cls, work: Path) -> Wrk:
        """wrk from PATH with the request-file script written next to the run's files."""
        binary = shutil.which("wrk")
        if binary is None:
            raise BenchError("wrk is not on PATH (apt-get install wrk)")
        script = work / "requests.lua"
        script.write_text(REQUESTS_LUA.replace("__MARKER__", MARKER))
        probe = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        banner = (probe.stdout or probe.stderr).split("\n", 1)[0]
        return cls(binary, script, banner.split(" [", 1)[0].strip() or "wrk")

    def run(self, spec: WrkSpec) -> WrkRun:
        cmd = [self.binary, "-t1", f"-c{spec.connections}", f"-d{spec.duration_s:g}s",
               "--timeout", "10s", "-s", str(self.script), f"http://{HOST}:{spec.port}", "--",
               str(spec.lines_file), str(spec.auth_file), str(spec.expected_status),
               str(spec.expected_len), spec.extra_header]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=spec.duration_s + 120)
        for line in done.stdout.splitlines():
            if line.startswith(MARKER):
                return WrkRun.from_doc(json.loads(line[len(MARKER):]))
        raise BenchError(f"wrk printed no result:\n{done.stdout[-800:]}\n{done.stderr[-800:]}")


@dataclass
class LinePool:
    """Request lines, made on demand and handed out so that none is ever sent twice.

    A run gets a slice of unused lines; afterwards only the ones wrk actually sent
    are retired, so the unsent tail is still fresh for the next run.  With
    ``once=False`` the pool is one line, repeated (the warm paths).
    """

    label: str
    make: Callable[[int], str]
    once: bool = True
    log: Callable[[str], None] = say  # the owning benchmark's progress line
    lines: list[str] = field(default_factory=list)
    used: int = 0

    def reserve(self, count: int) -> list[str]:
        if not self.once:
            if not self.lines:
                self.lines.append(self.make(0))
            return self.lines[:1]
        short = self.used + count - len(self.lines)
        if short > 0:
            started = time.perf_counter()
            base = len(self.lines)
            self.lines += [self.make(base + i) for i in range(short)]
            self.log(f"prepared {short} {self.label} requests in "
                     f"{time.perf_counter() - started:.1f}s")
        return self.lines[self.used:self.used + count]

    def retire(self, sent: int) -> None:
        if self.once:
            self.used = min(self.used + sent, len(self.lines))


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the dm under test (shared with bench_sealed) -------------------------------------------

@dataclass
class Server:
    """One server child and its log; ``check_alive`` turns a crash into a setup error."""

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
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def cpu(self) -> Cpu:
        return Cpu(cpu_seconds(self.proc.pid), cpu_seconds(self.redis_pid))


def session_issuer(root: Path) -> DevIssuer:
    """The dev issuer's keys, made before any server starts so they all trust the same JWKS."""
    return DevIssuer.load_or_create(root / "keys" / "session")


def dm_env(root: Path, *, send_rate_per_s: int | None, log_level: str) -> dict[str, str]:
    """dm's settings as an operator would give them; no inherited DM_* leaks in.

    WARNING turns the per-request access log off, as the edge benchmark does.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_")}
    env.update(DM_ISSUER_DIR=str(root / "keys" / "session"),
               DM_FRANKING_KEY_PATH=str(root / "keys" / "franking.key"), DM_LOG_LEVEL=log_level,
               DM_DEV_ISSUER="true")
    # One address signs every user up, and a few senders drive the whole load: those two
    # per-user limits are lifted (still charged, so their cost is in the figures) and the
    # per-conversation limit below stays what this benchmark measures.
    limits = {"signup": [1_000_000, 1_000_000], "send": [1_000_000, 1_000_000]}
    if send_rate_per_s is not None:
        env["DM_SEND_RATE_PER_S"] = str(send_rate_per_s)
    env["DM_RATE_LIMITS"] = json.dumps(limits)
    return env


def dm_command(port: int, redis_url: str, edge_url: str, keyring_dir: Path) -> list[str]:
    return [sys.executable, "-m", "dm", "serve", "--host", HOST, "--port", str(port),
            "--redis-url", redis_url, "--edge-url", edge_url, "--keyring-dir", str(keyring_dir)]


def start_dm(stack: contextlib.ExitStack, root: Path, keyring_dir: Path, *, edge_url: str,
             send_rate_per_s: int | None = None, log_level: str = "WARNING") -> Server:
    """Its own Redis, then ``python -m dm serve``; both stopped when ``stack`` closes."""
    redis = stack.enter_context(RedisProcess(root / "dm-redis"))
    port, log = free_port(), root / "dm.log"
    proc = stack.enter_context(child_process(
        dm_command(port, redis.url, edge_url, keyring_dir), log,
        dm_env(root, send_rate_per_s=send_rate_per_s, log_level=log_level)))
    wait_ready("dm", proc, port, "/readyz", log)
    assert redis.proc is not None
    return Server("dm", port, proc, log, redis.url, redis.proc.pid)


@dataclass(frozen=True)
class Pair:
    """A 1:1 conversation: its sender, its recipient, and a private video the sender owns."""

    cid: str
    sender: str
    sender_token: str
    recipient: str
    recipient_token: str
    recipient_device: str
    media_id: str
    recipient_key: DeviceKey | None = None  # sealed conversations: the recipient's device key

    def spec(self) -> dict[str, str]:
        """What the push load generator needs (tokens and ids only)."""
        return {"cid": self.cid, "sender_token": self.sender_token,
                "recipient_token": self.recipient_token, "media_id": self.media_id}


async def _one_pair(base_url: str, http: Any, mode: str, suite: str | None) -> Pair:
    sender, recipient = DmClient(base_url, http=http), DmClient(base_url, http=http)
    await sender.create_user(age="adult", region="GB")
    await recipient.create_user(age="adult", region="GB")
    key = None
    if suite is not None:
        key = DeviceKey.generate(suite)
        recipient.use_device_key(key)
        await recipient.publish_key()
    conv = await sender.create_conversation([recipient.uid], mode=mode)
    assert sender.session_token and recipient.session_token and recipient.device_id
    return Pair(conv["id"], sender.uid, sender.session_token, recipient.uid,
                recipient.session_token, recipient.device_id, new_id("m"), key)


async def make_pairs(base_url: str, count: int, *, mode: str = "plain",
                     suite: str | None = None) -> list[Pair]:
    """Users and conversations through the dm's own API (dev issuer), as clients would."""
    import aiohttp

    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as http:
        async def one() -> Pair:
            async with limit:
                return await _one_pair(base_url, http, mode, suite)

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def register_sender_media(redis_url: str, pairs: Sequence[Pair]) -> None:
    """Each sender's video in the dm's media registry, as the content pipeline would put it."""
    redis = connect(redis_url)
    try:
        registry = MediaRegistry(redis)
        for p in pairs:
            await registry.put(Media(
                id=p.media_id, owner=p.sender, visibility="private", allow_reshare=False,
                audience=AudienceRules(), status="active", content_type="video/mp4",
                size=MEDIA_BYTES, sha256="0" * 64, origin="bench/clip.mp4",
                created_at=int(time.time())))
    finally:
        await redis.aclose()


def message_body(kind: str, media_id: str, text: str) -> str:
    """A plain send's JSON body: a video share with a caption, or text only."""
    doc: dict[str, str] = {"text": text}
    if kind == "media":
        doc["media_id"] = media_id
    return json.dumps(doc, separators=(",", ":"))


def send_path(cid: str) -> str:
    return f"/v1/conversations/{cid}/messages"


# -- the send (closed-loop) measurement -----------------------------------------------------

@dataclass
class Bed:
    root: Path
    dm: Server
    pairs: list[Pair]
    wrk: Wrk
    auth_file: Path
    opts: Options


def send_pool(pairs: Sequence[Pair], kind: str) -> LinePool:
    """Round-robin over the conversations; every line has its own Idempotency-Key."""
    def make(i: int) -> str:
        p = pairs[i % len(pairs)]
        return request_line("POST", send_path(p.cid), auth=f"Bearer {p.sender_token}",
                            key=f"bench_{i}", body=message_body(kind, p.media_id, f"send {i}"))

    return LinePool("send", make)


def accepted_sends(port: int) -> float:
    return metric_sum(scrape(port), "dm_sends_total", replayed="false")


@dataclass(frozen=True)
class SendResult:
    round: int
    raw: WrkRun
    server_accepted: int
    cpu_us: dict[str, float | None]  # per accepted send: the dm's and its Redis's
    problems: tuple[str, ...]


def run_send(bed: Bed, pool: LinePool, *, round_no: int, seconds: int,
             hint: float) -> SendResult:
    """One closed-loop wrk run, judged by wrk (statuses) and by the dm (its own counter)."""
    lines = pool.reserve(int(max(hint, MIN_SEND_HINT) * (seconds + 2) * 1.5))
    lines_file = write_lines(bed.root / "requests" / f"send-{round_no}.txt", lines)
    bed.dm.check_alive()
    before, cpu = accepted_sends(bed.dm.port), bed.dm.cpu()
    raw = bed.wrk.run(WrkSpec(bed.dm.port, lines_file, bed.auth_file, seconds,
                              bed.opts.connections, expected_status=201))
    pool.retire(raw.sent)
    time.sleep(SETTLE_S)
    bed.dm.check_alive()
    counted = int(accepted_sends(bed.dm.port) - before)
    cpu_us = bed.dm.cpu().per_op_us(cpu, counted)
    problems = raw.problems(once=True)
    # Requests still in flight when wrk stops are accepted but never counted by wrk.
    if not raw.ok <= counted <= raw.sent:
        problems.append(f"the dm accepted {counted} sends; wrk saw {raw.ok} 201s of {raw.sent}")
    return SendResult(round_no, raw, counted, cpu_us, tuple(problems))


# -- the push (open-loop) measurement: parent side --------------------------------------------

@dataclass(frozen=True)
class PushResult:
    rate: int
    round: int
    doc: dict[str, Any]
    cpu_us: dict[str, float | None]  # per accepted message (send + push), warm-up included
    problems: tuple[str, ...]

    @property
    def p50_ms(self) -> float:
        return float(self.doc["push_ms"]["p50"])

    @property
    def p99_ms(self) -> float:
        return float(self.doc["push_ms"]["p99"])


def push_problems(doc: dict[str, Any]) -> list[str]:
    """Why the latency figures would be wrong: a message never delivered (even after the
    recipient reconnected) is missing from them, and a duplicate counts twice.

    Refused sends (errors) and dropped sockets (reconnects) are results, reported
    beside the figures, not flaws of the measurement.
    """
    out = []
    if doc["received"] == 0:
        out.append("no pushes arrived")
    if doc["lost"]:
        out.append(f"{doc['lost']} accepted sends were never pushed, even after reconnecting "
                   "(the latency percentiles leave them out)")
    if doc["duplicates"]:
        out.append(f"{doc['duplicates']} pushes arrived twice")
    return out


def run_push(bed: Bed, rate: int, *, round_no: int, seconds: int, warmup_s: float) -> PushResult:
    """Start the open-loop generator as a child process and read its one-line report."""
    spec = {"port": bed.dm.port, "pairs": [p.spec() for p in bed.pairs], "rate": rate,
            "duration_s": seconds, "warmup_s": warmup_s, "drain_s": 3.0,
            "connections": bed.opts.push_connections, "message": bed.opts.message,
            "tag": f"r{round_no}x{rate}"}
    spec_file = bed.root / "requests" / f"push-{round_no}-{rate}.json"
    atomic_write(spec_file, json.dumps(spec).encode(), 0o600)  # it holds session tokens
    bed.dm.check_alive()
    cmd = [sys.executable, "-m", "loadtests.bench.dm", "push-loadgen", "--spec", str(spec_file)]
    cpu = bed.dm.cpu()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO_ROOT,
                          timeout=seconds + warmup_s + 120)
    bed.dm.check_alive()
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            doc = json.loads(line[len(MARKER):])
            cpu_us = bed.dm.cpu().per_op_us(cpu, int(doc["accepted"]) + int(doc["warm_accepted"]))
            return PushResult(rate, round_no, doc, cpu_us, tuple(push_problems(doc)))
    raise BenchError(f"push load generator printed no result:\n{done.stdout[-800:]}\n"
                     f"{done.stderr[-1500:]}")


# -- the push (open-loop) measurement: the generator process ---------------------------------

@dataclass
class Receipts:
    """Arrival time of each pushed message, by run prefix and sequence number."""

    got: dict[str, dict[int, float]] = field(default_factory=dict)
    duplicates: int = 0
    reconnects: int = 0  # sockets the server dropped during the run
    close_reasons: dict[str, int] = field(default_factory=dict)  # why they were dropped

    def note(self, text: str, at: float) -> None:
        prefix, _, seq = text.partition(":")
        if not seq.isdigit():
            return
        seen = self.got.setdefault(prefix, {})
        if int(seq) in seen:
            self.duplicates += 1
        else:
            seen[int(seq)] = at


async def read_frames(ws: Any, receipts: Receipts, cursor: str | None) -> tuple[str | None, str]:
    """Timestamp each message frame on arrival; the last cursor seen, and why the socket ended."""
    import aiohttp

    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            return cursor, f"{msg.type.name} {msg.data!r}"
        at = time.perf_counter()
        event = json.loads(msg.data)
        cursor = event.get("cursor", cursor)
        if event.get("type") == "message":
            receipts.note(event["message"].get("text") or "", at)
    return cursor, f"the server ended the stream (close code {ws.close_code})"


async def follow_pushes(http: Any, token: str, receipts: Receipts,
                        connected: asyncio.Event) -> None:
    """One recipient's device, as the SDK's ``DmClient.stream`` behaves: if the server drops
    the socket, reconnect with the last cursor and be replayed what was missed.

    So a message whose push was interrupted still arrives, late, and its latency counts
    the outage.  Runs until cancelled.
    """
    import aiohttp

    cursor, delay = None, 0.05
    while True:
        try:
            async with http.ws_connect("/v1/stream", heartbeat=20,
                                       params={"cursor": cursor} if cursor else None,
                                       headers={"Authorization": f"Bearer {token}"}) as ws:
                connected.set()
                cursor, why = await read_frames(ws, receipts, cursor)
                delay = 0.05
        except (aiohttp.ClientError, TimeoutError) as exc:
            why = f"connect failed: {type(exc).__name__}"
        receipts.reconnects += 1
        receipts.close_reasons[why] = receipts.close_reasons.get(why, 0) + 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def wait_subscribed(http: Any, count: int, timeout_s: float = 15.0) -> None:
    """The dm's /readyz counts its WebSockets: wait until every recipient is subscribed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get("/readyz") as resp:
            if (await resp.json()).get("websockets", 0) >= count:
                return
        await asyncio.sleep(0.02)
    raise BenchError(f"the dm never counted {count} WebSockets")


@dataclass
class Schedule:
    """One open-loop run's sends: when each was due, when it finished, and its status."""

    prefix: str
    rate: int
    count: int
    start: float = 0.0
    done: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # task created - due (the generator's lag)

    def due(self, i: int) -> float:
        return self.start + i / self.rate


_CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def roundtrip(conn: Conn, request: bytes) -> int:
    """Write one prepared request, read one Content-Length response; its status."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = _CONTENT_LENGTH_RE.search(head)
    if not head.startswith(b"HTTP/1.1 ") or length is None:
        raise ValueError("not an HTTP/1.1 response with a Content-Length")
    await reader.readexactly(int(length[1]))
    return int(head[9:12])


class KeepAlivePool:
    """A minimal keep-alive HTTP/1.1 client for prepared requests, at most ``size`` at once.

    The open-loop generator shares two cores with the server under test, so it must
    be cheap: aiohttp's client costs several times more CPU per request than writing
    a prepared request and reading one response off a stream.
    """

    def __init__(self, port: int, size: int) -> None:
        self._port = port
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Conn] = []

    async def exchange(self, request: bytes) -> int:
        """One request; its status, or 0 if the connection failed (counted as an error)."""
        async with self._slots:
            conn = None
            try:
                conn = self._idle.pop() if self._idle else await asyncio.open_connection(
                    HOST, self._port)
                status = await roundtrip(conn, request)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                if conn is not None:
                    conn[1].close()
                return 0
            self._idle.append(conn)
            return status

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class Sender:
    """POSTs message ``i`` of a schedule to conversation ``i mod pairs`` and records it."""

    def __init__(self, pool: KeepAlivePool, port: int, pairs: list[dict[str, str]],
                 kind: str) -> None:
        self._pool = pool
        self._pairs = pairs
        self._kind = kind
        self._heads = [f"POST {send_path(p['cid'])} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                       f"Authorization: Bearer {p['sender_token']}\r\n"
                       "Content-Type: application/json\r\n" for p in pairs]

    async def send(self, sched: Schedule, i: int) -> None:
        n = i % len(self._pairs)
        body = message_body(self._kind, self._pairs[n]["media_id"], f"{sched.prefix}:{i}")
        raw = body.encode()
        request = (f"{self._heads[n]}Idempotency-Key: {sched.prefix}_{i}\r\n"
                   f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw
        status = await self._pool.exchange(request)
        sched.done[i], sched.status[i] = time.perf_counter(), status


async def paced(sender: Sender, sched: Schedule) -> None:
    """Fire send i at its due time whatever became of the earlier ones (open loop)."""
    sched.done, sched.status = [0.0] * sched.count, [-1] * sched.count
    sched.start = time.perf_counter() + 0.01
    tasks = []
    i = 0
    while i < sched.count:
        now = time.perf_counter()
        while i < sched.count and sched.due(i) <= now:
            tasks.append(asyncio.create_task(sender.send(sched, i)))
            sched.lag.append(now - sched.due(i))
            i += 1
        if i < sched.count:
            await asyncio.sleep(max(0.0, sched.due(i) - time.perf_counter()))
    await asyncio.gather(*tasks)


async def drain(receipts: Receipts, sched: Schedule, timeout_s: float) -> None:
    """Wait until every accepted send has been pushed, or the timeout."""
    want = {i for i, s in enumerate(sched.status) if s == 201}
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if want <= receipts.got.get(sched.prefix, {}).keys():
            return
        await asyncio.sleep(0.02)


def ms_stats(seconds: list[float], points: dict[str, float]) -> dict[str, float]:
    values = sorted(seconds)
    return {name: round(percentile(values, q) * 1000, 3) for name, q in points.items()}


def schedule_report(sched: Schedule, receipts: Receipts) -> dict[str, Any]:
    """Latencies from each send's *due* time, and whether the rate was really delivered."""
    got = receipts.got.get(sched.prefix, {})
    accepted = [i for i, s in enumerate(sched.status) if s == 201]
    push = [got[i] - sched.due(i) for i in accepted if i in got]
    sends = [sched.done[i] - sched.due(i) for i in accepted]
    statuses: dict[str, int] = {}
    for s in sched.status:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    last = max((sched.done[i] for i in accepted), default=sched.start)
    achieved = len(accepted) / (last - sched.start + 1 / sched.rate) if accepted else 0.0
    return {
        "rate": sched.rate, "offered": sched.count, "accepted": len(accepted),
        "errors": sched.count - len(accepted), "statuses": statuses,
        "received": len(push), "lost": len(accepted) - len(push),
        "unexpected": len(set(got) - set(accepted)), "duplicates": receipts.duplicates,
        "reconnects": receipts.reconnects, "close_reasons": receipts.close_reasons,
        "achieved_rps": round(achieved, 1),
        "rate_met": len(accepted) == sched.count and achieved >= RATE_MET_FRACTION * sched.rate,
        "push_ms": ms_stats(push, {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999,
                                   "max": 1.0}),
        "send_ms": ms_stats(sends, {"p50": 0.5, "p99": 0.99, "max": 1.0}),
        "generator_lag_ms": ms_stats(sched.lag, {"p99": 0.99, "max": 1.0}),
    }


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """Connect every recipient, warm up, then one measured open-loop run at ``rate``."""
    import aiohttp

    port, pairs = int(spec["port"]), list(spec["pairs"])
    rate, receipts = int(spec["rate"]), Receipts()
    pool = KeepAlivePool(port, int(spec["connections"]))
    sender = Sender(pool, port, pairs, str(spec["message"]))
    warm = Schedule(f"w{spec['tag']}", rate, int(rate * float(spec["warmup_s"])))
    sched = Schedule(f"m{spec['tag']}", rate, int(rate * float(spec["duration_s"])))
    async with aiohttp.ClientSession(f"http://{HOST}:{port}",
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        connected = [asyncio.Event() for _ in pairs]
        readers = [asyncio.create_task(follow_pushes(http, p["recipient_token"], receipts, c))
                   for p, c in zip(pairs, connected, strict=True)]
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(c.wait() for c in connected))
            await wait_subscribed(http, len(pairs))
            receipts.reconnects, receipts.close_reasons = 0, {}  # count the run's drops only
            if warm.count:
                await paced(sender, warm)
                await drain(receipts, warm, 1.0)
            await paced(sender, sched)
            await drain(receipts, sched, float(spec["drain_s"]))
        finally:
            pool.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    return {**schedule_report(sched, receipts),
            "warm_accepted": sum(1 for s in warm.status if s == 201)}


def push_loadgen(argv: list[str]) -> int:
    """The open-loop generator's process: prints one marker line of JSON."""
    p = argparse.ArgumentParser(prog="bench_dm push-loadgen")
    p.add_argument("--spec", type=Path, required=True)
    a = p.parse_args(argv)
    started, cpu0 = time.perf_counter(), time.process_time()
    doc = asyncio.run(open_loop(json.loads(a.spec.read_text())))
    doc["generator_cpu_share"] = round((time.process_time() - cpu0)
                                       / (time.perf_counter() - started), 3)
    print(MARKER + json.dumps(doc), flush=True)
    return 0


# -- rounds and the report --------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    duration_s: int
    rounds: int
    warmup_s: int
    connections: int
    push_connections: int
    pairs: int
    rates: tuple[int, ...]
    message: str
    send_rate_limit: int | None
    json: bool
    dir: Path | None


def send_progress(r: SendResult, label: str) -> None:
    verdict = "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)
    say(f"{label} send      {r.raw.rps:8.0f} sends/s  p50 {r.raw.p50_ms:7.2f} ms  "
        f"p99 {r.raw.p99_ms:7.2f} ms  dm CPU {r.cpu_us['server']} us/send  "
        f"errors {r.raw.errors}  {verdict}")


def push_progress(r: PushResult, label: str) -> None:
    d = r.doc
    verdict = "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)
    say(f"{label} push@{r.rate:<5} achieved {d['achieved_rps']:7.0f}/s  "
        f"p50 {d['push_ms']['p50']:7.2f} ms  p99 {d['push_ms']['p99']:7.2f} ms  "
        f"max {d['push_ms']['max']:7.2f} ms  dm CPU {r.cpu_us['server']} us/msg  "
        f"generator CPU {d['generator_cpu_share']:.0%}  errors {d['errors']} "
        f"{d['statuses']}  drops {d['reconnects']}  {verdict}")


def measure(bed: Bed) -> tuple[list[SendResult], list[PushResult]]:
    """A warm-up pass, then ``rounds`` rounds; each rotates the order of the workloads."""
    opts, pool = bed.opts, send_pool(bed.pairs, bed.opts.message)
    names = ["send", *(f"push@{r}" for r in opts.rates)]
    sends: list[SendResult] = []
    pushes: list[PushResult] = []
    best = 0.0
    if opts.warmup_s:
        w = run_send(bed, pool, round_no=0, seconds=opts.warmup_s, hint=best)
        best = w.raw.rps
        send_progress(w, "warm-up  ")
    for n in range(1, opts.rounds + 1):
        shift = (n - 1) % len(names)
        for name in names[shift:] + names[:shift]:
            label = f"round {n}/{opts.rounds}"
            if name == "send":
                r = run_send(bed, pool, round_no=n, seconds=opts.duration_s, hint=best)
                best = max(best, r.raw.rps)
                sends.append(r)
                send_progress(r, label)
            else:
                p = run_push(bed, int(name.partition("@")[2]), round_no=n,
                             seconds=opts.duration_s, warmup_s=1.0)
                pushes.append(p)
                push_progress(p, label)
    return sends, pushes


def cpu_median(runs: Sequence[SendResult | PushResult], who: str) -> float | None:
    values = [v for r in runs if (v := r.cpu_us[who]) is not None]
    return round(median(values), 1) if values else None


def send_summary(runs: list[SendResult]) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]
    dm_cpu = cpu_median(runs, "server")
    return {"rps": round(median([r.raw.rps for r in runs]), 1),
            "dm_cpu_us_per_send": dm_cpu, "redis_cpu_us_per_send": cpu_median(runs, "redis"),
            "dm_one_core_bound_rps": round(1e6 / dm_cpu) if dm_cpu else None,
            "p50_ms": round(median([r.raw.p50_ms for r in runs]), 3),
            "p99_ms": round(median([r.raw.p99_ms for r in runs]), 3),
            "errors": sum(r.raw.errors for r in runs),
            "accepted": sum(r.raw.ok for r in runs),
            "rps_rounds": [round(r.raw.rps, 1) for r in runs],
            "valid": not problems, "problems": problems}


def merge_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def log_warnings(log: Path) -> dict[str, int]:
    """What the server complained about (its JSON log lines), counted by message and error.

    Access logs are off, so every line is a warning or worse; this is how an overload
    shows its cause (e.g. an exhausted Redis connection pool) next to the numbers.
    """
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                detail = doc.get("err") or doc.get("code") or ""
                key = f"{doc.get('level', '?')} {doc.get('msg', '?')}: {detail}".rstrip(": ")
                out[key] = out.get(key, 0) + 1
    return out


def push_summary(runs: list[PushResult]) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]

    def med(section: str, key: str) -> float:
        return round(median([float(r.doc[section][key]) for r in runs]), 3)

    achieved = round(median([float(r.doc["achieved_rps"]) for r in runs]), 1)
    return {"rate": runs[0].rate, "achieved_rps": achieved,
            "rate_met": all(r.doc["rate_met"] for r in runs),
            "p50_ms": med("push_ms", "p50"), "p90_ms": med("push_ms", "p90"),
            "p99_ms": med("push_ms", "p99"), "p999_ms": med("push_ms", "p999"),
            "max_ms": med("push_ms", "max"),
            "send_p50_ms": med("send_ms", "p50"), "send_p99_ms": med("send_ms", "p99"),
            "generator_lag_p99_ms": med("generator_lag_ms", "p99"),
            "generator_cpu_share": round(median([float(r.doc["generator_cpu_share"])
                                                 for r in runs]), 3),
            "dm_cpu_us_per_message": cpu_median(runs, "server"),
            "redis_cpu_us_per_message": cpu_median(runs, "redis"),
            "errors": sum(int(r.doc["errors"]) for r in runs),
            "statuses": merge_counts([r.doc["statuses"] for r in runs]),
            "reconnects": sum(int(r.doc["reconnects"]) for r in runs),
            "close_reasons": merge_counts([r.doc["close_reasons"] for r in runs]),
            "lost": sum(int(r.doc["lost"]) for r in runs),
            "p99_ms_rounds": [r.p99_ms for r in runs],
            "valid": not problems, "problems": problems}


def summarize(bed: Bed, sends: list[SendResult], pushes: list[PushResult]) -> dict[str, Any]:
    opts = bed.opts
    send = send_summary(sends)
    push = {str(rate): push_summary([p for p in pushes if p.rate == rate]) for rate in opts.rates}
    head = push[str(opts.rates[0])]
    targets = {
        "send_rps": {"target": f">= {TARGET_SEND_RPS:.0f}", "value": send["rps"],
                     "met": send["rps"] >= TARGET_SEND_RPS},
        "push_p99_ms": {"target": f"<= {TARGET_PUSH_P99_MS:.0f} at {head['rate']}/s",
                        "value": head["p99_ms"],
                        "met": head["p99_ms"] <= TARGET_PUSH_P99_MS and head["rate_met"]},
        "push_p99_ms_every_round": {
            "target": f"<= {TARGET_PUSH_P99_MS:.0f} at {head['rate']}/s in every round",
            "value": max(head["p99_ms_rounds"]),
            "met": max(head["p99_ms_rounds"]) <= TARGET_PUSH_P99_MS and head["rate_met"]},
        "cpu_us_per_message": {
            "target": f"<= {TARGET_CPU_US_PER_MESSAGE:.0f} (send + push, one dm process)",
            "value": head["dm_cpu_us_per_message"],
            "met": head["dm_cpu_us_per_message"] is not None
            and head["dm_cpu_us_per_message"] <= TARGET_CPU_US_PER_MESSAGE},
    }
    return {
        "benchmark": "dm", "valid": send["valid"] and all(p["valid"] for p in push.values()),
        "send_rps": send["rps"], "send_p50_ms": send["p50_ms"], "send_p99_ms": send["p99_ms"],
        "push_rate": head["rate"], "push_p50_ms": head["p50_ms"], "push_p99_ms": head["p99_ms"],
        "push_achieved_rps": head["achieved_rps"], "push_rate_met": head["rate_met"],
        # The dm's CPU per message at the head rate (send + push in one process), the median
        # of the rounds, and every round's push p99: the median hides a bad round.
        "cpu_us_per_message": head["dm_cpu_us_per_message"],
        "cpu_us_per_message_rounds": [r.cpu_us["server"] for r in pushes
                                      if r.rate == head["rate"]],
        "push_p99_ms_rounds": head["p99_ms_rounds"],
        "targets": targets, "targets_met": all(t["met"] for t in targets.values()),
        "config": {"generator_send": bed.wrk.version,
                   "generator_push": "python (asyncio streams + aiohttp WebSockets)",
                   "connections": opts.connections, "push_connections": opts.push_connections,
                   "conversations": len(bed.pairs), "recipients_online_in_push": len(bed.pairs),
                   "message": opts.message, "duration_s": opts.duration_s,
                   "rounds": opts.rounds, "warmup_s": opts.warmup_s,
                   "send_rate_limit_per_s": opts.send_rate_limit or 50,
                   "send_rate_limit_source": "--send-rate-limit" if opts.send_rate_limit
                   else "dm default", "access_log": False, "cpus": os.cpu_count(),
                   "statistic": "median of rounds"},
        "send": send, "push": push, "dm_log_warnings": log_warnings(bed.dm.log),
        "runs": [{"workload": "send", "round": r.round, "rps": round(r.raw.rps, 1),
                  "p50_ms": round(r.raw.p50_ms, 3), "p99_ms": round(r.raw.p99_ms, 3),
                  "requests": r.raw.requests, "errors": r.raw.errors,
                  "server_accepted": r.server_accepted, "problems": list(r.problems)}
                 for r in sends] + [{"workload": f"push@{r.rate}", "round": r.round, **r.doc,
                                     "problems": list(r.problems)} for r in pushes],
    }


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _send_rows(report: dict[str, Any]) -> list[str]:
    c, s, t = report["config"], report["send"], report["targets"]["send_rps"]
    return [
        f"send throughput: closed loop, {c['generator_send']}, 1 thread, {c['connections']} "
        "connections, recipients offline",
        f"  {'sends/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'dm CPU us':>11}"
        f"{'Redis us':>10}{'1-core bound':>14}  {'target':<10}{'met':<5}valid",
        f"  {s['rps']:>9.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['errors']:>8}"
        f"{_us(s['dm_cpu_us_per_send']):>11}{_us(s['redis_cpu_us_per_send']):>10}"
        f"{_us(s['dm_one_core_bound_rps']):>14}  {t['target']:<10}{_yes(t['met']):<5}"
        f"{_yes(s['valid'])}",
        "  (dm CPU us: the dm process's CPU per accepted send; 1-core bound: 1e6 / that, the "
        "rate one whole core would sustain)",
    ]


def _push_rows(report: dict[str, Any]) -> list[str]:
    c, t = report["config"], report["targets"]["push_p99_ms"]
    lines = [f"send -> push latency: open loop (Python, up to {c['push_connections']} sends in "
             "flight), from each send's intended time to the WebSocket frame at the "
             f"recipient; {c['recipients_online_in_push']} recipients online",
             f"  {'rate/s':>7}{'achieved':>9}{'rate met':>9}{'p50 ms':>8}{'p90 ms':>8}"
             f"{'p99 ms':>8}{'p99.9':>8}{'max ms':>8}{'send p99':>9}{'errors':>7}{'drops':>6}"
             f"{'lost':>5}{'dm CPU us':>10}{'gen CPU':>8}  {'target':<9}{'met':<5}valid"]
    for key, p in report["push"].items():
        target, met = ("", "")
        if int(key) == report["push_rate"]:
            target, met = f"<= {TARGET_PUSH_P99_MS:.0f} ms", _yes(t["met"])
        lines.append(f"  {p['rate']:>7}{p['achieved_rps']:>9.0f}{_yes(p['rate_met']):>9}"
                     f"{p['p50_ms']:>8.2f}{p['p90_ms']:>8.2f}{p['p99_ms']:>8.2f}"
                     f"{p['p999_ms']:>8.2f}{p['max_ms']:>8.2f}{p['send_p99_ms']:>9.2f}"
                     f"{p['errors']:>7}{p['reconnects']:>6}{p['lost']:>5}"
                     f"{_us(p['dm_cpu_us_per_message']):>10}"
                     f"{p['generator_cpu_share']:>8.0%}  {target:<9}{met:<5}{_yes(p['valid'])}")
    lines.append("  (errors: sends not accepted; drops: WebSockets the dm closed mid-run, after "
                 "which the recipient reconnected with its cursor as the SDK does; lost: never "
                 "delivered; dm CPU us: per message, send and push; gen CPU: the load "
                 "generator's share of one core)")
    for key, p in report["push"].items():
        if p["errors"]:
            lines.append(f"  errors at {key}/s by status (0: connection failed): "
                         + ", ".join(f"{k}: {v}" for k, v in p["statuses"].items() if k != "201"))
        if p["reconnects"]:
            lines.append(f"  drops at {key}/s: "
                         + "; ".join(f"{n} x {why}" for why, n in p["close_reasons"].items()))
    return lines


def render_table(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [f"dm benchmark: one dm process (python -m dm serve) with its own Redis; "
             f"{c['conversations']} 1:1 conversations; {c['message']} messages; median of "
             f"{c['rounds']} interleaved rounds x {c['duration_s']} s; {c['cpus']} CPUs",
             f"per-conversation send limit {c['send_rate_limit_per_s']}/s "
             f"({c['send_rate_limit_source']}); access log off", "",
             *_send_rows(report), "", *_push_rows(report), ""]
    if report["dm_log_warnings"]:
        lines.append("the dm's log: " + "; ".join(
            f"{n} x {what}" for what, n in report["dm_log_warnings"].items()))
    if report["valid"]:
        lines.append("VALID: in the send runs every response a 201 that the dm counted and "
                     "no request repeated; in the push runs every accepted send delivered "
                     "exactly once")
    else:
        lines.append("INVALID measurement; problems:")
        lines += [f"  send: {m}" for m in report["send"]["problems"]]
        lines += [f"  push@{k}: {m}" for k, p in report["push"].items() for m in p["problems"]]
    verdict = "all met" if report["targets_met"] else "NOT all met"
    lines.append(f"targets: {verdict} (a missed target does not fail the run)")
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


# -- entry points -----------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench dm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds per measured run (5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of send warm-up (1; 0: none)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections for sends (64)")
    p.add_argument("--push-connections", type=int, default=256,
                   help="most concurrent sends of the open-loop generator (256)")
    p.add_argument("--pairs", type=int, default=128,
                   help="sender->recipient conversations (128); sends spread over them")
    p.add_argument("--rates", default="1000,500,250",
                   help="comma-separated push rates in messages/s; the first is compared "
                        "with the target (1000,500,250)")
    p.add_argument("--message", choices=["media", "text"], default="media",
                   help="a video share with a caption (media) or text only")
    p.add_argument("--send-rate-limit", type=int,
                   help="set DM_SEND_RATE_PER_S for the dm under test (default: dm's own, 50)")
    p.add_argument("--dir", type=Path, help="working directory, recreated and kept "
                   "(default: a temporary one, removed at the end)")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON on stdout (the table then goes to stderr)")
    return p


def options(argv: list[str] | None) -> Options:
    a = parser().parse_args(argv)
    try:
        rates = tuple(int(r) for r in a.rates.split(",") if r.strip())
    except ValueError:
        parser().error("--rates must be comma-separated integers")
    if a.duration < 1 or a.rounds < 1 or a.warmup < 0 or a.connections < 1 or a.pairs < 1 \
            or a.push_connections < 1 or not rates or min(rates) < 1:
        parser().error("--duration, --rounds, --connections, --pairs, --rates must be >= 1")
    return Options(a.duration, a.rounds, a.warmup, a.connections, a.push_connections, a.pairs,
                   rates, a.message, a.send_rate_limit, a.json, a.dir)


def run(opts: Options) -> dict[str, Any]:
    from cdn_auth.keyring import KeyRing

    with contextlib.ExitStack() as stack:
        root = workdir(stack, opts.dir, "dm")
        (root / "requests").mkdir()
        wrk = Wrk.find(root)
        session_issuer(root)
        ring = KeyRing.create(root / "keys" / "pointer")
        say(f"starting Redis and the dm under {root} (send generator: {wrk.version})")
        # The edge URL only goes into the media links the dm renders; nothing fetches them.
        dm = start_dm(stack, root, ring.path, edge_url=f"http://{HOST}:9",
                      send_rate_per_s=opts.send_rate_limit)
        pairs = asyncio.run(make_pairs(dm.url, opts.pairs))
        asyncio.run(register_sender_media(dm.redis_url, pairs))
        say(f"{len(pairs)} conversations ready")
        auth_file = root / "auth.txt"
        atomic_write(auth_file, b"\n", 0o600)  # every line carries its sender's session
        bed = Bed(root, dm, pairs, wrk, auth_file, opts)
        sends, pushes = measure(bed)
        say("stopping the servers")
        return summarize(bed, sends, pushes)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on a valid measurement (targets met or not), 1 if invalid or failed."""
    opts = options(argv)
    return run_and_report(lambda: run(opts), render_table, as_json=opts.json, say=say)


def child_main(argv: list[str]) -> int:
    roles: dict[str, Callable[[list[str]], int]] = {"push-loadgen": push_loadgen}
    if argv and argv[0] in roles:
        return roles[argv[0]](argv[1:])
    return main(argv)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
