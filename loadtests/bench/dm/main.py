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
the dm child process, and the users/conversations set-"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from loadtests.bench.conversations import make_pairs, register_sender_media
from loadtests.bench.harness import HOST, bench_parser, common_flags, run_and_report, run_flags, workdir
from loadtests.bench.wrk import Wrk
from loadtests.stack.servers import session_issuer, start_dm
from service_kernel.files import atomic_write

from .bed import SEND_ROUND_TRIPS, Bed, Options, say
from .floor import start_floor
from .push import PushResult, open_floor_progress, push_progress, run_push
from .report import render_table, summarize
from .send import SendResult, run_send, send_pool, send_progress


def measure(
    bed: Bed,
) -> tuple[list[SendResult], list[PushResult], dict[int, list[SendResult]], list[PushResult]]:
    """A warm-up pass, then ``rounds`` rounds; each rotates the order of the workloads.

    Besides sends, floors and pushes, one ``open-floor@RATE``: the full floor server
    (a send's round trips, no product logic) under the push run's open-loop schedule at
    the head rate, sends only.  At 64 connections wrk keeps the floor busy, so its
    per-request costs are shared; spread out as the push run's sends arrive, each
    request pays its own wake-ups and system calls."""
    opts, pool = bed.opts, send_pool(bed.pairs, bed.opts.message)
    head, full = opts.rates[0], max(bed.floors)
    names = [
        "send",
        *(f"floor@{n}" for n in bed.floors),
        *(f"push@{r}" for r in opts.rates),
        f"open-floor@{head}",
    ]
    sends: list[SendResult] = []
    pushes: list[PushResult] = []
    open_floors: list[PushResult] = []
    floors: dict[int, list[SendResult]] = {n: [] for n in bed.floors}
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
            elif name.startswith("floor@"):
                trips = int(name.partition("@")[2])
                f = run_send(
                    bed, pool, round_no=n, seconds=opts.duration_s, hint=best, server=bed.floors[trips]
                )
                floors[trips].append(f)
                send_progress(f, label, name)
            elif name.startswith("open-floor@"):
                o = run_push(
                    bed, head, round_no=n, seconds=opts.duration_s, warmup_s=1.0, floor=bed.floors[full]
                )
                open_floors.append(o)
                open_floor_progress(o, label, name)
            else:
                p = run_push(
                    bed, int(name.partition("@")[2]), round_no=n, seconds=opts.duration_s, warmup_s=1.0
                )
                pushes.append(p)
                push_progress(p, label)
    return sends, pushes, floors, open_floors


def parser() -> argparse.ArgumentParser:
    p = bench_parser("dm", __doc__)
    run_flags(p, duration=5, rounds=3, connections=64, warmup=1)
    p.add_argument(
        "--push-connections",
        type=int,
        default=256,
        help="most concurrent sends of the open-loop generator (256)",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=128,
        help="sender->recipient conversations (128); sends spread over them",
    )
    p.add_argument(
        "--rates",
        default="1000,500,250",
        help="comma-separated push rates in messages/s; the first is compared "
        "with the target (1000,500,250)",
    )
    p.add_argument(
        "--message",
        choices=["media", "text"],
        default="media",
        help="a video share with a caption (media) or text only",
    )
    p.add_argument(
        "--send-rate-limit",
        type=int,
        help="set DM_SEND_RATE_PER_S for the dm under test (default: dm's own, 50)",
    )
    p.add_argument(
        "--event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="asyncio",
        help="DM_EVENT_LOOP of the dm under test (uvloop must be installed for uvloop/auto)",
    )
    return common_flags(p, workdir=True)


def options(argv: list[str] | None) -> Options:
    a = parser().parse_args(argv)
    try:
        rates = tuple(int(r) for r in a.rates.split(",") if r.strip())
    except ValueError:
        parser().error("--rates must be comma-separated integers")
    if (
        a.duration < 1
        or a.rounds < 1
        or a.warmup < 0
        or a.connections < 1
        or a.pairs < 1
        or a.push_connections < 1
        or not rates
        or min(rates) < 1
    ):
        parser().error("--duration, --rounds, --connections, --pairs, --rates must be >= 1")
    return Options(
        a.duration,
        a.rounds,
        a.warmup,
        a.connections,
        a.push_connections,
        a.pairs,
        rates,
        a.message,
        a.send_rate_limit,
        a.event_loop,
        a.json,
        a.dir,
    )


def run(opts: Options) -> dict[str, Any]:
    from cdn_auth.keyring import KeyRing

    with contextlib.ExitStack() as stack:
        root = workdir(stack, opts.dir, "dm")
        (root / "requests").mkdir()
        wrk = Wrk.find()
        session_issuer(root)
        ring = KeyRing.create(root / "keys" / "pointer")
        say(f"starting Redis and the dm under {root} (send generator: {wrk.version})")
        # The edge URL only goes into the media links the dm renders; nothing fetches them.
        dm = start_dm(
            stack,
            root,
            ring.path,
            edge_url=f"http://{HOST}:9",
            send_rate_per_s=opts.send_rate_limit,
            event_loop=opts.event_loop,
        )
        pairs = asyncio.run(make_pairs(dm.url, opts.pairs))
        asyncio.run(register_sender_media(dm.redis_url, pairs))
        say(f"{len(pairs)} conversations ready")
        auth_file = root / "auth.txt"
        atomic_write(auth_file, b"\n", 0o600)  # every line carries its sender's session
        floors = {n: start_floor(stack, root, dm, n, opts.event_loop) for n in (0, SEND_ROUND_TRIPS)}
        bed = Bed(root, dm, pairs, wrk, auth_file, opts, floors)
        sends, pushes, floor_runs, open_floors = measure(bed)
        say("stopping the servers")
        return summarize(bed, sends, pushes, floor_runs, open_floors)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on a valid measurement (targets met or not), 1 if invalid or failed."""
    opts = options(argv)
    return run_and_report(lambda: run(opts), render_table, as_json=opts.json, say=say)


if __name__ == "__main__":
    sys.exit(main())
