"""The dm benchmark's options, targets and bed (one dm process with its own Redis, the
conversations, wrk)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loadtests.bench.conversations import Pair
from loadtests.bench.harness import speaker
from loadtests.bench.wrk import Wrk
from loadtests.stack.servers import Server

say = speaker("dm")


TARGET_SEND_RPS = 2000.0
TARGET_PUSH_P99_MS = 20.0
#: dm CPU per message when one process both accepts the send and pushes it (issue 10).
TARGET_CPU_US_PER_MESSAGE = 400.0
#: Redis round trips of a media send once the dm's caches are warm: the route's rate-limit
#: charge, the SEND script and the announce pipeline (the publish, deduplicated by its
#: marker, and the received-media sets).  The floor servers make this many (see floor.py).
SEND_ROUND_TRIPS = 3
#: An open-loop run met its rate if at least this share of it was accepted on schedule.
RATE_MET_FRACTION = 0.98
SETTLE_S = 0.3  # lets the last responses land before the server's counters are read
MIN_SEND_HINT = 3000.0  # sizes the first request file before any rate is known


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
    event_loop: str
    json: bool
    dir: Path | None


@dataclass
class Bed:
    root: Path
    dm: Server
    pairs: list[Pair]
    wrk: Wrk
    auth_file: Path
    opts: Options
    #: Floor servers by their Redis round trips per request (see floor.py).
    floors: dict[int, Server]
