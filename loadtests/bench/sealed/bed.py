"""The sealed benchmark's bed: the edge (media API) and the dm, each with its own Redis,
the video, the conversations per mode, and the grant records the dm checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cdn_auth import redis_keys
from cdn_auth.keyring import KeyRing
from cdn_auth.keyset import keys_from_jwks
from loadtests.bench.conversations import Pair, make_pairs, register_sender_media
from loadtests.bench.harness import speaker
from loadtests.bench.tokens import TOKEN_TTL_S, Tokens
from loadtests.bench.wrk import Wrk
from loadtests.stack.servers import (
    ORIGIN_RELPATH,
    Server,
    clip_bytes,
    register_media,
    session_issuer,
    start_dm,
    start_edge,
)
from service_kernel.files import atomic_write

say = speaker("sealed")


SUITES = {"x25519": "send_sealed_x25519", "mlkem768-x25519": "send_sealed_mlkem"}
FILE_BYTES = 1024 * 1024
RANGE_BYTES = 64 * 1024
RANGE_HEADER = f"Range: bytes=0-{RANGE_BYTES - 1}"
SETTLE_S = 0.3
#: "For scale" figures measured earlier on this machine (microseconds), shown beside ours.
REFERENCE_US = {"seal_us": 100, "open_us": 60, "seal_pq_us": 130, "open_pq_us": 100}
PREFLIGHT_BASE = 10_000_000  # request indices the preflight uses; pools count up from 0


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
        wrk = Wrk.find()
        say(f"starting the edge, the dm and their Redis under {root} ({wrk.version})")
        edge = start_edge(stack, root, ring)
        dm = start_dm(stack, root, ring.path, edge_url=edge.url)
        media_id = register_media(edge.port, issuer, min_age=0)
        tokens = Tokens(ring.signer(), keys_from_jwks(ring.verify_jwks()), media_id)
        pairs = build_pairs(dm, opts.pairs)
        bob_file = root / "bob.txt"
        atomic_write(bob_file, f"Bearer {issuer.mint('bob', ttl_s=6 * 3600)}\n".encode(), 0o600)
        say(f"{sum(len(p) for p in pairs.values())} conversations ready")
        yield Bed(
            root,
            edge,
            dm,
            wrk,
            tokens,
            issuer.mint("alice", ttl_s=6 * 3600),
            bob_file,
            pairs,
            GrantRecords(dm.redis_url),
        )
