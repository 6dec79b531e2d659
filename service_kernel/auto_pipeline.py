"""Auto-pipelining: the commands that concurrent requests issue in one event-loop iteration
go to Redis as one pipeline.

Under load a service has many requests in flight, each awaiting its own short Redis
command on its own pooled connection: one ``send()``, one wake-up and one ``recv()`` per
command, plus redis-py's per-command bookkeeping (pool checkout, timeouts, events).  On
the development machine that was about 250 us of client CPU per command at 64 requests
in flight, most of a send's cost (``bench dm`` prints the floor).  Queued for the end of
the current loop iteration and sent together, the same commands cost about a quarter of
that, and nothing waits longer than the iteration it was issued in.  While nothing is in
flight a command is sent at once, alone: batching starts only when commands overlap, so
an idle service keeps a lone command's latency (ioredis calls this
``enableAutoPipelining``; redis-py has no equivalent).

Semantics are those of separate commands: each caller gets its own reply or its own
error, handed over as soon as its replies are read (a NOSCRIPT reaches the script object,
which loads the script and calls again; one caller's argument that cannot be encoded fails
that caller alone).  A batch is retried once, as redis-py retries a lone command, only
after a broken connection before any reply came back (a pooled connection the server had
dropped); never after a timeout or once replies were read, since the commands still
unanswered may have run and other callers' commands must not run twice (red-team round 6:
redis-py's own pipeline retry did exactly that).  Commands from one caller are sequential
anyway (it awaits each); commands from different callers had no order between them before
either.  Redis flushes a pipeline's replies at the end of its own event-loop iteration, so
a command batched with a slow one gets its reply after the slow one (a lone command could
be luckier).

A caller's own non-transactional pipeline joins the batch too (its commands kept together
and in order): a pipeline of three commands used to cost a round trip of its own (a
blocking command in such a pipeline would hold up the whole batch: none of the services'
pipelines holds one).  Of lone commands only those in :data:`BATCHED` are queued;
everything else (blocking reads such as the
stream tails' ``XREAD BLOCK``, administrative commands, ``SCRIPT LOAD``) goes straight
through.  Single-server clients only: after one node's connection error, redis-py's
Cluster pipeline closes the client, waits 0.25 s and runs again every command whose reply
was empty or an error, including commands that other nodes had already executed (see
:func:`service_kernel.redis_client.connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError, ResponseError

#: Short, non-blocking commands of the services' request paths.  Anything else is sent alone.
BATCHED = frozenset(
    {
        "EVALSHA",
        "EXISTS",
        "EXPIRE",
        "GET",
        "HEXISTS",
        "HGET",
        "HGETALL",
        "HSET",
        "SADD",
        "SET",
        "SISMEMBER",
        "SMEMBERS",
        "XRANGE",
        "ZRANGE",
    }
)
#: A queued command: its arguments and redis-py's options for parsing its reply.
_Command = tuple[tuple[Any, ...], Mapping[str, Any]]
#: Commands that must stay together and in order (one caller's pipeline, or a lone command),
#: and the future of their replies (each a value or an error).
_Entry = tuple[list[_Command], "asyncio.Future[list[Any]]"]
#: Most commands in one pipeline; more in the same iteration start another (on its own
#: connection), so one huge burst does not become one huge reply to parse.  An entry is
#: never split.
MAX_BATCH = 256
#: Connections a client keeps between batches instead of returning them to the pool: as
#: many as batches usually overlap (one being read while the next is sent).
HELD_CONNECTIONS = 4


class AutoPipelinedRedis(Redis):
    """A single-server client whose :data:`BATCHED` commands, and whose non-transactional
    pipelines, are auto-pipelined."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: list[_Entry] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()  # strong references while they run
        #: Lone commands and batches in flight.
        self._busy = 0
        #: Connections kept checked out between batches.  At most HELD_CONNECTIONS, and
        #: none from a small pool: held connections count as in use there, and a pool of a
        #: few would have none left for a transaction or a blocking read.
        self._held: list[Any] = []
        pool_size = getattr(self.connection_pool, "max_connections", 0) or 0
        self._held_cap = min(HELD_CONNECTIONS, pool_size // 8)
        self._closing = False
        #: Batches sent and commands in them (tests and curiosity read these).
        self.batches = 0
        self.batched_commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0] if args else ""
        if not isinstance(name, str) or name.upper() not in BATCHED:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if not self._busy:
            # Nothing in flight: send it now, alone, from the caller's own task (no wait for
            # the end of the iteration, no task started), on a connection this client holds:
            # an idle service keeps a lone command's latency, and batching starts only once
            # commands overlap ("smart batching").  Not through redis-py's execute_command:
            # its pool checkout and release, retry wrapper and per-read timer were about a
            # third of a lone command's CPU (docs/benchmarks.md, section 5).
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            await self._send([([(args, options)], future)])
            (reply,) = future.result()
        else:
            (reply,) = await self.enqueue([(args, options)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        """A pipeline whose non-transactional ``execute`` joins the shared batch: a caller's
        own pipeline of a few commands used to cost a connection checkout and a round trip
        of its own (the send's announce was the dm's most expensive line)."""
        return SharedPipeline(self, transaction, shard_hint)

    def enqueue(self, commands: list[_Command]) -> asyncio.Future[list[Any]]:
        """Queue ``commands`` (kept together, in order) for this iteration's batch; the
        future gets one reply or error per command."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queued.append((commands, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queued = self._queued, []
        batch: list[_Entry] = []
        size = 0
        for entry in queued:
            if batch and size + len(entry[0]) > MAX_BATCH:
                self._spawn(batch)
                batch, size = [], 0
            batch.append(entry)
            size += len(entry[0])
        if batch:
            self._spawn(batch)

    def _spawn(self, batch: list[_Entry]) -> None:
        self.batches += 1
        self.batched_commands += sum(len(cmds) for cmds, _ in batch)
        task = asyncio.ensure_future(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)
        # A task cancelled before it ever ran (a shutdown) must not strand its callers.
        task.add_done_callback(lambda _: [future.cancel() for _, future in batch])

    async def _send(self, batch: list[_Entry]) -> None:
        """Send the batch's commands on one connection and hand each caller its replies as
        they are read.  Retried once, as a lone command is, only after a broken connection
        before any reply came back (a pooled connection the server had dropped); never
        after a timeout or a reply: the commands still unanswered may have run, and sending
        them again could run other callers' commands twice.  Their callers get the error
        (a 503), as a lone command's caller would."""
        live = [entry for entry in batch if not entry[1].done()]  # a cancelled caller's is skipped
        if not live:
            return
        self._busy += 1
        try:
            for attempt in (1, 2):
                live = [entry for entry in live if not entry[1].done()]
                read_any, failure = await self._send_once(live)
                if failure is None:
                    return
                if attempt == 2 or read_any or not isinstance(failure, ConnectionError):
                    for _, future in live:
                        if not future.done():
                            future.set_exception(_own_copy(failure))
                    return
        finally:
            self._busy -= 1

    async def _send_once(self, live: list[_Entry]) -> tuple[bool, Exception | None]:
        """One attempt: (whether any reply was read, the error that ended it or None)."""
        read_any = False
        try:
            conn = await self._checkout()
        except Exception as exc:  # no connection to be had
            return read_any, exc
        kept = False
        try:
            pending, packed = _pack(conn, live)
            if not pending:
                kept = True
                return read_any, None
            # One deadline for the whole batch, not a timer per reply (LeanConnection).
            deadline = getattr(conn, "batch_deadline", None)
            async with deadline() if deadline is not None else contextlib.nullcontext():
                await conn.send_packed_command(packed)
                for cmds, future in pending:
                    replies = []
                    for args, options in cmds:
                        try:
                            replies.append(await self.parse_response(conn, args[0], **options))
                        except ResponseError as exc:  # this command's own error reply
                            replies.append(exc)
                        except Exception as exc:
                            if not conn.is_connected:
                                raise  # the connection broke: the batch's error
                            # Read in full and in step, then refused: a reply callback's
                            # error, a reply that is not UTF-8.  This caller's alone.
                            replies.append(exc)
                        read_any = True
                    if not future.done():
                        future.set_result(replies)
            kept = True
        except Exception as exc:  # a broken connection, a timeout
            return read_any, exc
        finally:
            # A connection that answered everything goes back to this client's own short
            # list; one that failed (redis-py closed it) or was cancelled mid-read goes
            # back to the pool.
            if kept and not self._closing and len(self._held) < self._held_cap:
                self._held.append(conn)
            else:
                await self.connection_pool.release(conn)
        return read_any, None

    async def _checkout(self) -> Any:
        """A connection for one batch: one this client holds from an earlier batch, else
        the pool's.  The pool's checkout (a lock, a condition, a timer, a socket check)
        cost more than packing and sending a small batch.  A held connection is checked
        as the pool checks its own: one the server has closed (or that holds unread
        bytes) is given back to the pool, which reconnects it, so a Redis restart does
        not cost the first batches after it their only retry."""
        while self._held:
            conn = self._held.pop()
            reusable = False
            try:
                reusable = conn.is_connected and not await conn.can_read()
                if not reusable:
                    await conn.disconnect()
            except (ConnectionError, OSError):
                pass
            except BaseException:  # cancelled while checking or closing it: never lost
                await self.connection_pool.release(conn)
                raise
            if reusable:
                return conn
            await self.connection_pool.release(conn)
        return await self.connection_pool.get_connection()  # type: ignore[no-untyped-call]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        self._closing = True  # a batch still in flight gives its connection back, not here
        held, self._held = self._held, []
        for conn in held:
            await self.connection_pool.release(conn)
        await super().aclose(close_connection_pool)


def _pack(conn: Any, entries: list[_Entry]) -> tuple[list[_Entry], list[bytes]]:
    """The entries that can be encoded, packed together.  An entry with an argument
    redis-py refuses (None, a lone surrogate, an int too long to write out) fails alone,
    as it would have sent alone: nothing of the batch has been sent yet."""
    with contextlib.suppress(Exception):  # an argument's refusal: found and failed below, alone
        return entries, conn.pack_commands([args for cmds, _ in entries for args, _ in cmds])
    good: list[_Entry] = []
    for cmds, future in entries:
        try:
            conn.pack_commands([args for args, _ in cmds])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            good.append((cmds, future))
    packed = conn.pack_commands([args for cmds, _ in good for args, _ in cmds]) if good else []
    return good, packed


def _own_copy(exc: Exception) -> Exception:
    """Each caller raises its own exception object (one shared object's traceback would
    grow with every caller that raised it)."""
    try:
        return copy.copy(exc)
    except Exception:
        return exc


class SharedPipeline(Pipeline):
    """:meth:`AutoPipelinedRedis.pipeline`: queues as any pipeline does; a non-transactional
    ``execute`` hands its commands, together and in order, to the client's shared batch.
    Transactions, WATCH and pipelines holding script objects run as redis-py runs them."""

    def __init__(self, client: AutoPipelinedRedis, transaction: bool, shard_hint: str | None) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction, shard_hint)
        self._client = client

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.is_transaction or self.explicit_transaction or self.watching or self.scripts:
            return await super().execute(raise_on_error)
        stack, self.command_stack = list(self.command_stack), []
        if not stack:
            return []
        replies = await self._client.enqueue([(args, options) for args, options in stack])
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies
