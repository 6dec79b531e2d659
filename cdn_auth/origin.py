"""The local origin directory: where video bytes live, written and read as streams.

Nothing here reads a whole file into memory: uploads are hashed chunk by
chunk as they are written, and registered files are hashed the same way in
a worker thread.  Paths from clients are resolved and must stay inside the
origin directory (no ``..``, no symlink escapes).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .errors import InputTooLarge, InvalidField

CHUNK = 256 * 1024
MAX_ORIGIN_PATH_CHARS = 512


@dataclass(frozen=True, slots=True)
class StoredObject:
    relpath: str
    size: int
    sha256: str


class Origin:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Origin({str(self.root)!r})"

    def resolve(self, relpath: str) -> Path:
        """Map a client-supplied relative path to a file inside the root, or raise."""
        if not relpath or len(relpath) > MAX_ORIGIN_PATH_CHARS or "\x00" in relpath:
            raise InvalidField("origin_path is empty, too long or has NUL")
        candidate = (self.root / relpath).resolve()
        if not candidate.is_relative_to(self.root) or candidate == self.root:
            raise InvalidField("origin_path escapes the origin directory")
        return candidate

    async def describe(self, relpath: str) -> StoredObject:
        """Hash an existing file under the root (streamed, in a worker thread)."""
        path = self.resolve(relpath)
        if not path.is_file():
            raise InvalidField("origin_path is not a file under the origin directory")
        size, digest = await asyncio.to_thread(_hash_file, path)
        return StoredObject(str(path.relative_to(self.root)), size, digest)

    async def store(self, media_id: str, chunks: AsyncIterator[bytes],
                    max_bytes: int) -> StoredObject:
        """Write an upload to ``uploads/<id[-2:]>/<id>``, hashing as it goes; 413 past max_bytes."""
        rel = Path("uploads") / media_id[-2:] / media_id
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{media_id}.part")
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as fh:  # noqa: ASYNC230 - local disk, small chunks
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputTooLarge(f"upload larger than {max_bytes} bytes")
                    h.update(chunk)
                    fh.write(chunk)
            os.replace(tmp, final)
        except BaseException:
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


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
