"""Locust scenarios: share a video in a DM (plain, sealed X25519, sealed ML-KEM-768+X25519), view it.

Run by ``python -m loadtests run`` (which seeds, drives open-model trials
and step loads, and writes the report), or by hand against any deployment
whose dm service has the dev issuer on::

    locust -f loadtests/load/locustfile.py --host http://DM --edge-url http://EDGE \
        --rate-sealed 20 --hdr-out var/locust-hdr  SealedShare VideoViewerSealed

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
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from dm import envelope
from loadtests.load import push, seed
from loadtests.load.scenarios import (
    CRYPTO_REQUEST_TYPE,
    SCENARIOS,
    TOTAL,
    VIEW_PREFIX,
    is_plain,
    key,
    video_ranges,
)
from loadtests.load.worker_state import STATE, Setup
from loadtests.report.recorder import LATE_MS

T = TypeVar("T")
DELIVERY_TIMEOUT_S = 10.0
#: Grants live 15 minutes at the edge by default: a viewer shares anew well before.
RESHARE_AFTER_S = 600.0
SHARE_TEXT = "look at this"
#: Locust custom message types between the driver (master) and workers.
MSG_SETUP, MSG_SEGMENT, MSG_END, MSG_DATA = "lt_setup", "lt_segment", "lt_end", "lt_data"


#: Answers that ask the client to come back later (429/503 with Retry-After) are retried this
#: many times, waiting as asked up to MAX_RETRY_AFTER_S each time.
THROTTLED_RETRIES = 5
MAX_RETRY_AFTER_S = 5.0
THROTTLED_REQUEST_TYPE = "throttled"


def retry_after_s(value: str | None) -> float | None:
    """The wait a ``Retry-After`` header asks for (delta-seconds), capped; None if absent,
    unparsable or longer than the cap (then the answer counts as the failure it is)."""
    if value is None or not value.strip().isdigit():
        return None
    wait = float(value.strip())
    return wait if wait <= MAX_RETRY_AFTER_S else None


def _code(text: str | None) -> str:
    try:
        return str(json.loads(text or "")["error"]["code"])[:40]
    except (ValueError, KeyError, TypeError):
        return "retry_later"


class FlowFailed(Exception):
    """A phase failed; it is already recorded as a failure, the flow stops here."""


# -- the request hook and shipping ------------------------------------------------------------

def _record(name: str, response_time: float, exception: BaseException | None = None,
            context: dict[str, Any] | None = None, request_type: str = "", **_: Any) -> None:
    """Every request and crypto step of a flow (its context names the segment) -> HDR."""
    segment = (context or {}).get("lt_segment")
    if segment is None or request_type == THROTTLED_REQUEST_TYPE:
        return  # a throttled answer is neither the phase's latency nor a failure
    STATE.recorder.record(segment, name, float(response_time), ok=exception is None,
                          second=(context or {}).get("lt_second"))


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
    parser.add_argument("--seed-file", default="", help="pairs seeded by `python -m loadtests "
                        "seed`; without it each user creates its own users and video")
    for scenario in SCENARIOS:
        if not scenario.startswith(VIEW_PREFIX):
            parser.add_argument(f"--rate-{scenario}", type=float, default=0.0,
                                help=f"target {scenario} shares/s over all workers "
                                     "(0: closed loop)")
    parser.add_argument("--rate-view", type=float, default=0.0,
                        help="target views/s per viewing scenario (0: closed loop)")
    parser.add_argument("--hdr-out", default="", help="directory for the merged HDR "
                        "histograms at exit (render with `python -m loadtests report DIR`)")


def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(MSG_SETUP, _on_setup)
        runner.register_message(MSG_SEGMENT, _on_segment)
        runner.register_message(MSG_END, _on_end, concurrent=True)


def _on_setup(environment: Environment, msg: Any, **_: Any) -> None:
    d = msg.data
    runner = environment.runner
    index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    STATE.setup(Setup(d["dm_url"], d["edge_url"], d.get("seed_file"), int(d["n_workers"]),
                      index, d.get("scan_dm_url", "")), driven=True)


def _on_segment(environment: Environment, msg: Any, **_: Any) -> None:
    d = msg.data
    STATE.start_segment(d["segment"], d["rates"], float(d["t0"]),
                        duration_s=d.get("duration_s"))


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
    rates = {s: float(getattr(opts, f"rate_{s.replace('-', '_')}", 0.0)) for s in SCENARIOS
             if not s.startswith(VIEW_PREFIX)}
    rates.update({s: float(opts.rate_view) for s in SCENARIOS if s.startswith(VIEW_PREFIX)})
    _STANDALONE.update(t0=time.time() + 1.0, rates=rates)
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        return  # the workers run the flows; the master only merges
    workers = max(1, int(getattr(opts, "expect_workers", 1) or 1)) \
        if isinstance(runner, WorkerRunner) else 1
    index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    STATE.setup(Setup(str(environment.host), opts.edge_url, opts.seed_file or None, workers,
                      index), driven=False)
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
              "segment": "locust", "kind": "locust", "mode": None, "round": 1,
              "rates": {s: r for s, r in _STANDALONE.get("rates", {}).items() if r > 0},
              "target_rps": None, "duration_s": time.time() - t0 if t0 else None,
              "started_at": t0, "processes": [],
              "data": STATE.merger.take("locust").to_json()}
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


# -- the users ----------------------------------------------------------------------------------

class _FlowUser(FastHttpUser):
    """Claims slots of its scenario's timetable and runs one flow per slot."""

    abstract = True
    scenario = ""
    wait_time = constant(0)
    network_timeout = 10.0
    connection_timeout = 5.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._ctx: dict[str, Any] = {}
        self.pair: seed.Pair | None = None

    def context(self) -> dict[str, Any]:
        return self._ctx

    # -- timetable --------------------------------------------------------------------
    @task
    def next_flow(self) -> None:
        arrivals = STATE.arrivals[self.scenario]
        self.before_slot()
        slot = arrivals.claim(time.perf_counter())
        if slot is None:
            STATE.wait_change(self.scenario, 1.0)
            return
        while (left := slot.intended - time.perf_counter()) > 0:
            if not arrivals.is_current(slot):
                return
            STATE.wait_change(self.scenario, left)
        if not arrivals.is_current(slot):
            return
        started = time.perf_counter()
        self._ctx = {"lt_segment": slot.segment, "lt_second": int(max(0.0, slot.intended - slot.t0))}
        STATE.inflight += 1
        STATE.recorder.flow(slot.segment, self.scenario, "started")
        if (started - slot.intended) * 1000.0 > LATE_MS:
            STATE.recorder.flow(slot.segment, self.scenario, "late")
        error: BaseException | None = None
        try:
            try:
                self.flow()
            except Exception as exc:  # FlowFailed, or an answer the API does not promise
                error = exc
            self._fire("flow", TOTAL, (time.perf_counter() - slot.intended) * 1000.0, error)
            STATE.recorder.flow(slot.segment, self.scenario, "failed" if error else "completed")
        finally:  # also when the user is stopped mid-flow
            STATE.inflight -= 1
            self._ctx = {}

    def before_slot(self) -> None:
        """Housekeeping outside any measurement (viewers re-share before grants expire)."""

    def flow(self) -> None:
        raise NotImplementedError

    # -- recording helpers --------------------------------------------------------------
    def _fire(self, request_type: str, phase: str, ms: float, error: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=request_type, name=key(self.scenario, phase), response_time=ms,
            response_length=0, exception=error, context=dict(self._ctx))

    def crypto(self, phase: str, fn: Callable[[], T]) -> T:
        """Time client-side crypto and record it like a request."""
        t0 = time.perf_counter()
        try:
            result = fn()
        except (envelope.EnvelopeError, ValueError, KeyError) as exc:
            self._fire(CRYPTO_REQUEST_TYPE, phase, (time.perf_counter() - t0) * 1000.0, exc)
            raise FlowFailed(f"{phase}: {exc}") from exc
        self._fire(CRYPTO_REQUEST_TYPE, phase, (time.perf_counter() - t0) * 1000.0, None)
        return result

    def call(self, method: str, url: str, phase: str, *, token: str, expect: tuple[int, ...],
             json_body: Any = None, headers: dict[str, str] | None = None,
             length: int | None = None) -> Any:
        """One HTTP request of a flow; a wrong status (or body size) fails the phase.

        A ``429``/``503`` with ``Retry-After`` is honoured as the SDK does (wait, then send
        the same request again: sends carry an Idempotency-Key or a client message id, so a
        retry never sends twice) and reported as what it is, an entry of request type
        ``throttled`` named ``<scenario>:<phase>:<code>``, not as the phase's latency or a
        failure.  The flow's total includes the wait.
        """
        h = {"Authorization": f"Bearer {token}", **(headers or {})}
        for attempt in range(THROTTLED_RETRIES + 1):
            problem, wait_s = None, None
            with self.client.request(method, url, name=key(self.scenario, phase), headers=h,
                                     json=json_body, catch_response=True) as r:
                if r.status_code in (429, 503) and attempt < THROTTLED_RETRIES:
                    wait_s = retry_after_s(r.headers.get("Retry-After"))
                if wait_s is not None:
                    r.request_meta["request_type"] = THROTTLED_REQUEST_TYPE
                    r.request_meta["name"] = f"{key(self.scenario, phase)}:{_code(r.text)}"
                    r.success()
                elif r.status_code not in expect:
                    problem = f"{r.status_code} {(r.text or '')[:200]}"
                elif length is not None and len(r.content or b"") != length:
                    problem = f"{len(r.content or b'')} bytes, expected {length}"
                if problem:
                    r.failure(problem)
                elif wait_s is None:
                    r.success()
            if wait_s is None:
                break
            time.sleep(wait_s)  # gevent-patched: only this user waits
        if problem:
            raise FlowFailed(f"{phase}: {problem}")
        if length is not None:
            return None
        return json.loads(r.content) if r.content else None

    def play(self, url: str, token: str, grant: str | None) -> None:
        """Fetch as a player does: a first range (first byte), then the next segments."""
        for i, (start, end) in enumerate(video_ranges()):
            h = {"Range": f"bytes={start}-{end}"}
            if grant is not None:
                h["X-Grant"] = grant
            self.call("GET", url, "first_byte" if i == 0 else "segment", token=token,
                      expect=(206,), headers=h, length=end - start + 1)


class _ShareUser(_FlowUser):
    """Sender and recipient of one conversation: share, see it pushed, open it, play it."""

    abstract = True

    def on_start(self) -> None:
        self.pair = STATE.take_pair(self.scenario)
        t = STATE.targets
        self.devices: dict[str, list[dict[str, Any]]] = {}
        if not is_plain(self.scenario):
            self.devices = seed.devices_of(t, self.pair.sender, self.pair.recipient.user_id,
                                           self.pair.sender.user_id)
            self.recipient_key = self.pair.recipient.device_key()
        self.watcher = push.watcher(t.dm_url, self.pair.recipient.token,
                                    self.pair.conversation_id)
        STATE.ready_users += 1

    def on_stop(self) -> None:
        if hasattr(self, "watcher"):
            self.watcher.close()

    def _delivered(self, message_id: str, sent_at: float) -> dict[str, Any]:
        got = self.watcher.wait_for(message_id, DELIVERY_TIMEOUT_S)
        if got is None:
            err = TimeoutError(f"message {message_id} not pushed within {DELIVERY_TIMEOUT_S}s")
            self._fire("push", "delivery", (time.perf_counter() - sent_at) * 1000.0, err)
            raise FlowFailed(str(err))
        arrived, message = got
        self._fire("push", "delivery", (arrived - sent_at) * 1000.0, None)
        return message

    def flow(self) -> None:
        assert self.pair is not None
        p, t = self.pair, STATE.targets
        messages = f"{t.send_base(self.scenario)}/v1/conversations/{p.conversation_id}/messages"
        if is_plain(self.scenario):
            sent_at = time.perf_counter()
            sent = self.call("POST", messages, "send", token=p.sender.token, expect=(201,),
                             json_body={"media_id": p.media_id, "text": SHARE_TEXT},
                             headers={"Idempotency-Key": uuid.uuid4().hex})
            message = self._delivered(sent["id"], sent_at)
            self.play(message["media"]["url"], p.recipient.token, None)
            return
        g = self.call("POST", f"{t.edge_url}/v1/grants", "grant", token=p.sender.token,
                      expect=(200, 201), json_body={"media_id": p.media_id, "redeemers": 1})
        cmid = envelope.new_client_message_id()
        body = self.crypto("seal", lambda: envelope.seal_body(
            p.conversation_id, p.sender.user_id, p.sender.device_id, cmid,
            envelope.new_payload(p.media_id, g["grant"], SHARE_TEXT), self.devices))
        body["grant_id"] = g["grant_id"]
        sent_at = time.perf_counter()
        sent = self.call("POST", messages, "send", token=p.sender.token, expect=(201,),
                         json_body=body)
        message = self._delivered(sent["id"], sent_at)
        payload = self.crypto("open", lambda: envelope.open_message(
            self.recipient_key, p.recipient.user_id, p.recipient.device_id, message))
        if payload.media_id is None:
            raise FlowFailed("opened envelope carries no media")
        self.play(f"{t.edge_url}/m/{payload.media_id}", p.recipient.token, payload.grant)


class PlainShare(_ShareUser):
    scenario = "plain"


class PlainScanShare(_ShareUser):
    scenario = "plain+scan"


class SealedShare(_ShareUser):
    scenario = "sealed"


class SealedPqShare(_ShareUser):
    scenario = "sealed-pq"


class VideoViewer(_FlowUser):
    """Open a video already shared in the conversation (read, decrypt) and play it."""

    abstract = True

    def on_start(self) -> None:
        self.pair = STATE.take_pair(self.scenario)
        if not is_plain(self.scenario):
            self.recipient_key = self.pair.recipient.device_key()
        STATE.ready_users += 1

    def before_slot(self) -> None:
        if self.pair is not None and time.time() - self.pair.shared_at > RESHARE_AFTER_S:
            seed.share_once(STATE.targets, self.pair)

    def flow(self) -> None:
        assert self.pair is not None
        p, t = self.pair, STATE.targets
        query = "?limit=1" + (f"&after={p.read_after}" if p.read_after else "")
        page = self.call("GET", f"{t.dm_url}/v1/conversations/{p.conversation_id}/messages"
                         + query, "read", token=p.recipient.token, expect=(200,))
        if not page["messages"] or page["messages"][0]["id"] != p.message_id:
            raise FlowFailed("the shared message is not where it was sent")
        message = page["messages"][0]
        if is_plain(self.scenario):
            self.play(message["media"]["url"], p.recipient.token, None)
            return
        payload = self.crypto("open", lambda: envelope.open_message(
            self.recipient_key, p.recipient.user_id, p.recipient.device_id, message))
        self.play(f"{t.edge_url}/m/{payload.media_id}", p.recipient.token, payload.grant)


class VideoViewerPlain(VideoViewer):
    scenario = "view-plain"


class VideoViewerPlainScan(VideoViewer):
    scenario = "view-plain+scan"


class VideoViewerSealed(VideoViewer):
    scenario = "view-sealed"


class VideoViewerSealedPq(VideoViewer):
    scenario = "view-sealed-pq"


#: Scenario -> user class (the driver spawns these).
USER_CLASSES: dict[str, type[_FlowUser]] = {
    c.scenario: c for c in (PlainShare, PlainScanShare, SealedShare, SealedPqShare,
                            VideoViewerPlain, VideoViewerPlainScan, VideoViewerSealed,
                            VideoViewerSealedPq)}
