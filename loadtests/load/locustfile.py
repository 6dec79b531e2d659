"""Locust scenarios: share a video in a DM in four modes, and view it.

The modes: ``plain``; ``plain+scan`` (plain, sent to a dm that scans the
send: lists, media hashes); ``sealed`` (X25519); ``sealed-pq``
(ML-KEM-768+X25519).  Run by ``python -m loadtests run`` (which seeds,
drives open-model trials and step loads, and writes the report), or by
hand against any deployment whose dm service has the dev issuer on::

    locust -f loadtests/load/locustfile.py --host http://DM --edge-url http://EDGE \
        --rate-sealed 20 --hdr-out var/locust-hdr  SealedShare VideoViewerSealed

``PlainScanShare`` also needs ``--scan-dm-url http://SCANNING-DM``; without
one its sends fail rather than measure an unscanned dm.

Every phase is its own named entry ``<scenario>:<phase>`` (grant, seal,
send, delivery, open, read, first_byte, segment, total); client-side crypto
(seal, open) is timed and fired as a request of type ``crypto``.  The
request hook records every latency unrounded in HDR histograms (Locust's
own statistics round to whole milliseconds); workers ship them to the
master in their regular reports and on demand at the end of a segment.

Flows start on an open-model timetable (loadtests.load.arrivals): with a target
rate, ``total`` is measured from each flow's *intended* start, so a backlog
in the generator shows up as latency instead of hiding (coordinated
omission).  Without a rate a scenario runs closed-loop, as Locust usually
does.  Sealed senders fetch the recipient's device keys once and cache
them, as a real client would; devices do not change during a load test, so
a 409 device_mismatch is counted as a failed send.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests.load.scenarios import SCENARIOS, VIEW_PREFIX
from loadtests.load.users import (
    THROTTLED_REQUEST_TYPE,
    USER_CLASSES,
    PlainScanShare,
    PlainShare,
    SealedPqShare,
    SealedShare,
    VideoViewerPlain,
    VideoViewerPlainScan,
    VideoViewerSealed,
    VideoViewerSealedPq,
)
from loadtests.load.worker_state import STATE, Setup

#: The users Locust runs, imported from :mod:`.users` so that ``locust -f`` finds them here.
__all__ = [
    "USER_CLASSES",
    "PlainScanShare",
    "PlainShare",
    "SealedPqShare",
    "SealedShare",
    "VideoViewerPlain",
    "VideoViewerPlainScan",
    "VideoViewerSealed",
    "VideoViewerSealedPq",
]


#: Locust custom message types between the driver (master) and workers.
MSG_SETUP, MSG_SEGMENT, MSG_END, MSG_DATA = "lt_setup", "lt_segment", "lt_end", "lt_data"
#: A worker asks the master for the index of the seeded pair a new user takes, and is told.
MSG_TAKE, MSG_PAIR = "lt_take", "lt_pair"


# -- the request hook and shipping ------------------------------------------------------------


def _record(
    name: str,
    response_time: float,
    exception: BaseException | None = None,
    context: dict[str, Any] | None = None,
    request_type: str = "",
    **_: Any,
) -> None:
    """Every request and crypto step of a flow (its context names the segment) -> HDR."""
    segment = (context or {}).get("lt_segment")
    if segment is None or request_type == THROTTLED_REQUEST_TYPE:
        return  # a throttled answer is neither the phase's latency nor a failure
    STATE.recorder.record(
        segment,
        name,
        float(response_time),
        ok=exception is None,
        second=(context or {}).get("lt_second"),
    )


def _ship(client_id: str, data: dict[str, Any]) -> None:
    data["lt_hdr"] = STATE.recorder.drain()
    data["lt_ready"] = STATE.ready_users


def _merge(client_id: str, data: dict[str, Any]) -> None:
    if "lt_hdr" in data:
        STATE.merger.add(data["lt_hdr"])
    if "lt_ready" in data:
        STATE.worker_ready[client_id] = int(data["lt_ready"])


def _cpu_warning(environment: Environment, cpu_usage: float, **_: Any) -> None:
    segment = STATE.current_segment()
    if segment is not None:
        STATE.cpu_warned.add(segment)


# -- command line (plain ``locust -f`` runs) and worker messages ---------------------------------


def _arguments(parser: Any) -> None:
    parser.add_argument("--edge-url", default="", help="base URL of the edge (cdn_auth)")
    parser.add_argument(
        "--scan-dm-url",
        default="",
        help="a dm that scans plain sends (DM_SCAN_LISTS): required by PlainScanShare",
    )
    parser.add_argument(
        "--seed-file",
        default="",
        help="pairs seeded by `python -m loadtests "
        "seed`; without it each user creates its own users and video",
    )
    for scenario in SCENARIOS:
        if not scenario.startswith(VIEW_PREFIX):
            parser.add_argument(
                f"--rate-{scenario}",
                type=float,
                default=0.0,
                help=f"target {scenario} shares/s over all workers (0: closed loop)",
            )
    parser.add_argument(
        "--rate-view",
        type=float,
        default=0.0,
        help="target views/s per viewing scenario (0: closed loop)",
    )
    parser.add_argument(
        "--hdr-out",
        default="",
        help="directory for the merged HDR "
        "histograms at exit (render with `python -m loadtests report DIR`)",
    )


def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(MSG_SETUP, _on_setup)
        runner.register_message(MSG_SEGMENT, _on_segment)
        runner.register_message(MSG_END, _on_end, concurrent=True)
        runner.register_message(MSG_PAIR, _on_pair)


def _on_setup(environment: Environment, msg: Any, **_: Any) -> None:
    d = msg.data
    runner = environment.runner
    index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    if isinstance(runner, WorkerRunner):
        STATE.ask_pair = lambda scenario, ticket: runner.send_message(
            MSG_TAKE, {"scenario": scenario, "ticket": ticket}
        )
    STATE.setup(
        Setup(
            d["dm_url"],
            d["edge_url"],
            d.get("seed_file"),
            int(d["n_workers"]),
            index,
            d.get("scan_dm_url", ""),
            {str(s): int(n) for s, n in d.get("pools", {}).items()},
        ),
        driven=True,
    )


def _on_pair(environment: Environment, msg: Any, **_: Any) -> None:
    STATE.pair_answered(str(msg.data["ticket"]), int(msg.data["index"]))


def _on_segment(environment: Environment, msg: Any, **_: Any) -> None:
    d = msg.data
    STATE.start_segment(d["segment"], d["rates"], float(d["t0"]), duration_s=d.get("duration_s"))


def _on_end(environment: Environment, msg: Any, **_: Any) -> None:
    payload = STATE.end_segment(msg.data["segment"])
    assert environment.runner is not None
    environment.runner.send_message(MSG_DATA, payload)


#: A plain run's start and target rates (for the --hdr-out record), on any kind of runner.
_STANDALONE: dict[str, Any] = {}


def _standalone_start(environment: Environment, **_: Any) -> None:
    """A plain ``locust -f`` run: one open-ended segment configured from the command line."""
    opts = environment.parsed_options
    if STATE.driven or opts is None or not getattr(opts, "edge_url", ""):
        return
    rates = {
        s: float(getattr(opts, f"rate_{s.replace('-', '_')}", 0.0))
        for s in SCENARIOS
        if not s.startswith(VIEW_PREFIX)
    }
    rates.update({s: float(opts.rate_view) for s in SCENARIOS if s.startswith(VIEW_PREFIX)})
    _STANDALONE.update(t0=time.time() + 1.0, rates=rates)
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        return  # the workers run the flows; the master only merges
    workers = (
        max(1, int(getattr(opts, "expect_workers", 1) or 1)) if isinstance(runner, WorkerRunner) else 1
    )
    index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    STATE.setup(
        Setup(
            str(environment.host),
            opts.edge_url,
            opts.seed_file or None,
            workers,
            index,
            getattr(opts, "scan_dm_url", ""),
        ),
        driven=False,
    )
    closed = frozenset(s for s, r in rates.items() if r <= 0)
    STATE.start_segment("locust", rates, _STANDALONE["t0"], closed=closed)


_ENV: list[Environment] = []


def _keep_env(environment: Environment, **_: Any) -> None:
    _ENV[:] = [environment]


def _write_hdr(exit_code: int, **_: Any) -> None:
    """A plain run with ``--hdr-out``: write what was merged (and recorded here) for the report."""
    opts = _ENV[0].parsed_options if _ENV else None
    if opts is None or not getattr(opts, "hdr_out", "") or STATE.driven:
        return
    STATE.merger.add(STATE.recorder.drain())
    out = Path(opts.hdr_out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = _STANDALONE.get("t0")
    record: dict[str, Any] = {
        "segment": "locust",
        "kind": "locust",
        "mode": None,
        "round": 1,
        "rates": {s: r for s, r in _STANDALONE.get("rates", {}).items() if r > 0},
        "target_rps": None,
        "duration_s": time.time() - t0 if t0 else None,
        "started_at": t0,
        "processes": [],
        "data": STATE.merger.take("locust").to_json(),
    }
    (out / "segments.jsonl").write_text(json.dumps(record) + "\n")


# -- registration (Locust's hooks are untyped; one typed place to attach them) -------------


def _listen(hook: Any, fn: Callable[..., Any]) -> None:
    hook.add_listener(fn)


_listen(events.request, _record)
_listen(events.report_to_master, _ship)
_listen(events.worker_report, _merge)
_listen(events.cpu_warning, _cpu_warning)
_listen(events.init_command_line_parser, _arguments)
_listen(events.init, _on_init)
_listen(events.test_start, _standalone_start)
_listen(events.init, _keep_env)
_listen(events.quit, _write_hdr)
