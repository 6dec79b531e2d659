"""Auto-pipelining (service_kernel/auto_pipeline.py) on a real redis-server: batched
commands behave exactly as separate ones, reply by reply and error by error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError

from service_kernel.auto_pipeline import AutoPipelinedRedis
from service_kernel.redis_client import RedisFailure, connect
from service_kernel.redis_process import RedisProcess


async def test_concurrent_commands_go_in_one_batch_and_each_gets_its_reply(
    batching_client: Any,
) -> None:
    await batching_client.hset("h", mapping={"a": "1", "b": "2"})
    before = batching_client.batches
    replies = await asyncio.gather(
        *(batching_client.set(f"k{i}", str(i)) for i in range(50)),
        batching_client.hgetall("h"),
        batching_client.hexists("h", "a"),
        batching_client.sismember("nothing", "x"),
    )
    assert replies[:50] == [True] * 50
    assert replies[50:] == [{"a": "1", "b": "2"}, True, False]  # redis-py's reply callbacks applied
    assert batching_client.batches - before == 1
    assert await asyncio.gather(*(batching_client.get(f"k{i}") for i in range(50))) == [
        str(i) for i in range(50)
    ]


async def test_one_commands_error_reaches_only_its_caller(batching_client: Any) -> None:
    await batching_client.sadd("a-set", "x")
    results = await asyncio.gather(
        batching_client.get("a-set"),
        batching_client.set("fine", "1"),
        batching_client.get("fine"),
        return_exceptions=True,
    )
    assert isinstance(results[0], ResponseError) and "WRONGTYPE" in str(results[0])
    assert list(results[1:]) == [True, "1"]  # one batch runs in the order the commands were issued


async def test_scripts_survive_a_flushed_script_cache(batching_client: Any) -> None:
    script = batching_client.register_script("return redis.call('INCR', KEYS[1])")
    assert await script(keys=["n"]) == 1
    await batching_client.script_flush()
    # Every concurrent call meets NOSCRIPT in the same batch; each loads and calls again.
    assert sorted(await asyncio.gather(*(script(keys=["n"]) for _ in range(10)))) == list(range(2, 12))


async def test_a_broken_batch_fails_every_caller_with_a_redis_error(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path / "gone").start()
    c = connect(proc.url)
    try:
        await c.set("x", "1")
        proc.stop()
        results = await asyncio.gather(*(c.get("x") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisFailure) for r in results), results
    finally:
        await c.aclose()


async def test_a_cancelled_caller_leaves_the_others_alone(batching_client: Any) -> None:
    first = asyncio.ensure_future(batching_client.set("c1", "1"))
    second = asyncio.ensure_future(batching_client.set("c2", "2"))
    first.cancel()
    assert await second is True
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await batching_client.get("c2") == "2"


async def test_blocking_reads_are_not_batched_and_do_not_hold_up_others(
    batching_client: Any,
) -> None:
    tail = asyncio.ensure_future(batching_client.xread({"stream": "$"}, block=2000))
    await asyncio.sleep(0.05)
    # A GET queued with the tail's XREAD in one pipeline would wait out the BLOCK.
    assert await asyncio.wait_for(batching_client.set("quick", "1"), 0.5) is True
    await batching_client.xadd("stream", {"f": "v"})
    assert (await asyncio.wait_for(tail, 2))[0][0] == "stream"


async def test_off_when_asked(single_redis: RedisProcess) -> None:
    plain = connect(single_redis.url, auto_pipeline=False)
    try:
        assert not isinstance(plain, AutoPipelinedRedis)
        assert await plain.set("x", "1") is True
    finally:
        await plain.aclose()


async def test_a_lone_command_is_sent_alone(batching_client: Any) -> None:
    """Batching starts only when commands overlap: an idle client keeps a lone command's
    latency (a pipeline costs more than one command)."""
    before = batching_client.batches
    for i in range(5):
        assert await batching_client.set(f"alone{i}", "1") is True
    assert batching_client.batches == before


async def test_callers_pipelines_join_one_batch_each_kept_whole_and_in_order(
    batching_client: Any,
) -> None:
    async def pipeline_of(tag: str, n: int) -> Any:
        async with batching_client.pipeline(transaction=False) as p:
            for i in range(n):
                p.rpush(f"list:{tag}", i)
            p.lrange(f"list:{tag}", 0, -1)
            return await p.execute()

    busy = asyncio.ensure_future(batching_client.set("busy", "1"))  # something in flight first
    before = batching_client.batches
    a, b, big = await asyncio.gather(pipeline_of("a", 3), pipeline_of("b", 2), pipeline_of("c", 300))
    await busy
    assert a == [1, 2, 3, ["0", "1", "2"]]
    assert b == [1, 2, ["0", "1"]]
    assert big[-1] == [str(i) for i in range(300)] and big[:-1] == list(range(1, 301))
    # Three pipelines, 308 commands: over MAX_BATCH, so two batches, no pipeline split.
    assert batching_client.batches - before == 2


async def test_a_shared_pipeline_raises_or_returns_its_own_errors(batching_client: Any) -> None:
    await batching_client.sadd("a-set", "x")
    async with batching_client.pipeline(transaction=False) as p:
        p.set("ok", "1").get("a-set").get("ok")
        replies = await p.execute(raise_on_error=False)
    assert replies[0] is True and isinstance(replies[1], ResponseError) and replies[2] == "1"
    async with batching_client.pipeline(transaction=False) as p:
        p.get("a-set")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await p.execute()


async def test_transactions_still_run_as_transactions(batching_client: Any) -> None:
    before = batching_client.batches
    async with batching_client.pipeline(transaction=True) as p:
        p.incr("tx").incr("tx")
        assert await p.execute() == [1, 2]
    assert batching_client.batches == before  # MULTI/EXEC on its own connection, as redis-py does it
