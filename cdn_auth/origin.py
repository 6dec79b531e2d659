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
import stat
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from service_kernel.errors import InputTooLarge, InvalidField

from .errors import StorageUnavailable

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_ORIGIN_PATH_CHARS = 512
UPLOADS_DIR = "uploads"
#: Where registered ingest files are copied to, content-addressed: server-owned, like uploads.
CATALOG_DIR = "catalog"


@dataclass(frozen=True, slots=True)
class StoredObject:
    relpath: str
    size: int
    sha256: str


class Origin:
    def __init__(self, root: Path | str, ingest_subdir: str = "ingest") -> None:
        if ingest_subdir in ("", ".", "..", UPLOADS_DIR, CATALOG_DIR) or "/" in ingest_subdir:
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
        """Import a file from the ingest root: copy it, hashing as it goes, into server-owned,
        content-addressed storage (``catalog/<sha[:2]>/<sha>``) and register *that* copy.

        The ingest root is a drop box others write to, so nothing there is served: a hard
        link to an upload (which no path check can tell from a file), or a file swapped for a
        symlink after registration, would otherwise make a public record serve another
        record's private bytes.  The file is opened without following a final symlink and
        must be a regular file with a single name (``st_nlink == 1``: a hard link to an
        upload is refused, not copied); identical content shares one stored copy.
        """
        path = self.resolve(relpath)
        try:
            size, digest = await asyncio.to_thread(self._import, path)
        except FileNotFoundError:
            raise InvalidField("origin_path is not a file under the ingest directory") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR, errno.EMLINK):
                raise InvalidField("origin_path is not a regular file with one name") from None
            raise _storage_error("read", exc) from exc
        return StoredObject(f"{CATALOG_DIR}/{digest[:2]}/{digest}", size, digest)

    def _import(self, path: Path) -> tuple[int, str]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, "rb", buffering=0) as src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EISDIR, "not a regular file")
            if st.st_nlink != 1:
                # A second name of another file (an upload, say): refused, not copied.
                raise OSError(errno.EMLINK, "the ingest file has other hard links")
            catalog = self.root / CATALOG_DIR
            catalog.mkdir(exist_ok=True)
            fd_tmp, tmp = tempfile.mkstemp(dir=catalog, prefix=".import.")
            try:
                os.fchmod(fd_tmp, 0o644)  # readable by a front (nginx) as uploads are
                h, size = hashlib.sha256(), 0
                with open(fd_tmp, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
                digest = h.hexdigest()
                final = catalog / digest[:2] / digest
                final.parent.mkdir(exist_ok=True)
                if final.exists() and final.stat().st_size == size:
                    os.unlink(tmp)  # the same content is stored already
                else:
                    os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return size, digest

    async def store(self, media_id: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredObject:
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
    log.error("origin storage failed", extra={"op": op, "errno": name, "file": exc.filename or ""})
    return StorageUnavailable(f"origin {op} failed: {name}")
