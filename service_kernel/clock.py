"""Time as an injectable dependency, so tests and verifiers can pin `now`."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float:
        """Seconds since the epoch, as a float."""
        ...


def system_clock() -> float:
    return time.time()
