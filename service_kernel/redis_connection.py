"""The services' Redis connection: redis-py's, with its per-command costs cut where that
changes nothing a caller can see.

At one request in flight a lone command cost the dm about 125 us of its own CPU on the
development machine against about 55 us for the same round trip on a bare asyncio
protocol with hiredis (``bench redis-batching`` prints both).  Two of the differences
are redis-py's bookkeeping, not the protocol:

* **Packing.** redis-py packs a command in Python, argument by argument, although
  hiredis (installed with it, and already its reply parser) packs in C.  redis-py uses
  hiredis's packer for its blocking client only.  :meth:`LeanConnection.pack_command`
  uses it for the asyncio one, for arguments of exactly the types both packers encode
  the same way (``str``, ``bytes``, ``int``, ``float``: the test vectors in
  ``tests/vectors/resp_pack.json`` hold them byte for byte); anything else (a ``bool``,
  ``None``, a ``memoryview``, an ``int`` subclass) goes to redis-py's packer, which
  encodes it or refuses it as it always did.
* **The write deadline.** With a socket timeout set, redis-py wraps every write in
  ``asyncio.wait_for``, which on Python 3.11 creates a task and a timer per command and
  costs the caller two extra event-loop hops, although the write almost never waits: it
  lands in the transport's buffer.  :meth:`LeanConnection.send_packed_command` writes,
  and waits (under the same deadline, with the same errors) only when the transport is
  over its high-water mark and would make ``drain()`` block.

A batch (:mod:`service_kernel.auto_pipeline`) reads its replies under one deadline for the
whole batch (:meth:`LeanConnection.batch_deadline`) instead of a timer per reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    import hiredis

    _pack = hiredis.pack_command
except (ImportError, AttributeError):  # hiredis missing, or older than 2.0
    _pack = None

#: Argument types hiredis and redis-py pack to the same bytes (exact types: a ``bool`` is
#: an ``int`` that redis-py refuses, an ``IntEnum`` one that it packs by its repr).
_SAME_BYTES = frozenset({str, bytes, int, float})


class LeanConnection(Connection):
    """redis-py's TCP connection with C packing and a write that does not spawn a task."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        enc = self.encoder
        # hiredis encodes str as strict UTF-8; any other encoding keeps redis-py's packer.
        self._fast_pack = (
            _pack is not None
            and enc.encoding.lower().replace("-", "") == "utf8"
            and enc.encoding_errors == "strict"
        )
        #: Set while a batch reads its replies under one deadline (:meth:`batch_deadline`).
        self._deadline_held = False

    def pack_command(self, *args: Any) -> list[bytes]:
        pack = _pack
        if pack is not None and self._fast_pack and args and all(type(a) in _SAME_BYTES for a in args):
            first = args[0]
            # As redis-py does: a command name with spaces ("SCRIPT LOAD") is several words.
            if type(first) is str and " " in first:
                args = (*first.encode().split(), *args[1:])
            elif type(first) is bytes and b" " in first:
                args = (*first.split(), *args[1:])
            return [pack(args)]
        return super().pack_command(*args)

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        if not self._fast_pack:
            return super().pack_commands(commands)
        return [b"".join(chunk for cmd in commands for chunk in self.pack_command(*cmd))]

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        if (
            not timeout
            or not self.is_connected
            or (  # a health-check PING is due: redis-py sends it first
                check_health
                and self.health_check_interval
                and asyncio.get_running_loop().time() > self.next_health_check
            )
        ):
            await super().send_packed_command(command, check_health)
            return
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer = self._writer
        assert writer is not None  # is_connected
        transport = writer.transport
        try:
            writer.writelines(command)
            if (
                transport.is_closing()
                or transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]
            ):
                # drain() would wait (or report the broken connection): under the deadline.
                async with asyncio.timeout(timeout):
                    await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            raise ConnectionError(f"Error while writing to socket. {e}.") from e
        except BaseException:
            await self.disconnect(nowait=True)  # half a command may be on the wire
            raise

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (redis-py's signature)
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        if timeout is None and self._deadline_held:
            timeout = math.inf  # the batch's one deadline covers this read
        return await super().read_response(
            disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
        )

    @contextlib.asynccontextmanager
    async def batch_deadline(self) -> AsyncIterator[None]:
        """Reads in this block share one deadline (the socket timeout) instead of a timer
        each.  When it passes, the read in progress is cancelled, the connection closed
        (redis-py closes it on any interrupted read) and redis-py's ``TimeoutError``
        raised, as a single read's timeout raises it."""
        if not self.socket_timeout:
            yield
            return
        self._deadline_held = True
        try:
            async with asyncio.timeout(self.socket_timeout):
                yield
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError(f"Timeout reading from {self._host_error()}") from None
        finally:
            self._deadline_held = False
