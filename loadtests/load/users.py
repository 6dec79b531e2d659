"""The Locust users of the load test: one class per scenario, each claiming slots of its
scenario's open-model timetable and running one flow (share or view) per slot.

The event wiring (request hook, worker messages, command line) is in
:mod:`loadtests.load.locustfile`, the file Locust is pointed at.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from locust import FastHttpUser, constant, task
from locust.env import Environment

from cdn_auth import capability as cap_mod
from dm import envelope
from dm.capabilities import CapabilityWallet, DerivedGrant
from loadtests.load import push, seed
from loadtests.load.scenarios import (
    CRYPTO_REQUEST_TYPE,
    TOTAL,
    is_plain,
    key,
    video_ranges,
)
from loadtests.load.worker_state import STATE
from loadtests.report.recorder import LATE_MS

T = TypeVar("T")
DELIVERY_TIMEOUT_S = 10.0
#: Grants live 15 minutes at the edge by default: a viewer shares anew well before.
RESHARE_AFTER_S = 600.0
SHARE_TEXT = "look at this"


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
        self._crypto_steps: list[tuple[str, float, BaseException | None]] = []

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
            for phase, ms, failure in self._crypto_steps:  # after the total: see crypto()
                self._fire(CRYPTO_REQUEST_TYPE, phase, ms, failure)
        finally:  # also when the user is stopped mid-flow
            STATE.inflight -= 1
            self._ctx = {}
            self._crypto_steps = []

    def before_slot(self) -> None:
        """Housekeeping outside any measurement (viewers re-share before grants expire)."""

    def flow(self) -> None:
        raise NotImplementedError

    # -- recording helpers --------------------------------------------------------------
    def _fire(self, request_type: str, phase: str, ms: float, error: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=key(self.scenario, phase),
            response_time=ms,
            response_length=0,
            exception=error,
            context=dict(self._ctx),
        )

    def crypto(self, phase: str, fn: Callable[[], T]) -> T:
        """Time client-side crypto; it is recorded like a request once the flow's total is.

        Recording (Locust's event handlers, the HDR recorder) takes the generator's time for
        each entry.  Only sealed flows have crypto steps, so recording them inside the flow
        would add that bookkeeping to the sealed total and not to the plain one.
        """
        t0 = time.perf_counter()
        try:
            result = fn()
        except (envelope.EnvelopeError, ValueError, KeyError) as exc:
            self._crypto_steps.append((phase, (time.perf_counter() - t0) * 1000.0, exc))
            raise FlowFailed(f"{phase}: {exc}") from exc
        self._crypto_steps.append((phase, (time.perf_counter() - t0) * 1000.0, None))
        return result

    def call(
        self,
        method: str,
        url: str,
        phase: str,
        *,
        token: str,
        expect: tuple[int, ...],
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        length: int | None = None,
    ) -> Any:
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
            with self.client.request(
                method,
                url,
                name=key(self.scenario, phase),
                headers=h,
                json=json_body,
                catch_response=True,
            ) as r:
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
            self.call(
                "GET",
                url,
                "first_byte" if i == 0 else "segment",
                token=token,
                expect=(206,),
                headers=h,
                length=end - start + 1,
            )


class _ShareUser(_FlowUser):
    """Sender and recipient of one conversation: share, see it pushed, open it, play it."""

    abstract = True

    def on_start(self) -> None:
        self.pair = STATE.take_pair(self.scenario)
        t = STATE.targets
        self.devices: dict[str, list[dict[str, Any]]] = {}
        if not is_plain(self.scenario):
            self.devices = seed.devices_of(
                t, self.pair.sender, self.pair.recipient.user_id, self.pair.sender.user_id
            )
            self.recipient_key = self.pair.recipient.device_key()
            # The sender's device holds a share capability for its video, obtained once
            # (as at upload): each share then derives its grant here, with no round trip,
            # and as the SDK does, the next share's grant is derived while idle (a spare).
            self.wallet = CapabilityWallet()
            self._obtain_capability()
        self.watcher = push.watcher(t.dm_url, self.pair.recipient.token, self.pair.conversation_id)
        STATE.ready_users += 1

    def on_stop(self) -> None:
        if hasattr(self, "watcher"):
            self.watcher.close()

    def _obtain_capability(self) -> None:
        assert self.pair is not None
        p = self.pair
        self.wallet.hold(
            seed.call(
                "POST",
                f"{STATE.targets.edge_url}/v1/capabilities",
                token=p.sender.token,
                json_body={
                    "media_id": p.media_id,
                    "holder_key": self.wallet.public_key,
                    "max_redeemers": 1,
                    "max_grants": cap_mod.MAX_GRANTS,
                },
            )
        )

    def before_slot(self) -> None:
        """Outside any measurement: a capability near its end is replaced, and the next
        share's grant is derived ahead, as dm.client does after each sealed send."""
        if self.pair is None or not hasattr(self, "wallet"):
            return
        if self.wallet.held(self.pair.media_id) is None:
            self._obtain_capability()
        self.wallet.prepare(self.pair.media_id, redeemers=1)

    def _derive(self) -> DerivedGrant:
        assert self.pair is not None
        grant = self.wallet.derive(self.pair.media_id, redeemers=1)
        if grant is None:
            raise ValueError("no usable capability held")
        return grant

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
            sent = self.call(
                "POST",
                messages,
                "send",
                token=p.sender.token,
                expect=(201,),
                json_body={"media_id": p.media_id, "text": SHARE_TEXT},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            message = self._delivered(sent["id"], sent_at)
            self.play(message["media"]["url"], p.recipient.token, None)
            return
        g = self.crypto("grant", self._derive)  # on the device, from the held capability
        cmid = envelope.new_client_message_id()
        body = self.crypto(
            "seal",
            lambda: envelope.seal_body(
                p.conversation_id,
                p.sender.user_id,
                p.sender.device_id,
                cmid,
                envelope.new_payload(p.media_id, g.token, SHARE_TEXT),
                self.devices,
            ),
        )
        sent_at = time.perf_counter()
        sent = self.call("POST", messages, "send", token=p.sender.token, expect=(201,), json_body=body)
        message = self._delivered(sent["id"], sent_at)
        payload = self.crypto(
            "open",
            lambda: envelope.open_message(
                self.recipient_key, p.recipient.user_id, p.recipient.device_id, message
            ),
        )
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
        page = self.call(
            "GET",
            f"{t.dm_url}/v1/conversations/{p.conversation_id}/messages" + query,
            "read",
            token=p.recipient.token,
            expect=(200,),
        )
        if not page["messages"] or page["messages"][0]["id"] != p.message_id:
            raise FlowFailed("the shared message is not where it was sent")
        message = page["messages"][0]
        if is_plain(self.scenario):
            self.play(message["media"]["url"], p.recipient.token, None)
            return
        payload = self.crypto(
            "open",
            lambda: envelope.open_message(
                self.recipient_key, p.recipient.user_id, p.recipient.device_id, message
            ),
        )
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
    c.scenario: c
    for c in (
        PlainShare,
        PlainScanShare,
        SealedShare,
        SealedPqShare,
        VideoViewerPlain,
        VideoViewerPlainScan,
        VideoViewerSealed,
        VideoViewerSealedPq,
    )
}
