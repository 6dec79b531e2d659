"""Deadlines for reading request bodies: a slow sender cannot hold a connection for ever.

aiohttp has no body read timeout: a client sending one byte every few
seconds keeps its connection and its handler alive indefinitely (150 such
connections were all still held after 95 s).  A :class:`BodyDeadline` allows
a grace period plus time proportional to what has arrived at a floor rate,
so a large upload from a slow but honest link still completes while a
trickle is cut off: at any moment the body must have arrived at an average
of at least ``min_rate_bps`` after the first ``grace_s`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from .errors import BodyTimeout, ClientGone, UnreadableBody

T = TypeVar("T")


@dataclass(frozen=True)
class BodyDeadline:
    grace_s: float = 10.0
    min_rate_bps: int = 16 * 1024

    def start(self) -> BodyClock:
        return BodyClock(self, time.monotonic())


@dataclass
class BodyClock:
    """One body's reading: wrap each read in :meth:`read`, report its size in :meth:`got`."""

    deadline: BodyDeadline
    started: float
    received: int = 0

    def remaining_s(self) -> float:
        allowed = self.deadline.grace_s + self.received / self.deadline.min_rate_bps
        return allowed - (time.monotonic() - self.started)

    async def read(self, step: Awaitable[T]) -> T:
        """Await one read, failing with :class:`BodyTimeout` when the allowance runs out."""
        remaining = self.remaining_s()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                return await step
        except TimeoutError:
            raise BodyTimeout(
                f"body slower than {self.deadline.min_rate_bps} B/s after {self.deadline.grace_s} s"
            ) from None
        except ConnectionResetError:  # aiohttp's "Connection lost": the client left mid-body
            raise ClientGone("the client closed its connection mid-body") from None
        except web.RequestPayloadError as exc:  # a body aiohttp cannot decode (encoding, chunks)
            raise UnreadableBody(f"the request body could not be read: {exc}") from None

    def got(self, n: int) -> None:
        self.received += n


BODY_DEADLINE: web.AppKey[BodyDeadline] = web.AppKey("body_deadline", BodyDeadline)
DEFAULT = BodyDeadline()


def for_request(request: web.Request) -> BodyClock:
    return request.app.get(BODY_DEADLINE, DEFAULT).start()
