"""The local origin directory: where video bytes live, written and read as streams.

Nothing here reads a whole file into memory: uploads are hashed chunk by
chunk as they are written, and registered files are hashed the same way in
a worker thread.  Paths from clients (publishers' ``origin_path``) are
resolved inside the *ingest* root only, a subdirectory that never holds
uploads, and must stay there (no ``..``, no symlink escapes): a publisher
can register files a content pipeline put there, never another record's
upload.
A file system that refuses (permissions, a full disk, a read-only or missing mount)
raises :class:`~cdn_auth.errors.StorageUnavailable` (503), logged with the errno; errors
of the client's upload stream itself pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InputTooLarge, InvalidField, StorageUnavailable

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_ORIGIN_PATH_CHARS = 512
UPLOADS_DIR = "uploads"


@dataclass(frozen=True, slots=True)
class StoredObject:
    relpath: str
    size: int
    sha256: str


class Origin:
    def __init__(self, root: Path | str, ingest_subdir: str = "ingest") -> None:
        if ingest_subdir in ("", ".", "..", UPLOADS_DIR) or "/" in ingest_subdir:
            raise ValueError("the ingest root must be its own subdirectory, not uploads")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.ingest = self.root / ingest_subdir
        self.ingest.mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"Origin({str(self.root)!r})"

    def resolve(self, relpath: str) -> Path:
        """Map a publisher's ``origin_path`` (relative to the ingest root) to a file inside
        the ingest root, or raise.  Symlinks are resolved first, so a link in the ingest
        root pointing at an upload (or anywhere else) is refused too."""
        if not relpath or len(relpath) > MAX_ORIGIN_PATH_CHARS or "\x00" in relpath:
            raise InvalidField("origin_path is empty, too long or has NUL")
        try:
            candidate = (self.ingest / relpath).resolve()
        except (OSError, RuntimeError, ValueError):  # symlink loops, odd bytes
            raise InvalidField("origin_path does not resolve") from None
        ingest = self.ingest.resolve()
        if not candidate.is_relative_to(ingest) or candidate == ingest:
            raise InvalidField("origin_path escapes the ingest directory")
        return candidate

    async def describe(self, relpath: str) -> StoredObject:
        """Hash an existing file under the ingest root (streamed, in a worker thread)."""
        path = self.resolve(relpath)
        if not path.is_file():
            raise InvalidField("origin_path is not a file under the ingest directory")
        try:
            size, digest = await asyncio.to_thread(_hash_file, path)
        except OSError as exc:
            raise _storage_error("read", exc) from exc
        return StoredObject(str(path.relative_to(self.root)), size, digest)

    async def store(self, media_id: str, chunks: AsyncIterator[bytes],
                    max_bytes: int) -> StoredObject:
        """Write an upload to ``uploads/<id[-2:]>/<id>``, hashing as it goes; 413 past max_bytes."""
        rel = Path(UPLOADS_DIR) / media_id[-2:] / media_id
        final = self.root / rel
        tmp = final.with_name(f".{media_id}.part")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fh = open(tmp, "wb")  # noqa: ASYNC230, SIM115 - local disk; closed below
        except OSError as exc:
            raise _storage_error("create", exc) from exc
        h = hashlib.sha256()
        size = 0
        try:
            with fh:
                async for chunk in chunks:  # the client's errors pass through as they are
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputTooLarge(f"upload larger than {max_bytes} bytes")
                    h.update(chunk)
                    try:
                        fh.write(chunk)
                    except OSError as exc:
                        raise _storage_error("write", exc) from exc
                try:
                    fh.flush()
                except OSError as exc:
                    raise _storage_error("write", exc) from exc
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise _storage_error("rename", exc) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        return StoredObject(str(rel), size, h.hexdigest())

    def path_of(self, relpath: str) -> Path:
        """The file for a registry record's path.  Records were checked by :meth:`resolve` at
        registration; this lexical check (no syscalls: it is on the hot path) keeps a
        tampered record from naming a file outside the root."""
        if relpath.startswith("/") or ".." in Path(relpath).parts or "\x00" in relpath:
            raise OSError("origin path escapes the origin directory")
        return self.root / relpath


def _storage_error(op: str, exc: OSError) -> StorageUnavailable:
    """Log what the file system said (an operator must fix it) and answer 503."""
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    log.error("origin storage failed", extra={"op": op, "errno": name,
                                              "file": exc.filename or ""})
    return StorageUnavailable(f"origin {op} failed: {name}")


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
