"""A value read from a file and read again when the file changes (key sets, key rings).

The holder stats the file at most every ``recheck_s`` (or at once, with :meth:`check`)
and parses it again only when its inode, mtime or size changed, so a key published by
rotation (written to a temporary file, renamed over the old one) is used without a
restart, and a flood of lookups costs at most a stat(2) each.  A reload that fails (the
file removed for a moment, half-written by a careless tool, corrupt, or valid JSON of the
wrong shape: whatever the loader raises) keeps the last good value and says so in the log,
once per bad version of the file: its stamp is remembered, so the same bad file is read
again only for a short while (a tool writing in place may finish within the same mtime tick:
:data:`SETTLE_S`), paced, and quietly, and then not until it changes (an attacker's flood of
unknown kids cannot turn an operator's slip into a parse and an ERROR per request).  A bad
file must not take down a service that holds good keys.  Only the first load raises: a
service must not start without its keys.
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

#: A version that failed to load is read again, at most every :data:`RETRY_S`, for this long
#: after the failure: a tool that rewrites a file in place may finish it within the same
#: (coarse) mtime tick and at the same size, so its finished version has the torn one's
#: stamp.  After that the version is settled: not read again until its stamp changes.
SETTLE_S = 2.0
RETRY_S = 0.25

#: What identifies one version of a file: inode (a rename over it), mtime, size.
Stamp = tuple[int, int, int]
#: The stamp of a file that cannot be stat'ed (removed, unreadable directory).
UNSTATTABLE: Stamp = (-1, -1, -1)


def stamp_of(path: Path) -> Stamp:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


class ReloadingFile(Generic[T]):
    """``value``: what ``load()`` made of the file ``path`` when it last changed.

    ``load`` reads the file itself (it may read others beside it: a key ring's
    ``ring.json`` names its key files), raising when it cannot (any exception: a reload
    never lets one escape); ``what`` names the file in the log.  ``on_change`` callbacks
    get each new value (not the first).  ``clock`` only paces the re-checks: any
    monotonic-enough seconds.
    """

    def __init__(
        self,
        path: Path | str,
        load: Callable[[], T],
        *,
        what: str,
        clock: Clock = time.monotonic,
        recheck_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._load = load
        self._clock = clock
        self._recheck_s = recheck_s
        self.on_change: list[Callable[[T], None]] = []
        self.checked_at = clock()
        try:
            self._stamp: Stamp | None = stamp_of(self.path)
        except FileNotFoundError:
            self._stamp = None  # load() says what is missing, in its own words
        #: The stamp of the last version that failed to load: read again only while it may
        #: still be being written (:data:`SETTLE_S`), then not until it changes.
        self.failed_stamp: Stamp | None = None
        self._failed_at = self._failed_read_at = float("-inf")
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
        (the last good value stays); True when the value is the file's current one.

        Never raises: whatever goes wrong in a reload (an ``AttributeError`` from JSON of
        the wrong shape included) is logged once per version of the file, and callers such
        as a stream tail's tick must not die of a bad key file."""
        self.checked_at = self._clock()
        try:
            stamp = stamp_of(self.path)
        except OSError:
            stamp = UNSTATTABLE
        if stamp == self._stamp:
            return True
        now = self.checked_at
        again = stamp == self.failed_stamp
        if again and (now - self._failed_at >= SETTLE_S or now - self._failed_read_at < RETRY_S):
            return False  # this bad version was read and logged already
        try:
            if stamp == UNSTATTABLE:
                stamp_of(self.path)  # raises again, with the reason for the log
            value = self._load()
        except Exception as exc:  # the boundary: a bad file keeps the last keys
            self._failed_read_at = now
            if again:
                return False  # logged already
            self.failed_stamp, self._failed_at = stamp, now
            # Loudly: the service keeps working on keys that may soon be retired.
            log.error(
                "%s unreadable; keeping the previous keys",
                self.what,
                extra={"path": str(self.path), "err": f"{type(exc).__name__}: {exc}"[:200]},
            )
            return False
        self.failed_stamp = None
        self._stamp = stamp
        self.value = value
        for cb in self.on_change:
            try:
                cb(value)
            except Exception:
                # A listener's bug must not undo the reload nor reach the caller's loop.
                log.exception("%s reloaded; a change listener failed", self.what)
        return True
