"""Small file helpers: atomic writes with an explicit mode (keys, JWKS, reports)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def _written_copy(path: Path, data: bytes, mode: int) -> Iterator[str]:
    """A temporary file beside ``path`` holding ``data`` (mode set, flushed to disk),
    removed on leaving unless it was renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write a file so readers see the old or the new content, never a torn one."""
    with _written_copy(path, data, mode) as tmp:
        os.replace(tmp, path)


def create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Publish ``data`` at ``path`` whole, unless a file is already there: True if this
    call created it.  For keys that several processes create on first start (two dm
    processes sharing a key directory): with a check-then-write, both saw no file, each
    wrote its own key and kept it in memory, and each refused what the other signed.  The
    loser of this race reads the winner's file instead."""
    with _written_copy(path, data, mode) as tmp:
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: never an overwrite
        except FileExistsError:
            return False
        return True


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock(2)`` on ``path`` (created mode 0600 if missing) for the block:
    processes of one host that create the same files on first start take turns, so none
    of them ever publishes a partial or a losing version, even briefly."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """A random secret kept in ``path`` (created mode 0600); refuses a file others can read.
    Processes that start together on an empty directory all end with the same secret."""
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        create_exclusive(path, secrets.token_bytes(nbytes), 0o600)
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others; chmod 600 it")
    data = path.read_bytes()
    if len(data) != nbytes:
        raise ValueError(f"{path} does not hold a {nbytes}-byte secret")
    return data


def read_json_list(path: Path, key: str) -> list[object]:
    """The list under ``key`` in the JSON object in ``path`` (bank manifests, scan lists);
    ``ValueError`` naming the file for anything unreadable or of the wrong shape."""
    import json

    try:
        doc = json.loads(path.read_text())
        entries = doc[key]
        if not isinstance(entries, list):
            raise TypeError(f"{key} must be a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return entries
