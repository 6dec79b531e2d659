"""A response that streams one byte window of a file with sendfile(2).

aiohttp's FileResponse derives its ETag from mtime and honours If-Range only
as a date; the edge needs a content-hash ETag identical on every edge, so
it plans the response itself (:mod:`cdn_auth.ranges`) and uses this class
only to move the bytes, never holding more than one chunk in memory.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

CHUNK = 256 * 1024


class ByteRangeResponse(web.StreamResponse):
    def __init__(self, *, fobj: IO[bytes], offset: int, count: int, status: int,
                 headers: dict[str, str]) -> None:
        super().__init__(status=status, headers=headers)
        self._fobj = fobj
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            writer = await super().prepare(request)
            if request.method == "HEAD" or self._count == 0:
                return writer
            assert writer is not None
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            loop = asyncio.get_running_loop()
            try:
                await loop.sendfile(transport, self._fobj, self._offset, self._count)
            except NotImplementedError:  # e.g. TLS transports
                await self._copy(writer, loop)
            await super().write_eof()
            return writer
        finally:
            self._fobj.close()

    async def _copy(self, writer: AbstractStreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        left, pos = self._count, self._offset
        while left > 0:
            chunk = await loop.run_in_executor(None, os.pread, self._fobj.fileno(),
                                               min(CHUNK, left), pos)
            if not chunk:
                raise ConnectionResetError("origin file shrank while streaming")
            await writer.write(chunk)
            left -= len(chunk)
            pos += len(chunk)


def open_origin(path: Path, expected_size: int) -> IO[bytes]:
    """Open an origin file and check it still has the registered size.

    Opened on the event loop: a metadata operation on a local origin
    directory costs microseconds, far less than a thread-pool hop.  Unbuffered
    (a bare ``FileIO``): the bytes go by sendfile(2) or ``os.pread`` on the
    descriptor, so a read buffer would only be allocated and thrown away.
    """
    fobj = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by ByteRangeResponse.prepare
    try:
        if os.fstat(fobj.fileno()).st_size != expected_size:
            raise OSError(f"origin size differs from the registry for {path.name}")
    except BaseException:
        fobj.close()
        raise
    return fobj


