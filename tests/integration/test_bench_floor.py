"""The dm benchmark's floor server (loadtests/bench/dm/floor.py): it must cost what it says,
exactly ``R`` Redis round trips per request, or the floor it reports is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from loadtests.bench.dm.floor import METRIC, build
from loadtests.bench.dm.report import floor_summary

pytestmark = pytest.mark.usefixtures("redis")


@pytest.mark.parametrize("round_trips", [0, 4])
async def test_floor_answers_201_and_makes_exactly_its_round_trips(
    redis_server: Any, redis: Any, round_trips: int
) -> None:
    if redis_server.cluster:
        pytest.skip("the floor runs on the bench's single Redis")
    app = build(redis_server.url, round_trips)
    async with TestClient(TestServer(app)) as client:

        async def post(i: int) -> None:
            resp = await client.post(
                "/v1/conversations/c_x/messages", json={"media_id": "m_1", "text": f"t{i}"}
            )
            assert resp.status == 201
            body = await resp.json()
            assert body["conversation_id"] == "c_x" and body["text"] == f"t{i}"

        async def evalsha_calls() -> int:
            stats = await redis.info("commandstats")
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        await post(0)  # loads the script (NOSCRIPT, SCRIPT LOAD) when it makes round trips
        before = await evalsha_calls()
        for i in range(1, 6):
            await post(i)
        assert await evalsha_calls() - before == 5 * round_trips
        assert int(await redis.get("floor:{c_x}") or 0) == 6 * round_trips
        metrics = await (await client.get("/metrics")).text()
        assert f"{METRIC} 6" in metrics


def test_floor_summary_splits_the_stack_from_the_product() -> None:
    class Run:
        def __init__(self, us: float, problems: tuple[str, ...] = ()) -> None:
            self.cpu_us = {"server": us, "redis": 10.0}
            self.round = 1
            self.problems = problems

    floors: Any = {0: [Run(200.0), Run(220.0), Run(210.0)], 4: [Run(1010.0), Run(1000.0), Run(990.0)]}
    f = floor_summary({"dm_cpu_us_per_send": 2000.0}, floors)
    assert f["http_us_per_request"] == 210.0 and f["floor_us_per_send"] == 1000.0
    assert f["redis_us_per_round_trip"] == 197.5  # (1000 - 210) / 4
    assert f["send_vs_floor"] == 2.0 and f["ours_us_per_send"] == 1000.0
    assert f["valid"]
    bad: Any = {0: [Run(200.0, ("a 500",))], 4: [Run(1000.0)]}
    assert not floor_summary({"dm_cpu_us_per_send": 2000.0}, bad)["valid"]


def test_redis_batching_bench_reports_both_clients(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m loadtests.bench redis-batching`` on a tiny load: both clients measured,
    at both concurrencies, and the ratios computed from the medians."""
    import json

    from loadtests.bench.redis_batching import main

    assert main(["--tasks", "4", "--commands", "5", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cpu = report["cpu_us_per_command"]
    assert set(cpu) == {"alone", "batched"} and all(
        v["concurrent"] > 0 and v["one"] > 0 for v in cpu.values()
    )
    assert report["ratio_concurrent"] == round(
        cpu["batched"]["concurrent"] / cpu["alone"]["concurrent"], 2
    )
