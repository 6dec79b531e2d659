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
    """``python -m loadtests.bench redis-batching`` on a tiny load: both clients and the bare
    protocol's floor measured, at both concurrencies, and the ratios computed from the
    medians."""
    import json

    from loadtests.bench.redis_batching import main

    assert main(["--tasks", "4", "--commands", "5", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cpu = report["cpu_us_per_command"]
    assert set(cpu) == {"alone", "batched", "bare"} and all(
        v["concurrent"] > 0 and v["one"] > 0 for v in cpu.values()
    )
    assert report["one_caller_vs_bare"] == round(cpu["batched"]["one"] / cpu["bare"]["one"], 2)
    assert report["ratio_concurrent"] == round(
        cpu["batched"]["concurrent"] / cpu["alone"]["concurrent"], 2
    )


async def test_the_open_loop_floor_sends_on_schedule_with_no_recipient(
    redis_server: Any, redis: Any
) -> None:
    """``open-floor@RATE``: the push run's open-loop generator, sends only, against the full
    floor server; every send is accepted and none waits for a push that cannot come."""
    if redis_server.cluster:
        pytest.skip("the floor runs on the bench's single Redis")
    from loadtests.bench.dm.push import open_floor_problems
    from loadtests.bench.dm.push_gen import open_loop

    server = TestServer(build(redis_server.url, 4), host="127.0.0.1")
    await server.start_server()
    try:
        pairs = [
            {"cid": f"c_{i}", "sender_token": "t", "recipient_token": "t", "media_id": "m_1"}
            for i in range(4)
        ]
        spec = {
            "recipients": False,
            "port": server.port,
            "pairs": pairs,
            "rate": 100,
            "duration_s": 1,
            "warmup_s": 0.2,
            "drain_s": 3.0,
            "connections": 8,
            "message": "media",
            "tag": "t",
        }
        doc = await open_loop(spec)
    finally:
        await server.close()
    assert doc["accepted"] == doc["offered"] == 100 and doc["warm_accepted"] == 20
    assert doc["received"] == 0 and doc["reconnects"] == 0
    assert open_floor_problems(doc) == []
    counts = [int(await redis.get(f"floor:{{c_{i}}}") or 0) for i in range(4)]
    assert sum(counts) == 4 * 120  # 4 round trips for each of the 120 sends


def test_floor_summary_compares_the_message_with_the_open_loop_floor() -> None:
    class Open:
        def __init__(self, us: float) -> None:
            self.cpu_us = {"server": us, "redis": 10.0}
            self.rate, self.round, self.problems = 1000, 1, ()

    class Run:
        def __init__(self, us: float) -> None:
            self.cpu_us = {"server": us, "redis": 10.0}
            self.round, self.problems = 1, ()

    floors: Any = {0: [Run(60.0)], 4: [Run(120.0)]}
    opens: Any = [Open(450.0), Open(500.0), Open(470.0)]
    f = floor_summary({"dm_cpu_us_per_send": 300.0}, floors, {"dm_cpu_us_per_message": 940.0}, opens)
    assert f["open_loop_rate"] == 1000 and f["open_loop_floor_us_per_send"] == 470.0
    assert f["message_vs_open_loop_floor"] == 2.0 and f["valid"]
    bad = Open(470.0)
    bad.problems = ("3 sends not accepted",)  # type: ignore[assignment]
    bad_opens: Any = [bad]
    assert not floor_summary({"dm_cpu_us_per_send": 300.0}, floors, None, bad_opens)["valid"]
