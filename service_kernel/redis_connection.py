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
  the same way (``str``, ``bytes``, ``float``, and ``int`` within 64 bits: the test
  vectors in ``tests/vectors/resp_pack.json`` hold them byte for byte); anything else (a
  ``bool``, ``None``, a ``memoryview``, an ``int`` subclass, a longer ``int``, which
  hiredis 3.x crashes on past 4300 digits) goes to redis-py's packer, which encodes it
  or refuses it as it always did.
* **The write deadline.** With a socket timeout set, redis-py wraps every write in
  ``asyncio.wait_for``, which on Python 3.11 creates a task and a timer per command and
  costs the caller two extra event-loop hops, although the write almost never waits: it
  lands in the transport's buffer.  :meth:`LeanConnection.send_packed_command` writes,
  and waits (under the same deadline, with the same errors) only when the transport is
  over its high-water mark and would make ``drain()`` block.

A batch (:mod:`service_kernel.auto_pipeline`) reads its replies under one deadline for the
whole batch (:meth:`LeanConnection.batch_deadline`) instead of a timer per reply, pushed on
while replies come.  A reply hiredis reads in full but cannot decode (not UTF-8) fails its
own command and leaves the connection open (redis-py closes it): the replies behind it in a
batch belong to other callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from redis._parsers import _AsyncHiredisParser
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError, ResponseError
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
#: Ints hiredis packs: beyond Python's limit on int-to-text conversion (4300 digits) hiredis
#: 3.x crashes the process (red-team round 8), where redis-py raises ``ValueError``.  Ints
#: past 64 bits are no Redis number anyway: they keep redis-py's packer and its error.
_INT_RANGE = (-(1 << 63), 1 << 64)


def _hiredis_packs(args: tuple[Any, ...]) -> bool:
    """Whether hiredis packs every argument exactly as redis-py would (and safely)."""
    lo, hi = _INT_RANGE
    for a in args:
        t = type(a)
        if t is str or t is bytes or t is float:
            continue
        if t is not int or not lo <= a < hi:
            return False
    return type(args[0]) is not float and type(args[0]) is not int  # a command name


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
        self._deadline: asyncio.Timeout | None = None
        #: hiredis's reader consumes a reply before decoding it; redis-py's Python parsers
        #: are not relied on for that.
        self._in_step_after_decode_error = isinstance(self._parser, _AsyncHiredisParser)

    def pack_command(self, *args: Any) -> list[bytes]:
        pack = _pack
        if pack is not None and self._fast_pack and args and _hiredis_packs(args):
            first = args[0]
            # As redis-py does: a str command name is split on whitespace ("SCRIPT LOAD" is
            # two words), a bytes one only when it holds a space.
            if type(first) is str:
                args = (*first.encode().split(), *args[1:])
            elif b" " in first:
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
        try:
            reply = await super().read_response(
                disable_decoding, timeout, disconnect_on_error=False, push_request=push_request
            )
        except ResponseError:
            raise  # an error reply, read in full: the connection is in step (as redis-py)
        except UnicodeDecodeError:
            # hiredis consumed the reply before it failed to decode it: the connection is
            # still in step, so the error is this command's alone and the replies queued
            # behind it (a batch's) stay readable.  redis-py would close the connection.
            if not self._in_step_after_decode_error and disconnect_on_error:
                await self.disconnect(nowait=True)
            raise
        except BaseException:
            if disconnect_on_error:
                await self.disconnect(nowait=True)
            raise
        if self._deadline_held:
            self._extend_deadline()
        return reply

    def _extend_deadline(self) -> None:
        """A batch fails when no reply comes for (at least half) the socket timeout, not
        when all of them together take longer: a reply read pushes the deadline on once
        less than half of it is left (one timer for the batch, moved rarely)."""
        deadline, timeout = self._deadline, self.socket_timeout
        if deadline is None or not timeout:
            return
        now = asyncio.get_running_loop().time()
        when = deadline.when()
        if when is not None and when - now < timeout / 2:
            deadline.reschedule(now + timeout)

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
            async with asyncio.timeout(self.socket_timeout) as self._deadline:
                yield
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError(f"Timeout reading from {self._host_error()}") from None
        finally:
            self._deadline_held = False
            self._deadline = None
