"""A response that streams one byte window of a file with sendfile(2).

aiohttp's FileResponse derives its ETag from mtime and honours If-Range only
as a date; the edge needs a content-hash ETag identical on every edge, so
it plans the response itself (:mod:`cdn_auth.ranges`) and uses this class
only to move the bytes, never holding more than one chunk in memory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

CHUNK = 256 * 1024


class ByteRangeResponse(web.StreamResponse):
    """Streams ``count`` bytes from ``offset`` in windows of ``window`` bytes.

    Between windows it asks ``still_allowed()`` (the edge re-checks the decision against
    its revocation view) and stops, dropping the connection, when the answer is no: an
    open response to revoked media ends within one window, not at the end of the file.
    Each window must be written within ``write_timeout_s`` or the connection is dropped
    (a client that stopped reading holds no handler and no descriptor for long).  The
    status line is already sent, so stopping is a truncated body (short of
    Content-Length), which every HTTP client reports as an error.
    """

    def __init__(
        self,
        *,
        fobj: IO[bytes],
        offset: int,
        count: int,
        status: int,
        headers: dict[str, str],
        still_allowed: Callable[[], bool] = lambda: True,
        window: int = 1024 * 1024,
        write_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._fobj = fobj
        self._offset = offset
        self._count = count
        self._still_allowed = still_allowed
        self._window = window
        self._write_timeout_s = write_timeout_s
        self.content_length = count
        #: Why the body stopped short ("revoked", "write_timeout"), or None.
        self.stopped: str | None = None

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
            pos, end = self._offset, self._offset + self._count
            while pos < end:
                if pos > self._offset and not self._still_allowed():
                    self.stopped = "revoked"
                    transport.abort()
                    return writer
                n = min(self._window, end - pos)
                try:
                    async with asyncio.timeout(self._write_timeout_s):
                        await self._send_window(transport, writer, loop, pos, n)
                except TimeoutError:
                    self.stopped = "write_timeout"
                    transport.abort()
                    return writer
                pos += n
            await super().write_eof()
            return writer
        finally:
            self._fobj.close()

    async def _send_window(
        self,
        transport: asyncio.BaseTransport,
        writer: AbstractStreamWriter,
        loop: asyncio.AbstractEventLoop,
        pos: int,
        count: int,
    ) -> None:
        try:
            await loop.sendfile(transport, self._fobj, pos, count)  # type: ignore[arg-type]
        except NotImplementedError:  # e.g. TLS transports
            await self._copy(writer, loop, pos, count)

    async def _copy(
        self, writer: AbstractStreamWriter, loop: asyncio.AbstractEventLoop, pos: int, left: int
    ) -> None:
        while left > 0:
            chunk = await loop.run_in_executor(
                None, os.pread, self._fobj.fileno(), min(CHUNK, left), pos
            )
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
