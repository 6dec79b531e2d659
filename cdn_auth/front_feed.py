"""Feed this host's nginx front: what each decision depends on, every revocation, liveness.

The front (deploy/nginx/pointer_front.lua) caches "allow" decisions so a
player's repeat Range requests skip the authorizer.  To keep revocation
instant it must know, per cached decision, what it depends on, and, per
dependency, when it was last revoked.  Both sides name a dependency by the
same opaque key (a digest, so no id is spelled out in nginx's memory):

=========  ==========================  ===============================
kind       a decision depends on it    revoked by
=========  ==========================  ===============================
``m``      always (the media item)     ``takedown``
``u``      pointer: its message        ``unsent``
``l``      pointer: recipient's        ``left`` (leave or removal)
           membership
``g``      grant: the grant            ``grant_revoked``
``c``      derived grant: its          ``capability_revoked``
           capability, and the         (sources: also ``grant_revoked``,
           capabilities it re-shares   as ``g``)
``k``      pointer/grant: signing key  the key leaving verify.jwks.json
``s``      bearer session: the         the key leaving the session JWKS
           identity provider's key
``b``      media cookie: its user and  ``playback_ended`` (a sign-out)
           device
=========  ==========================  ===============================

Times are revocation-stream milliseconds: a decision records the stream
position its revocation view had reached (``through``); a revocation
stamped at or after it invalidates the decision.  A retired key is stamped
:data:`RETIRED` (later than any position).  Blocks publish no revocation by
design: they stop future sends, not fetch rights already given.

:class:`FrontFeed` pushes ``"<key> <ms>"`` lines and ``"alive <ms>"`` (how
long the revocation tail stays fresh) to the front's control listener.  It
sends liveness only when every revocation heard so far has been delivered,
so a front that misses a push stops trusting its cache when the last
liveness lapses: within the staleness bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp

from service_kernel.clock import Clock, system_clock

from .revocation import RevocationEvent

if TYPE_CHECKING:
    from .authorizer import Decision

log = logging.getLogger(__name__)

#: Later than any stream time: a decision signed by a retired key is never valid again.
RETIRED = 2**52
SECRET_HEADER = "X-Front-Secret"  # noqa: S105 - a header name, not a secret
#: Lines per push; the front refuses more than 10000 (pointer_front.lua, MAX_LINES).
MAX_PUSH_LINES = 4000


def dep(kind: str, *parts: str) -> str:
    """The opaque name both the edge and the front use for one dependency."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()[:15]
    return f"{kind}:{base64.urlsafe_b64encode(digest).decode()}"


def stream_ms(stream_id: str | None) -> int:
    """The millisecond part of a stream id (``"0"`` before the view has loaded)."""
    if not stream_id:
        return 0
    return int(stream_id.split("-", 1)[0])


def decision_deps(d: Decision) -> list[str]:
    """Everything whose revocation must end a cached copy of this decision."""
    deps = [dep("m", d.media.id)]
    if d.session.from_cookie:  # ended by its device's sign-out
        deps.append(dep("b", d.session.sub, d.session.dev))
    else:  # a bearer session: ended by its signing key's retirement
        deps.append(dep("s", d.session.kid))
    if d.pointer is not None:
        p = d.pointer
        deps += [
            dep("u", p.conversation_id, p.message_id),
            dep("l", p.conversation_id, p.sub),
            dep("k", p.kid),
        ]
    elif d.grant is not None:
        deps += [dep("g", d.grant.grant_id), dep("k", d.grant.kid)]
    if d.derived is not None:
        cap = d.derived.capability
        # A source is a grant id or a capability id: depend on it under both names.
        deps += [dep("c", cap.cap_id), *(dep(kind, s) for s in cap.sources for kind in "gc")]
    return deps


def event_deps(ev: RevocationEvent) -> list[str]:
    """The dependencies one revocation event revokes."""
    if ev.kind == "unsent":
        return [dep("u", ev.conversation_id, ev.message_id)]
    if ev.kind == "left":
        return [dep("l", ev.conversation_id, ev.user_id)]
    if ev.kind == "takedown":
        return [dep("m", ev.media_id)]
    if ev.kind == "capability_revoked":
        return [dep("c", ev.cap_id)]
    if ev.kind == "playback_ended":
        return [dep("b", ev.user_id, ev.device_id)]
    return [dep("g", ev.grant_id)]


def decision_max_age_s(d: Decision, now: float) -> int:
    """How long the front may reuse the decision: never past a credential's expiry."""
    expiries = [d.session.exp]
    if d.pointer is not None:
        expiries.append(d.pointer.exp)
    if d.grant is not None:
        expiries.append(d.grant.exp)
    return max(0, int(min(expiries) - now))


class FrontFeed:
    """Pushes revocations (at once) and liveness (every ``interval_s``) to the local front.

    ``fresh_for_s`` says how long the revocation tail stays within its staleness bound
    (0 or less: stale, send no liveness).  Pushes that fail are kept and retried; until one
    succeeds no liveness reaches the front.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        fresh_for_s: Callable[[], float],
        interval_s: float = 0.25,
        clock: Clock = system_clock,
        timeout_s: float = 1.0,
    ) -> None:
        self.url = url
        self._secret = secret
        self._fresh_for_s = fresh_for_s
        self._interval_s = interval_s
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pending: dict[str, int] = {}
        self._wake = asyncio.Event()
        self.pushes = 0
        self.failures = 0
        self.delivered_at = float("-inf")

    @property
    def queued(self) -> int:
        """Stamps not yet delivered to the front."""
        return len(self._pending)

    def on_revocation(self, ev: RevocationEvent) -> None:
        for key in event_deps(ev):
            self._stamp(key, ev.at_ms)

    def on_keys_retired(self, kids: list[str]) -> None:
        for kid in kids:
            self._stamp(dep("k", kid), RETIRED)

    def on_session_keys_retired(self, kids: list[str]) -> None:
        for kid in kids:
            self._stamp(dep("s", kid), RETIRED)

    def _stamp(self, key: str, at_ms: int) -> None:
        if at_ms > self._pending.get(key, -1):
            self._pending[key] = at_ms
        self._wake.set()

    def _take(self) -> dict[str, int]:
        """At most :data:`MAX_PUSH_LINES` pending stamps (a starting edge replays hours of
        revocations); the rest go in the next pushes, at once."""
        if len(self._pending) <= MAX_PUSH_LINES:
            batch, self._pending = self._pending, {}
            return batch
        keys = list(self._pending)[:MAX_PUSH_LINES]
        batch = {k: self._pending.pop(k) for k in keys}
        self._wake.set()
        return batch

    def body(self, batch: dict[str, int], *, last: bool = True) -> str:
        """The push: stamps, then liveness, but only in the push that empties the queue."""
        lines = [f"{k} {v}" for k, v in batch.items()]
        fresh_s = self._fresh_for_s()  # -inf until the tail has first loaded
        alive_ms = int(fresh_s * 1000) if math.isfinite(fresh_s) and last else 0
        if alive_ms > 0:
            lines.append(f"alive {alive_ms}")  # last: the front applies it after the rest
        return "\n".join(lines) + "\n"

    async def run(self) -> None:
        backoff = 0.05
        async with aiohttp.ClientSession(timeout=self._timeout) as http:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
                # that lands as the event fires, and this loop then never ends (a shutdown
                # that hung in CI).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._wake.wait()
                self._wake.clear()
                batch = self._take()
                try:
                    async with http.post(
                        self.url,
                        data=self.body(batch, last=not self._pending),
                        headers={SECRET_HEADER: self._secret},
                    ) as r:
                        if r.status != 204:
                            raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
                    self.pushes += 1
                    self.delivered_at = self._clock()
                    backoff = 0.05
                except Exception as exc:
                    # Any failure: this loop must come back (while it is down the front
                    # fails closed, which is safe but slow).
                    self.failures += 1
                    for key, at in batch.items():  # keep them; newer stamps win
                        if at > self._pending.get(key, -1):
                            self._pending[key] = at
                    log.warning("front push failed; retrying", extra={"err": type(exc).__name__})
                    await asyncio.sleep(backoff)
                    self._wake.set()  # retry the kept batch now, not at the next heartbeat
                    backoff = min(backoff * 2, 1.0)


@contextlib.asynccontextmanager
async def feeding(feed: FrontFeed) -> AsyncIterator[FrontFeed]:
    task = asyncio.create_task(feed.run(), name="front-feed")
    try:
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
