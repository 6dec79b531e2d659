"""Open-model load: flows start on a fixed timetable, not when the previous one finished.

Locust's users are a closed model: a user starts its next request when the
last one returned, so a slow server is asked less often and its slowness
hides (coordinated omission).  Here a scenario has a target arrival rate;
flow ``k`` is *intended* to start at ``t0 + offset + k / rate``.  A pool of
users claims slots in order; a user that is free sleeps until its slot,
and a user that is late starts at once.  Every flow's total latency is
measured from the intended start, so time spent waiting for a free user
(the generator falling behind because the server is slow) is counted, as
a real client arriving on schedule would experience it.

In distributed mode each worker runs its own timetable at ``rate / N``,
shifted by ``index / rate`` so the merged arrivals stay evenly spaced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    generation: int
    index: int
    #: ``time.perf_counter()`` value at which the flow should start.
    intended: float
    segment: str
    #: The timetable's start (``perf_counter``), to place the flow on the timeline.
    t0: float


class Arrivals:
    """One scenario's timetable in one process; reconfigured for every segment."""

    def __init__(self) -> None:
        self.generation = 0
        self.segment: str | None = None
        self.rate = 0.0
        self.closed = False
        self._t0 = 0.0
        self._offset = 0.0
        self._next = 0
        self._until: float | None = None

    def configure(
        self,
        segment: str,
        rate_per_s: float,
        t0: float,
        offset_s: float = 0.0,
        *,
        closed: bool = False,
        until: float | None = None,
    ) -> None:
        """Start a new timetable; slots claimed under the previous one become stale.

        ``closed``: no timetable, each user starts its next flow at once (Locust's
        usual closed model, for runs without a target rate).  ``until``: no slot is
        intended at or after this time, so a segment offers exactly its rate x duration.
        """
        if not closed and (rate_per_s < 0 or not math.isfinite(rate_per_s)):
            raise ValueError("rate must be a finite number >= 0")
        self.generation += 1
        self.segment = segment
        self.rate = rate_per_s
        self.closed = closed
        self._t0 = t0
        self._offset = offset_s
        self._next = 0
        self._until = until

    def stop(self) -> None:
        """No more flows (in-flight ones finish); waiting users see their slot went stale."""
        self.generation += 1
        self.rate = 0.0
        self.closed = False

    @property
    def active(self) -> bool:
        return self.segment is not None and (self.closed or self.rate > 0)

    def claim(self, now: float) -> Slot | None:
        """The next slot, or ``None`` while the scenario is idle."""
        if not self.active or self.segment is None:
            return None
        k = self._next
        intended = now if self.closed else self._t0 + self._offset + k / self.rate
        if self._until is not None and intended >= self._until:
            return None
        self._next += 1
        return Slot(self.generation, k, intended, self.segment, self._t0)

    def is_current(self, slot: Slot) -> bool:
        return slot.generation == self.generation
