"""Sealed-mode benchmark: what does end-to-end encryption cost, per operation, next to plain?

Plain mode: the dm sees the media id and mints a pointer per reader; the edge verifies
the pointer.  Sealed mode: the sender gets a grant from the media API (``POST /v1/grants``),
seals ``{media_id, grant, text, franking key}`` to every recipient device with HPKE
(:mod:`dm.envelope`, suites ``x25519`` and ``mlkem768-x25519``), and the dm stores opaque
envelopes; the edge verifies the grant and, on a user's first fetch, binds the user to it
in Redis (one Lua script).  This measures each of those steps.

In-process (this process, one core; median of ``--repeats`` timeit repeats, each sized
by ``timeit.autorange``): token mint and verify (pointer vs grant), seal per device and
open for both suites, the franking commitment and the server's countersignature, and the
sizes of envelopes and send bodies.

Over HTTP, driven by wrk (one thread, ``--connections``) from a file of requests, one
workload after another, interleaved over ``--rounds`` rounds (medians reported):

``grant_mint_http``       ``POST /v1/grants`` on the media API (the edge process)
``send_plain``            a plain video share: ``POST .../messages`` with ``media_id``
``send_sealed_x25519``    the same message sealed to the recipient's one device (x25519),
                          naming its grant (the dm checks the sender minted it)
``send_sealed_mlkem``     the same with the ``mlkem768-x25519`` suite
``fetch_first_grant``     edge ``GET /m/{id}?grant=...``, a NEW grant on every request
                          (verify + revocation/rights checks + the Redis binding script)
``fetch_first_pointer``   edge ``GET /m/{id}?pointer=...``, a NEW pointer on every request
``fetch_repeat_grant``    one grant, already bound: the cached path
``fetch_repeat_pointer``  one pointer: the cached path

Every fetch asks for a 64 KiB Range of a private video as its recipient.  The grants and
pointers for the fetch workloads are minted in this process with the media API's own key
ring (the same bytes ``POST /v1/grants`` returns; the preflight checks one minted over HTTP
works too).  A run is INVALID if any response has the wrong status or size, any request
line was sent twice (a first fetch would become a cache hit, a sealed send a replay), or
the servers' own counters disagree (a denial, a cache hit in a first-fetch run, a replay).

Each server runs as its production entry point in its own process with its own Redis:
``python -m cdn_auth serve`` (edge + media API) and ``python -m dm serve``; access logs off.
Besides req/s, each HTTP workload reports the server process's CPU per request (from
``/proc``), which a noisy machine distorts far less than wall-clock throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdn_auth import grant as grant_mod
from cdn_auth import pointer as pointer_mod
from cdn_auth import redis_keys
from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.keyset import keys_from_jwks
from cdn_auth.token_format import SigningKey, VerifyKey
from dm import envelope
from dm.identity import JWKS_FILE, DevIssuer
from loadtests.bench.dm import (
    LinePool,
    Pair,
    Sample,
    Server,
    Wrk,
    WrkRun,
    WrkSpec,
    make_pairs,
    median,
    message_body,
    metric_sum,
    register_sender_media,
    request_line,
    scrape,
    send_path,
    session_issuer,
    start_dm,
    workdir,
    write_lines,
)
from loadtests.bench.edge import (
    BenchError,
    child_process,
    clip_bytes,
    edge_command,
    edge_env,
    fetch,
    run_and_report,
    wait_ready,
)
from service_kernel.encoding import b64url_decode, b64url_encode
from service_kernel.files import atomic_write
from service_kernel.ids import new_id
from service_kernel.redis_process import RedisProcess, free_port

SUITES = {"x25519": "send_sealed_x25519", "mlkem768-x25519": "send_sealed_mlkem"}
TOKEN_TTL_S = 900  # the edge's default max_token_lifetime_s
FILE_BYTES = 1024 * 1024
RANGE_BYTES = 64 * 1024
RANGE_HEADER = f"Range: bytes=0-{RANGE_BYTES - 1}"
ORIGIN_RELPATH = "bench/clip.mp4"
SETTLE_S = 0.3
TEXT = "look at this"
#: "For scale" figures measured earlier on this machine (microseconds), shown beside ours.
REFERENCE_US = {"seal_us": 100, "open_us": 60, "seal_pq_us": 130, "open_pq_us": 100}
PREFLIGHT_BASE = 10_000_000  # request indices the preflight uses; pools count up from 0


def say(message: str) -> None:
    """Progress goes to stderr so that stdout stays the report (or pure JSON)."""
    print(f"[bench sealed] {message}", file=sys.stderr, flush=True)


# -- in-process micro costs ---------------------------------------------------------------

def per_op_us(fn: Callable[[], object], repeats: int) -> float:
    """Median over ``repeats`` timeit repeats of the per-call CPU time, in microseconds.

    The timer is this process's CPU clock, not the wall clock: on a shared 2-core
    machine the scheduler's pauses would otherwise land in the figures.
    """
    timer = timeit.Timer(fn, timer=time.process_time)
    number, _ = timer.autorange()
    return round(statistics.median(t / number for t in timer.repeat(repeats, number)) * 1e6, 2)


@dataclass(frozen=True)
class Tokens:
    """The media API's key ring, as the edge trusts it: mint and verify both token kinds."""

    signer: SigningKey
    keys: dict[str, VerifyKey]
    media_id: str

    def grant(self, grant_id: str, sharer: str = "alice") -> str:
        return grant_mod.mint(self.signer, grant_id=grant_id, media_id=self.media_id,
                              max_redeemers=1, sharer=sharer, now=time.time(),
                              ttl_s=TOKEN_TTL_S)

    def pointer(self, message_id: str, reader: str = "bob") -> str:
        return pointer_mod.mint(self.signer, media_id=self.media_id, sub=reader,
                                conversation_id="c_bench", message_id=message_id,
                                now=time.time(), ttl_s=TOKEN_TTL_S)


@dataclass
class GrantRecords:
    """Who minted each sealed line's grant, written to the dm's Redis before a run.

    The dm accepts a sealed message's ``grant_id`` only from the grant's sharer, and
    reads that from the record ``POST /v1/grants`` writes (``HSET sharer``, expiring
    with the grant) in the store the two services share.  Each server here has its own
    Redis and the grants are minted in this process, so the benchmark writes the same
    record into the dm's Redis itself, in one pipeline per run.
    """

    redis_url: str
    pending: list[tuple[str, str]] = field(default_factory=list)  # (grant id, sharer)

    def note(self, grant_id: str, sharer: str) -> None:
        self.pending.append((grant_id, sharer))

    def flush(self) -> None:
        if not self.pending:
            return
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            expires = int(time.time()) + TOKEN_TTL_S + 60
            with client.pipeline(transaction=False) as p:
                for grant_id, sharer in self.pending:
                    key = redis_keys.grant_meta_key(grant_id)
                    p.hset(key, mapping={"sharer": sharer})
                    p.expireat(key, expires)
                p.execute()
        finally:
            client.close()
        self.pending.clear()


def sample_payload(tokens: Tokens) -> envelope.Payload:
    """What a sealed video share carries: the media id, a real grant, a caption, a franking key."""
    return envelope.Payload(tokens.media_id, tokens.grant(new_id("g")), TEXT,
                            envelope.new_franking_key())


def crypto_costs(suite: str, payload: envelope.Payload, repeats: int) -> dict[str, float]:
    """Seal to one device and open it, for one suite."""
    key = envelope.DeviceKey.generate(suite)
    public = key.public_bytes()
    binding = envelope.Binding("c_bench", "u_alice", "s_bench", "u_bob", "d_bob")
    sealed = envelope.seal(suite, public, binding, payload)
    return {"seal": per_op_us(lambda: envelope.seal(suite, public, binding, payload), repeats),
            "open": per_op_us(lambda: envelope.open_envelope(key, binding, sealed), repeats),
            "bytes": len(sealed), "b64_chars": len(b64url_encode(sealed))}


def token_costs(tokens: Tokens, repeats: int) -> dict[str, float]:
    """Mint (the media API / the dm) and verify (the edge, on a cache miss) each token kind."""
    g, p, now = tokens.grant("g_bench"), tokens.pointer("msg_bench"), time.time()
    return {
        "grant_mint_us": per_op_us(lambda: tokens.grant("g_bench"), repeats),
        "pointer_mint_us": per_op_us(lambda: tokens.pointer("msg_bench"), repeats),
        "grant_verify_us": per_op_us(lambda: grant_mod.verify(
            g, tokens.keys, now, max_lifetime_s=TOKEN_TTL_S), repeats),
        "pointer_verify_us": per_op_us(lambda: pointer_mod.verify(
            p, tokens.keys, now, max_lifetime_s=TOKEN_TTL_S), repeats),
        "grant_chars": len(g), "pointer_chars": len(p),
    }


def franking_costs(payload: envelope.Payload, repeats: int) -> dict[str, float]:
    """The sender's commitment and the server's countersignature (HMAC-SHA256 each)."""
    server_key = os.urandom(32)
    commitment = envelope.commit(payload, "c_bench", "u_alice", "s_bench")
    return {
        "commit_us": per_op_us(lambda: envelope.commit(payload, "c_bench", "u_alice", "s_bench"),
                               repeats),
        "countersign_us": per_op_us(lambda: envelope.countersign(
            server_key, commitment, "c_bench", "u_alice", "s_bench", 1_700_000_000_000), repeats),
    }


def micro(tokens: Tokens, repeats: int) -> dict[str, Any]:
    """Everything measured in-process, before any load runs."""
    payload = sample_payload(tokens)
    say(f"timing crypto and tokens in-process ({repeats} repeats each)")
    x, pq = crypto_costs("x25519", payload, repeats), crypto_costs("mlkem768-x25519", payload,
                                                                   repeats)
    return {**token_costs(tokens, repeats), **franking_costs(payload, repeats),
            "seal_us": x["seal"], "open_us": x["open"],
            "seal_pq_us": pq["seal"], "open_pq_us": pq["open"],
            "envelope_bytes": x["bytes"], "envelope_pq_bytes": pq["bytes"],
            "envelope_b64_chars": x["b64_chars"], "envelope_pq_b64_chars": pq["b64_chars"],
            "payload_bytes": len(payload.encode())}


# -- the test bed ---------------------------------------------------------------------------

@dataclass
class Bed:
    root: Path
    edge: Server
    dm: Server
    wrk: Wrk
    tokens: Tokens
    alice: str  # the video's owner: mints grants over HTTP
    bob_file: Path  # "Bearer <bob>": the recipient every fetch is made as
    pairs: dict[str, list[Pair]]  # "plain" and each suite -> conversations
    grants: GrantRecords  # the sealed lines' grant records, for the dm's Redis


def start_edge(stack: contextlib.ExitStack, root: Path, ring: KeyRing) -> Server:
    """Its own Redis, then ``python -m cdn_auth serve`` holding the ring (it mints grants)."""
    redis = stack.enter_context(RedisProcess(root / "edge-redis"))
    port, log = free_port(), root / "edge.log"
    env = edge_env(ring.path / VERIFY_JWKS_FILE, root / "keys" / "session" / JWKS_FILE)
    env["CDN_AUTH_KEYRING_DIR"] = str(ring.path)
    proc = stack.enter_context(child_process(
        edge_command(port, redis.url, root / "origin"), log, env))
    wait_ready("edge", proc, port, "/readyz", log)
    assert redis.proc is not None
    return Server("edge", port, proc, log, redis.url, redis.proc.pid)


def register_video(port: int, issuer: DevIssuer) -> str:
    """Alice's private video in the media API, registered as a content pipeline would."""
    publisher = issuer.mint("publisher", roles=["publisher"])
    body = json.dumps({"origin_path": ORIGIN_RELPATH, "content_type": "video/mp4",
                       "visibility": "private", "owner": "alice"}).encode()
    status, _, raw = fetch(port, "POST", "/v1/media", body=body, headers={
        "Authorization": f"Bearer {publisher}", "Content-Type": "application/json"})
    if status != 201:
        raise BenchError(f"media registration failed: {status} {raw[:300]!r}")
    return str(json.loads(raw)["id"])


def build_pairs(dm: Server, count: int) -> dict[str, list[Pair]]:
    """Plain conversations, and sealed ones whose recipients hold a key of each suite."""
    out = {"plain": asyncio.run(make_pairs(dm.url, count))}
    for suite in SUITES:
        out[suite] = asyncio.run(make_pairs(dm.url, count, mode="sealed", suite=suite))
    asyncio.run(register_sender_media(dm.redis_url, [p for ps in out.values() for p in ps]))
    return out


@contextlib.contextmanager
def testbed(root: Path, opts: Options) -> Iterator[Bed]:
    """Origin file, keys, both servers with their Redis; all stopped on exit."""
    origin = root / "origin" / "ingest" / ORIGIN_RELPATH
    origin.parent.mkdir(parents=True)
    origin.write_bytes(clip_bytes(FILE_BYTES))
    issuer = session_issuer(root)
    ring = KeyRing.create(root / "keys" / "pointer")
    with contextlib.ExitStack() as stack:
        wrk = Wrk.find(root)
        say(f"starting the edge, the dm and their Redis under {root} ({wrk.version})")
        edge = start_edge(stack, root, ring)
        dm = start_dm(stack, root, ring.path, edge_url=edge.url)
        media_id = register_video(edge.port, issuer)
        tokens = Tokens(ring.signer(), keys_from_jwks(ring.verify_jwks()), media_id)
        pairs = build_pairs(dm, opts.pairs)
        bob_file = root / "bob.txt"
        atomic_write(bob_file, f"Bearer {issuer.mint('bob', ttl_s=6 * 3600)}\n".encode(), 0o600)
        say(f"{sum(len(p) for p in pairs.values())} conversations ready")
        yield Bed(root, edge, dm, wrk, tokens, issuer.mint("alice", ttl_s=6 * 3600), bob_file,
                  pairs, GrantRecords(dm.redis_url))


# -- what each workload sends ----------------------------------------------------------------

@dataclass
class Workload:
    """One HTTP workload: its server, its request lines, and what a good answer is."""

    name: str
    server: str  # "edge" or "dm"
    pool: LinePool
    expected_status: int
    expected_len: int = -1
    extra_header: str = "-"
    min_hint: float = 3000.0
    check: Callable[[list[Sample], list[Sample], WrkRun], list[str]] | None = None
    best_rps: float = 0.0


def sealed_line(pair: Pair, suite: str, tokens: Tokens, grants: GrantRecords, i: int) -> str:
    """A sealed video share to the recipient's one device, as ``DmClient.send_sealed`` builds it.

    Each line has its own client message id (the server's idempotency key for sealed
    sends), its own grant and its own franking key, so no two requests are alike.
    """
    assert pair.recipient_key is not None
    cmid, grant_id = f"s_{suite[:2]}_{i}", f"g_bench_{suite[:2]}_{i}"
    payload = envelope.Payload(tokens.media_id, tokens.grant(grant_id, sharer=pair.sender), TEXT,
                               envelope.new_franking_key())
    grants.note(grant_id, pair.sender)
    binding = envelope.Binding(pair.cid, pair.sender, cmid, pair.recipient, pair.recipient_device)
    ct = envelope.seal(suite, _public(pair), binding, payload)
    body = {"client_message_id": cmid, "grant_id": grant_id,
            "franking_commitment": b64url_encode(envelope.commit(payload, pair.cid, pair.sender,
                                                                 cmid)),
            "envelopes": [{"user_id": pair.recipient, "device_id": pair.recipient_device,
                           "suite": suite, "ciphertext": b64url_encode(ct)}]}
    return request_line("POST", send_path(pair.cid), auth=f"Bearer {pair.sender_token}",
                        body=json.dumps(body, separators=(",", ":")))


_PUBLIC: dict[str, bytes] = {}


def _public(pair: Pair) -> bytes:
    """The recipient's public key bytes (derived once: ML-KEM derivation is not free)."""
    assert pair.recipient_key is not None
    if pair.recipient_device not in _PUBLIC:
        _PUBLIC[pair.recipient_device] = pair.recipient_key.public_bytes()
    return _PUBLIC[pair.recipient_device]


def plain_line(pair: Pair, i: int) -> str:
    """The same share in plain mode: the media id and caption, with an Idempotency-Key."""
    return request_line("POST", send_path(pair.cid), auth=f"Bearer {pair.sender_token}",
                        key=f"plain_{i}", body=message_body("media", pair.media_id, TEXT))


def fetch_line(media_id: str, param: str, token: str) -> str:
    return request_line("GET", f"/m/{media_id}?{param}={token}")


def edge_check(reason: str, cache: str, *, first: bool) -> Callable[
        [list[Sample], list[Sample], WrkRun], list[str]]:
    """The edge's view: no denials, an allow per response, and the cache as cold/warm as meant."""
    def check(before: list[Sample], after: list[Sample], raw: WrkRun) -> list[str]:
        def delta(name: str, **labels: str) -> float:
            return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

        out = []
        denied = delta("cdn_auth_decisions_total", outcome="deny")
        allowed = delta("cdn_auth_decisions_total", outcome="allow", reason=reason)
        hits = delta("cdn_auth_cache_lookups_total", cache=cache, result="hit")
        misses = delta("cdn_auth_cache_lookups_total", cache=cache, result="miss")
        if denied:
            out.append(f"the edge denied {denied:.0f} requests")
        if allowed < raw.ok:
            out.append(f"the edge allowed {allowed:.0f} by {reason} but {raw.ok} 206s arrived")
        if first and hits:
            out.append(f"{hits:.0f} {cache} cache hits in a first-fetch run")
        if not first and misses > 0.01 * (hits + misses):
            out.append(f"{misses:.0f} {cache} cache misses in a repeat-fetch run")
        return out

    return check


def dm_check(mode: str) -> Callable[[list[Sample], list[Sample], WrkRun], list[str]]:
    """The dm's view: every 201 counted as a new send of this mode, nothing replayed."""
    def check(before: list[Sample], after: list[Sample], raw: WrkRun) -> list[str]:
        def delta(replayed: str) -> float:
            return metric_sum(after, "dm_sends_total", mode=mode, replayed=replayed) \
                - metric_sum(before, "dm_sends_total", mode=mode, replayed=replayed)

        new, replays = delta("false"), delta("true")
        out = []
        if replays:
            out.append(f"the dm replayed {replays:.0f} sends (a request was repeated)")
        if not raw.ok <= new <= raw.sent:
            out.append(f"the dm accepted {new:.0f} {mode} sends; wrk saw {raw.ok} 201s")
        return out

    return check


def pool(label: str, make: Callable[[int], str], *, once: bool = True) -> LinePool:
    return LinePool(label, make, once, log=say)


def send_workloads(bed: Bed) -> list[Workload]:
    """Grant minting on the media API, then one send workload per mode on the dm."""
    t, plain = bed.tokens, bed.pairs["plain"]
    grant_body = json.dumps({"media_id": t.media_id, "redeemers": 1})
    out = [Workload("grant_mint_http", "edge", pool("grant mint", lambda i: request_line(
               "POST", "/v1/grants", auth=f"Bearer {bed.alice}", body=grant_body), once=False),
               201),
           Workload("send_plain", "dm", pool("plain send", lambda i: plain_line(
               plain[i % len(plain)], i)), 201, min_hint=2000, check=dm_check("plain"))]
    for suite, name in SUITES.items():
        out.append(Workload(name, "dm", pool(f"{suite} sealed send", _sealed_maker(
            bed.pairs[suite], suite, t, bed.grants)), 201, min_hint=1500,
            check=dm_check("sealed")))
    return out


def fetch_workloads(bed: Bed) -> list[Workload]:
    """The edge's first and repeat fetches, by grant and by pointer."""
    t, m = bed.tokens, bed.tokens.media_id
    fixed_grant, fixed_pointer = t.grant("g_bench_repeat"), t.pointer("msg_repeat")

    def fetches(name: str, make: Callable[[int], str], reason: str, *, first: bool) -> Workload:
        return Workload(name, "edge", pool(name.replace("_", " "), make, once=first), 206,
                        RANGE_BYTES, RANGE_HEADER, min_hint=4000 if first else 3000,
                        check=edge_check(reason, reason, first=first))

    return [
        fetches("fetch_first_grant", lambda i: fetch_line(m, "grant", t.grant(
            f"g_bench_first_{i}")), "grant", first=True),
        fetches("fetch_first_pointer", lambda i: fetch_line(m, "pointer", t.pointer(
            f"msg_first_{i}")), "pointer", first=True),
        fetches("fetch_repeat_grant", lambda i: fetch_line(m, "grant", fixed_grant), "grant",
                first=False),
        fetches("fetch_repeat_pointer", lambda i: fetch_line(m, "pointer", fixed_pointer),
                "pointer", first=False),
    ]


def workloads(bed: Bed) -> list[Workload]:
    """The eight HTTP workloads, in their first round's order."""
    return send_workloads(bed) + fetch_workloads(bed)


def _sealed_maker(pairs: list[Pair], suite: str, tokens: Tokens,
                  grants: GrantRecords) -> Callable[[int], str]:
    return lambda i: sealed_line(pairs[i % len(pairs)], suite, tokens, grants, i)


# -- preflight: every workload answers as it should before anything is measured -------------

def replay(port: int, line: str, default_auth: str,
           extra: str = "-") -> tuple[int, dict[str, str], bytes]:
    """Send one request line with http.client (setup only), as the Lua script would."""
    method, path, auth, key, body = line.split("\t", 4)
    headers = {"Authorization": auth or default_auth}
    if key:
        headers["Idempotency-Key"] = key
    if body:
        headers["Content-Type"] = "application/json"
    if extra != "-":
        name, _, value = extra.partition(":")
        headers[name] = value.strip()
    return fetch(port, method, path, headers=headers, body=body.encode() or None)


def preflight(bed: Bed, loads: list[Workload]) -> None:
    """One request per workload (not from the pools), then the end-to-end sealed checks."""
    bob = bed.bob_file.read_text().strip()
    for w in loads:
        line = w.pool.make(PREFLIGHT_BASE)
        bed.grants.flush()
        port = bed.edge.port if w.server == "edge" else bed.dm.port
        status, _, body = replay(port, line, bob, w.extra_header)
        if status != w.expected_status or (w.expected_len >= 0 and len(body) != w.expected_len):
            raise BenchError(f"{w.name}: expected {w.expected_status}, got {status} "
                             f"({len(body)} bytes) {body[:300]!r}")
    check_http_grant(bed, bob)
    for suite in SUITES:
        check_sealed_opens(bed, suite)


def check_http_grant(bed: Bed, bob: str) -> None:
    """A grant minted by ``POST /v1/grants`` opens the video for its first redeemer."""
    status, _, raw = fetch(bed.edge.port, "POST", "/v1/grants", headers={
        "Authorization": f"Bearer {bed.alice}", "Content-Type": "application/json"},
        body=json.dumps({"media_id": bed.tokens.media_id, "redeemers": 1}).encode())
    if status != 201:
        raise BenchError(f"POST /v1/grants answered {status}: {raw[:300]!r}")
    token = json.loads(raw)["grant"]
    status, _, body = fetch(bed.edge.port, "GET", f"/m/{bed.tokens.media_id}?grant={token}",
                            headers={"Authorization": bob, "Range": RANGE_HEADER.split(": ")[1]})
    if status != 206 or len(body) != RANGE_BYTES:
        raise BenchError(f"a grant from POST /v1/grants did not fetch: {status} {body[:200]!r}")


def check_sealed_opens(bed: Bed, suite: str) -> None:
    """The recipient reads the preflight's sealed message and opens it, franking included."""
    pair = bed.pairs[suite][PREFLIGHT_BASE % len(bed.pairs[suite])]
    assert pair.recipient_key is not None
    status, _, raw = fetch(bed.dm.port, "GET", send_path(pair.cid),
                           headers={"Authorization": f"Bearer {pair.recipient_token}"})
    messages = json.loads(raw).get("messages", []) if status == 200 else []
    if not messages:
        raise BenchError(f"{suite}: the recipient sees no sealed message ({status})")
    msg = messages[-1]
    binding = envelope.Binding(pair.cid, msg["sender"], msg["client_message_id"], pair.recipient,
                               pair.recipient_device)
    try:
        payload = envelope.open_envelope(pair.recipient_key, binding,
                                         b64url_decode(msg["envelope"]))
        envelope.check_commitment(b64url_decode(msg["franking"]["commitment"]), payload,
                                  pair.cid, msg["sender"], msg["client_message_id"])
    except envelope.EnvelopeError as exc:
        raise BenchError(f"{suite}: the recipient could not open the envelope: {exc}") from exc
    if payload.media_id != bed.tokens.media_id or payload.text != TEXT:
        raise BenchError(f"{suite}: the opened payload differs from what was sealed")


# -- measuring -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    workload: str
    round: int
    raw: WrkRun
    cpu_us: dict[str, float | None]  # per good response: the server's and its Redis's
    problems: tuple[str, ...]


def run_once(bed: Bed, w: Workload, *, round_no: int, seconds: int,
             connections: int) -> RunResult:
    """One wrk run of one workload, judged by wrk and by the server's own counters."""
    server = bed.edge if w.server == "edge" else bed.dm
    lines = w.pool.reserve(int(max(w.best_rps, w.min_hint) * (seconds + 2) * 1.5))
    lines_file = write_lines(bed.root / "requests" / f"{w.name}-{round_no}.txt", lines)
    bed.grants.flush()
    server.check_alive()
    before, cpu = scrape(server.port), server.cpu()
    raw = bed.wrk.run(WrkSpec(server.port, lines_file, bed.bob_file, seconds, connections,
                              w.expected_status, w.expected_len, w.extra_header))
    w.pool.retire(raw.sent)
    time.sleep(SETTLE_S)
    server.check_alive()
    cpu_us = server.cpu().per_op_us(cpu, raw.ok)
    problems = raw.problems(once=w.pool.once)
    if w.check is not None:
        problems += w.check(before, scrape(server.port), raw)
    w.best_rps = max(w.best_rps, raw.rps)
    return RunResult(w.name, round_no, raw, cpu_us, tuple(problems))


def progress(r: RunResult, label: str) -> None:
    verdict = "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)
    say(f"{label} {r.workload:<21} {r.raw.rps:8.0f} req/s  p50 {r.raw.p50_ms:7.2f} ms  "
        f"p99 {r.raw.p99_ms:7.2f} ms  CPU {r.cpu_us['server']} us/req  errors {r.raw.errors}  "
        f"{verdict}")


def measure(bed: Bed, loads: list[Workload], opts: Options) -> list[RunResult]:
    """A warm-up pass, then ``rounds`` interleaved rounds, each rotating the order."""
    if opts.warmup_s:
        for w in loads:
            progress(run_once(bed, w, round_no=0, seconds=opts.warmup_s,
                              connections=opts.connections), "warm-up  ")
    results = []
    for n in range(1, opts.rounds + 1):
        shift = (n - 1) % len(loads)
        for w in loads[shift:] + loads[:shift]:
            r = run_once(bed, w, round_no=n, seconds=opts.duration_s,
                         connections=opts.connections)
            results.append(r)
            progress(r, f"round {n}/{opts.rounds}")
    return results


# -- the report ------------------------------------------------------------------------------

def workload_summary(runs: list[RunResult], server: str) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]

    def cpu(who: str) -> float | None:
        values = [v for r in runs if (v := r.cpu_us[who]) is not None]
        return round(median(values), 1) if values else None

    return {"server": server, "rps": round(median([r.raw.rps for r in runs]), 1),
            "server_cpu_us": cpu("server"), "redis_cpu_us": cpu("redis"),
            "p50_ms": round(median([r.raw.p50_ms for r in runs]), 3),
            "p99_ms": round(median([r.raw.p99_ms for r in runs]), 3),
            "errors": sum(r.raw.errors for r in runs), "requests": sum(r.raw.ok for r in runs),
            "rps_rounds": [round(r.raw.rps, 1) for r in runs],
            "valid": not problems, "problems": problems}


def ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num and den else None


#: ratio name -> (numerator workload, denominator workload)
RATIOS = {
    "grant_first_fetch_ratio": ("fetch_first_grant", "fetch_first_pointer"),
    "grant_repeat_fetch_ratio": ("fetch_repeat_grant", "fetch_repeat_pointer"),
    "sealed_send_ratio": ("send_sealed_x25519", "send_plain"),
    "sealed_pq_send_ratio": ("send_sealed_mlkem", "send_plain"),
}


def paired_ratio(results: list[RunResult], a: str, b: str,
                 value: Callable[[RunResult], float | None]) -> float | None:
    """Median over rounds of ``value(a) / value(b)`` within each round.

    The two workloads of a ratio run back to back in every round, so pairing them
    cancels most of the slow drift a shared machine adds to both.
    """
    by_round: dict[int, dict[str, RunResult]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.workload] = r
    values = [q for runs in by_round.values() if a in runs and b in runs
              and (q := ratio(value(runs[a]), value(runs[b]))) is not None]
    return round(median(values), 3) if values else None


def ratios(results: list[RunResult]) -> dict[str, float | None]:
    """Throughput ratios, and the same comparison by server CPU per request (inverted)."""
    out: dict[str, float | None] = {}
    for name, (a, b) in RATIOS.items():
        out[name] = paired_ratio(results, a, b, lambda r: r.raw.rps)
        out[f"{name}_by_cpu"] = paired_ratio(results, b, a, lambda r: r.cpu_us["server"])
    return out


def send_sizes(bed: Bed) -> dict[str, int]:
    """Bytes of one send request body per mode (one recipient device)."""
    plain = bed.pairs["plain"][0]
    out = {"send_body_plain_bytes": len(plain_line(plain, 0).split("\t")[4])}
    for suite, name in SUITES.items():
        body = sealed_line(bed.pairs[suite][0], suite, bed.tokens, bed.grants,
                           PREFLIGHT_BASE + 1)
        out[f"{name.replace('send_', 'send_body_')}_bytes"] = len(body.split("\t")[4])
    return out


def summarize(bed: Bed, loads: list[Workload], results: list[RunResult], micro_: dict[str, Any],
              opts: Options) -> dict[str, Any]:
    http = {w.name: workload_summary([r for r in results if r.workload == w.name], w.server)
            for w in loads}
    return {
        "benchmark": "sealed", "valid": all(h["valid"] for h in http.values()),
        **{k: micro_[k] for k in ("seal_us", "open_us", "seal_pq_us", "open_pq_us",
                                  "envelope_bytes", "envelope_pq_bytes")},
        **ratios(results),
        "grant_mint_us": micro_["grant_mint_us"], "pointer_mint_us": micro_["pointer_mint_us"],
        "grant_mint_http_rps": http["grant_mint_http"]["rps"],
        "micro": micro_, "sizes": send_sizes(bed), "http": http,
        "reference_us": REFERENCE_US,
        "config": {"generator": bed.wrk.version, "threads": 1, "connections": opts.connections,
                   "duration_s": opts.duration_s, "rounds": opts.rounds,
                   "warmup_s": opts.warmup_s, "timeit_repeats": opts.repeats,
                   "conversations_per_mode": opts.pairs, "range": RANGE_HEADER,
                   "file_bytes": FILE_BYTES, "cpus": os.cpu_count(),
                   "statistic": "median of rounds (ratios: of per-round ratios); micro costs: "
                                "median of timeit repeats of process CPU time"},
        "runs": [{"workload": r.workload, "round": r.round, "rps": round(r.raw.rps, 1),
                  "server_cpu_us": r.cpu_us["server"], "p50_ms": round(r.raw.p50_ms, 3),
                  "p99_ms": round(r.raw.p99_ms, 3), "requests": r.raw.requests,
                  "errors": r.raw.errors, "problems": list(r.problems)} for r in results],
    }


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _micro_rows(report: dict[str, Any]) -> list[str]:
    m, s, ref = report["micro"], report["sizes"], report["reference_us"]
    row = "  {:<36}{:>14}{:>14}{:>18}   {}"
    return [
        f"per-operation cost in this process (median of {report['config']['timeit_repeats']} "
        "timeit repeats, CPU time of one core)",
        row.format("operation", "plain", "x25519", "mlkem768-x25519", "for scale"),
        row.format("token mint (pointer | grant)", f"{m['pointer_mint_us']:.1f} us",
                   f"{m['grant_mint_us']:.1f} us", f"{m['grant_mint_us']:.1f} us", ""),
        row.format("token verify at the edge (miss)", f"{m['pointer_verify_us']:.1f} us",
                   f"{m['grant_verify_us']:.1f} us", f"{m['grant_verify_us']:.1f} us", ""),
        row.format("seal, per recipient device", "-", f"{m['seal_us']:.1f} us",
                   f"{m['seal_pq_us']:.1f} us",
                   f"~{ref['seal_us']} | ~{ref['seal_pq_us']} us"),
        row.format("open (recipient device)", "-", f"{m['open_us']:.1f} us",
                   f"{m['open_pq_us']:.1f} us", f"~{ref['open_us']} | ~{ref['open_pq_us']} us"),
        row.format("franking commit | countersign", "-",
                   f"{m['commit_us']:.1f} | {m['countersign_us']:.1f}", "same", ""),
        row.format("envelope bytes (raw | base64url)", "-",
                   f"{m['envelope_bytes']} | {m['envelope_b64_chars']}",
                   f"{m['envelope_pq_bytes']} | {m['envelope_pq_b64_chars']}", ""),
        row.format("send body bytes, 1 device", str(s["send_body_plain_bytes"]),
                   str(s["send_body_sealed_x25519_bytes"]),
                   str(s["send_body_sealed_mlkem_bytes"]), ""),
        row.format("token chars (pointer | grant)", str(m["pointer_chars"]),
                   str(m["grant_chars"]), str(m["grant_chars"]), ""),
    ]


def _http_rows(report: dict[str, Any]) -> list[str]:
    c = report["config"]
    lines = [f"over HTTP: {c['generator']}, 1 thread, {c['connections']} connections; median "
             f"of {c['rounds']} interleaved rounds x {c['duration_s']} s; fetches are "
             f"{c['range']} of a private video",
             f"  {'workload':<23}{'server':<7}{'req/s':>8}{'CPU us/req':>12}{'Redis us':>10}"
             f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}  valid"]
    for name, h in report["http"].items():
        lines.append(f"  {name:<23}{h['server']:<7}{h['rps']:>8.0f}"
                     f"{_fmt(h['server_cpu_us']):>12}{_fmt(h['redis_cpu_us']):>10}"
                     f"{h['p50_ms']:>9.2f}{h['p99_ms']:>9.2f}{h['errors']:>8}  "
                     f"{'yes' if h['valid'] else 'NO'}")
    lines.append("  (CPU us/req: the server process's CPU per good response; Redis us: its "
                 "Redis's)")
    return lines


def _ratio_rows(report: dict[str, Any]) -> list[str]:
    row = "  {:<44}{:>10}{:>12}"
    lines = ["ratios (median over rounds of the ratio within each round; by CPU/req is the "
             "inverse CPU ratio, so both read 'x as fast')",
             row.format("", "by req/s", "by CPU/req")]
    for name, what in (("grant_first_fetch_ratio", "first fetch: grant / pointer"),
                       ("grant_repeat_fetch_ratio", "repeat fetch: grant / pointer"),
                       ("sealed_send_ratio", "send: sealed x25519 / plain"),
                       ("sealed_pq_send_ratio", "send: sealed mlkem768-x25519 / plain")):
        lines.append(row.format(what, _fmt(report[name], ".3f"),
                                _fmt(report[f"{name}_by_cpu"], ".3f")))
    return lines


def render_table(report: dict[str, Any]) -> str:
    lines = [f"sealed-mode benchmark: plain vs sealed (x25519, mlkem768-x25519); "
             f"{report['config']['cpus']} CPUs", "", *_micro_rows(report), "",
             *_http_rows(report), "", *_ratio_rows(report), ""]
    if report["valid"]:
        lines.append("VALID: every response of the right status and size, no request line "
                     "repeated, the servers' counters agree (no denials, first fetches all "
                     "cache misses, no sealed replays)")
    else:
        lines.append("INVALID measurement; problems:")
        lines += [f"  {n}: {p}" for n, h in report["http"].items() for p in h["problems"]]
    return "\n".join(lines)


# -- entry points -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    duration_s: int
    rounds: int
    warmup_s: int
    connections: int
    pairs: int
    repeats: int
    json: bool
    dir: Path | None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench sealed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=3, help="seconds per measured run (3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per workload (1)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--pairs", type=int, default=128,
                   help="conversations per mode (128): keeps each under the dm's send rate limit")
    p.add_argument("--repeats", type=int, default=7, help="timeit repeats per micro cost (7)")
    p.add_argument("--dir", type=Path, help="working directory, recreated and kept "
                   "(default: a temporary one, removed at the end)")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON on stdout (the table then goes to stderr)")
    return p


def options(argv: list[str] | None) -> Options:
    a = parser().parse_args(argv)
    if a.duration < 1 or a.rounds < 1 or a.warmup < 0 or a.connections < 1 or a.pairs < 1 \
            or a.repeats < 1:
        parser().error("--duration, --rounds, --connections, --pairs, --repeats must be >= 1")
    return Options(a.duration, a.rounds, a.warmup, a.connections, a.pairs, a.repeats, a.json,
                   a.dir)


def run(opts: Options) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        root = workdir(stack, opts.dir, "sealed")
        (root / "requests").mkdir()
        bed = stack.enter_context(testbed(root, opts))
        micro_ = micro(bed.tokens, opts.repeats)
        loads = workloads(bed)
        preflight(bed, loads)
        say("preflight ok: every workload answers; sealed messages open at the recipient")
        results = measure(bed, loads, opts)
        say("stopping the servers")
        return summarize(bed, loads, results, micro_, opts)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on a valid measurement, 1 if invalid or failed."""
    opts = options(argv)
    return run_and_report(lambda: run(opts), render_table, as_json=opts.json, say=say)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
