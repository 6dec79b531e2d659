"""A value read from a file and read again when the file changes (key sets, key rings).

The holder stats the file at most every ``recheck_s`` (or at once, with :meth:`check`)
and parses it again only when its inode, mtime or size changed, so a key published by
rotation (written to a temporary file, renamed over the old one) is used without a
restart, and a flood of lookups costs at most a stat(2) each.  A reload that fails (the
file removed for a moment, half-written by a careless tool, corrupt) keeps the last good
value and says so in the log: a bad file must not take down a service that holds good
keys.  Only the first load raises: a service must not start without its keys.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .clock import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What identifies one version of a file: inode (a rename over it), mtime, size.
Stamp = tuple[int, int, int]


def stamp_of(path: Path) -> Stamp:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


class ReloadingFile(Generic[T]):
    """``value``: what ``load()`` made of the file ``path`` when it last changed.

    ``load`` reads the file itself (it may read others beside it: a key ring's
    ``ring.json`` names its key files), raising one of ``errors`` when it cannot;
    ``what`` names the file in the log.  ``on_change`` callbacks get each new value
    (not the first).  ``clock`` only paces the re-checks: any monotonic-enough seconds.
    """

    def __init__(
        self,
        path: Path | str,
        load: Callable[[], T],
        *,
        what: str,
        clock: Clock = time.monotonic,
        recheck_s: float = 1.0,
        errors: tuple[type[Exception], ...] = (OSError, ValueError),
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._load = load
        self._clock = clock
        self._recheck_s = recheck_s
        self._errors = errors
        self.on_change: list[Callable[[T], None]] = []
        self.checked_at = clock()
        try:
            self._stamp: Stamp | None = stamp_of(self.path)
        except FileNotFoundError:
            self._stamp = None  # load() says what is missing, in its own words
        self.value: T = load()  # the first load raises: no value to fall back on

    def __repr__(self) -> str:
        return f"ReloadingFile(path={str(self.path)!r}, what={self.what!r})"

    def current(self) -> T:
        """The value, after re-checking the file if ``recheck_s`` has passed since the last
        check."""
        if self._clock() - self.checked_at >= self._recheck_s:
            self.check()
        return self.value

    def check(self) -> bool:
        """Stat the file now and reload it if it changed.  False when it could not be read
        (the last good value stays); True when the value is the file's current one."""
        self.checked_at = self._clock()
        try:
            stamp = stamp_of(self.path)
            if stamp == self._stamp:
                return True
            value = self._load()
        except self._errors as exc:
            # Loudly: the service keeps working on keys that may soon be retired.
            log.error(
                "%s unreadable; keeping the previous keys",
                self.what,
                extra={"path": str(self.path), "err": str(exc)[:200]},
            )
            return False
        self._stamp = stamp
        self.value = value
        for cb in self.on_change:
            cb(value)
        return True
