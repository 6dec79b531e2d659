"""Requests made on demand and handed out so that none is ever sent twice.

A run gets a slice of unused requests (request lines, or targets carrying a fresh
pointer); afterwards only the ones the generator actually sent are retired, so the unsent
tail is still fresh (cold) for the next run.  With ``once=False`` the pool is one request,
repeated (the warm paths).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Pool:
    label: str
    make: Callable[[int], str]  # request number -> request
    log: Callable[[str], None]  # the owning benchmark's progress line
    once: bool = True
    items: list[str] = field(default_factory=list)
    used: int = 0

    def reserve(self, count: int) -> list[str]:
        if not self.once:
            if not self.items:
                self.items.append(self.make(0))
            return self.items[:1]
        short = self.used + count - len(self.items)
        if short > 0:
            started = time.perf_counter()
            base = len(self.items)
            self.items += [self.make(base + i) for i in range(short)]
            self.log(f"prepared {short} {self.label} requests in {time.perf_counter() - started:.1f}s")
        return self.items[self.used : self.used + count]

    def retire(self, sent: int) -> None:
        if self.once:
            self.used = min(self.used + sent, len(self.items))
