"""Red-team round 8: LeanConnection (C packing, the write without a task, the batch's one
deadline) and AutoPipelinedRedis's held connections and inline lone commands, attacked from
outside on private redis-servers.

Seven tests here first demonstrated defects (as strict xfails), each fixed since: a huge int
crashed the process inside hiredis, one caller's unencodable argument or undecodable reply
or failing reply callback failed its whole batch, a cancelled caller leaked a connection,
held connections starved a small pool, and command names split unlike redis-py's.  The
others pin guarantees that were checked and hold.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as plain_redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeout

from service_kernel.auto_pipeline import AutoPipelinedRedis
from service_kernel.redis_client import RedisFailure, connect
from service_kernel.redis_connection import LeanConnection
from service_kernel.redis_process import RedisProcess

from ..support.redis_faults import kill_clients, stopped

REPO = Path(__file__).resolve().parents[2]

#: INCRs a counter: the charge of a rate-limit script, which must never run twice.
CHARGE = "return redis.call('INCR', KEYS[1])"


async def counter(proc: RedisProcess, key: str) -> int:
    admin: Any = plain_redis.Redis.from_url(proc.url)
    try:
        return int(await admin.get(key) or 0)
    finally:
        await admin.aclose()


def both_packers(*args: Any) -> tuple[object, object]:
    """What redis-py's packer and LeanConnection's make of ``args`` (bytes, or the error type)."""
    out: list[object] = []
    for conn in (Connection(), LeanConnection()):
        try:
            out.append(b"".join(conn.pack_command(*args)))
        except Exception as exc:
            out.append(type(exc))
    return out[0], out[1]


# --- Packing -------------------------------------------------------------------------------


def test_a_huge_int_argument_raises_instead_of_crashing_the_process() -> None:
    code = (
        "from service_kernel.redis_connection import LeanConnection\n"
        "c = LeanConnection()\n"
        "try:\n"
        "    c.pack_command('SET', 'k', 10**4300)\n"
        "except ValueError:\n"
        "    print('ValueError')\n"
    )
    env = {**os.environ, "PYTHONINTMAXSTRDIGITS": "4300", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"the interpreter died: returncode {done.returncode}"
    assert done.stdout.strip() == "ValueError"


def test_command_names_split_on_any_whitespace_as_redis_py_does() -> None:
    redis_py, lean = both_packers("GET\tX", "k")
    assert lean == redis_py


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", True),
        ("SET", "k", None),
        ("SET", "k", memoryview(b"mv")),
        ("SET", "k", bytearray(b"ba")),
        ("SET", "k", "\ud800"),  # a lone surrogate: refused by both
        ("SET", "k", "é\x00\r\n"),
        ("SET", "k", 2**64),
        ("SET", "k", -(2**63) - 1),
        ("SET", "k", 0.1),
        ("SET", "k", float("nan")),
        ("SET", "k", -0.0),
        ("SET", "k", 1e300),
        ("SCRIPT LOAD", "return 1"),
        (b"CONFIG GET", b"maxmemory"),
        ("SET", "k", b"\xff\xfe"),
    ],
    ids=repr,
)
def test_packing_matches_redis_py_for_awkward_arguments(args: tuple[Any, ...]) -> None:
    redis_py, lean = both_packers(*args)
    assert lean == redis_py


def test_a_batch_packs_to_redis_pys_bytes() -> None:
    commands = [
        ("SET", "a", memoryview(b"x" * 10_000)),
        ("GET", "a"),
        ("SET", "b", bytearray(b"y" * 7000), "EX", 10),
        ("HSET", "h", "f", 1.5, "g", 2**70),
        ("SCRIPT LOAD", "return 1"),
    ]
    expected = b"".join(Connection().pack_commands(commands))
    assert b"".join(LeanConnection().pack_commands(commands)) == expected


# --- Isolation of callers in one batch -----------------------------------------------------


async def batched_with_a_bystander(c: Any, bad: Any) -> list[Any]:
    """``bad`` and a bystander's GET in one batch (a lone GET in flight first)."""
    lone = asyncio.ensure_future(c.get("bystander"))
    await asyncio.sleep(0)
    assert c._busy == 1  # the lone GET is in flight: the two commands below go as one batch
    results = await asyncio.gather(bad, c.get("bystander"), return_exceptions=True)
    assert await lone == "fine"
    return list(results)


async def test_an_unencodable_argument_fails_its_caller_alone(batching_client: Any) -> None:
    class Big(int):
        pass

    await batching_client.set("bystander", "fine")
    bad, bystander = await batched_with_a_bystander(
        batching_client, batching_client.set("x", Big(10**5000))
    )
    assert isinstance(bad, ValueError)
    assert bystander == "fine", bystander


async def test_an_undecodable_value_fails_only_the_caller_that_reads_it(
    batching_client: Any, single_redis: RedisProcess
) -> None:
    writer = plain_redis.Redis.from_url(single_redis.url)  # a client that writes raw bytes
    try:
        await writer.set("binary", b"\xff\xfe")
    finally:
        await writer.aclose()
    await batching_client.set("bystander", "fine")
    bad, bystander = await batched_with_a_bystander(batching_client, batching_client.get("binary"))
    assert isinstance(bad, UnicodeDecodeError)  # as plain redis-py raises it, to that caller
    assert bystander == "fine", bystander


async def test_a_reply_callbacks_error_reaches_only_its_caller(batching_client: Any) -> None:
    await batching_client.set("bystander", "fine")
    await batching_client.zadd("z", {"m": float("inf")})
    bad, bystander = await batched_with_a_bystander(
        batching_client, batching_client.zrange("z", 0, -1, withscores=True, score_cast_func=int)
    )
    assert isinstance(bad, OverflowError)
    assert bystander == "fine", bystander


# --- Connections: leaks, starvation, state --------------------------------------------------


async def test_a_caller_cancelled_while_a_dead_held_connection_closes_leaks_nothing(
    single_redis: RedisProcess,
) -> None:
    c: Any = connect(single_redis.url)
    pool = c.connection_pool
    try:
        await c.set("k", "v")
        assert len(c._held) == 1
        await kill_clients(single_redis)  # the held connection is now at EOF
        doomed = asyncio.ensure_future(c.get("k"))
        await asyncio.sleep(0)  # it runs until _checkout awaits the dead connection's close
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await c.get("k") == "v"
        # Every connection checked out of the pool is one the client holds (nothing in flight).
        assert len(pool._in_use_connections) == len(c._held), (pool._in_use_connections, c._held)
    finally:
        await c.aclose()


async def test_held_connections_do_not_starve_a_small_pool(single_redis: RedisProcess) -> None:
    pool = BlockingConnectionPool.from_url(
        single_redis.url, max_connections=1, timeout=0.3, decode_responses=True
    )
    pool.connection_class = LeanConnection
    c = AutoPipelinedRedis(connection_pool=pool)
    c.auto_close_connection_pool = True
    try:
        assert await c.set("k", "v") is True  # a lone command: the client now holds the connection
        assert await c.incr("n") == 1  # plain redis-py runs this on the same, idle, connection
    finally:
        await c.aclose()


async def test_a_lone_command_cancelled_mid_read_hands_no_stale_reply_on(
    single_redis: RedisProcess,
) -> None:
    c: Any = connect(single_redis.url, socket_timeout_s=2.0)
    try:
        await c.mset({"a": "va", "b": "vb"})
        await asyncio.gather(*(c.get("a") for _ in range(10)))  # several held connections
        with stopped(single_redis):
            doomed = asyncio.ensure_future(c.get("a"))
            await asyncio.sleep(0.05)  # sent, waiting for the reply
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
        for _ in range(5):
            assert await c.get("b") == "vb"
            assert await asyncio.gather(*(c.get("b") for _ in range(10))) == ["vb"] * 10
        assert [await conn.can_read() for conn in c._held] == [False] * len(c._held)
    finally:
        await c.aclose()


async def test_held_connections_killed_by_the_server_cost_no_error(single_redis: RedisProcess) -> None:
    c: Any = connect(single_redis.url)
    try:
        await c.set("k", "v")
        await asyncio.gather(*(c.get("k") for _ in range(20)))
        assert c._held
        await kill_clients(single_redis)
        assert await c.get("k") == "v"  # lone
        await kill_clients(single_redis)
        assert await asyncio.gather(*(c.get("k") for _ in range(20))) == ["v"] * 20  # batched
    finally:
        await c.aclose()


async def test_a_due_health_check_ping_is_read_before_the_commands_replies(
    single_redis: RedisProcess,
) -> None:
    c: Any = connect(single_redis.url)
    try:
        await c.mset({"a": "va", "b": "vb"})
        await asyncio.gather(*(c.get("a") for _ in range(20)))
        for _ in range(3):
            for conn in c._held:
                conn.next_health_check = 0  # a PING is due on every held connection
            assert await c.get("b") == "vb"
            for conn in c._held:
                conn.next_health_check = 0
            assert await asyncio.gather(*(c.get(k) for k in "ab" * 10)) == ["va", "vb"] * 10
    finally:
        await c.aclose()


# --- Deadlines and double execution --------------------------------------------------------


async def test_a_lone_command_on_a_frozen_server_fails_within_its_timeout(
    single_redis: RedisProcess,
) -> None:
    c: Any = connect(single_redis.url, socket_timeout_s=0.3)
    try:
        await c.set("k", "v")
        with stopped(single_redis):
            async with asyncio.timeout(3):  # a hang fails the test instead of the suite
                with pytest.raises(RedisTimeout):
                    await c.get("k")
        assert await c.get("k") == "v"
    finally:
        await c.aclose()


async def test_scripts_that_time_out_are_never_sent_twice(single_redis: RedisProcess) -> None:
    """A rate-limit charge whose reply timed out may have run: it must not run again."""
    c: Any = connect(single_redis.url, socket_timeout_s=0.3)
    try:
        charge = c.register_script(CHARGE)
        assert await charge(keys=["charges"]) == 1  # loaded: the calls below are EVALSHAs
        with stopped(single_redis):
            async with asyncio.timeout(3):
                results = await asyncio.gather(
                    *(charge(keys=["charges"]) for _ in range(8)), return_exceptions=True
                )
        assert all(isinstance(r, RedisTimeout) for r in results), results
        await asyncio.sleep(0.2)  # the server runs what it had received
        assert await counter(single_redis, "charges") <= 1 + 8
    finally:
        await c.aclose()


# --- Everything at once ----------------------------------------------------------------------


async def test_mixed_callers_each_get_their_own_replies(batching_client: Any) -> None:
    """Lone and batched commands, shared pipelines, transactions and scripts, with the
    script cache flushed in the middle: every caller gets exactly its own replies, and
    every script ran once per call."""
    c = batching_client
    charge = c.register_script(CHARGE)
    rng = random.Random(8)

    async def caller(i: int) -> None:
        await asyncio.sleep(rng.random() * 0.02)
        kind = i % 5
        if kind == 0:
            assert await c.set(f"s{i}", f"v{i}") is True
            assert await c.get(f"s{i}") == f"v{i}"
        elif kind == 1:
            async with c.pipeline(transaction=False) as p:
                p.hset(f"h{i}", mapping={"f": str(i)}).hgetall(f"h{i}").exists(f"h{i}")
                assert await p.execute() == [1, {"f": str(i)}, 1]
        elif kind == 2:
            async with c.pipeline(transaction=True) as p:
                p.incr(f"t{i}").incr(f"t{i}")
                assert await p.execute() == [1, 2]
        elif kind == 3:
            assert await charged(f"c{i}") == 1
            assert await charged(f"c{i}") == 2
        else:
            await c.sadd(f"set{i}", "m")
            assert await c.sismember(f"set{i}", "m") == 1
            assert await c.smembers(f"set{i}") == {"m"}

    async def charged(key: str) -> int:
        try:
            return int(await charge(keys=[key]))
        except NoScriptError:
            # Flushed again between redis-py's reload and its second EVALSHA (plain redis-py
            # does the same): NOSCRIPT means it did not run, so calling again is safe.
            return int(await charge(keys=[key]))

    async def flusher() -> None:
        for _ in range(3):
            await asyncio.sleep(0.007)
            await c.script_flush()

    await asyncio.gather(*(caller(i) for i in range(300)), flusher())
    assert c.batches > 0
    assert await c.get("s0") == "v0"


async def test_errors_are_redis_errors_when_the_server_is_gone(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path / "gone").start()
    c: Any = connect(proc.url)
    try:
        await asyncio.gather(*(c.set(f"k{i}", "1") for i in range(10)))
        proc.stop()
        with pytest.raises(RedisFailure):
            await c.get("k0")  # lone, on a held connection the server closed
        results = await asyncio.gather(*(c.get("k0") for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, RedisFailure) for r in results), results
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await c.aclose()
