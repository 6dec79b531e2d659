"""A sealed message's envelope map is parsed once per message, and each device still gets its own."""

from __future__ import annotations

import json

from dm import delivery
from loadtests.bench import push_render as bench_push_render


def test_each_device_gets_its_own_envelope_from_one_parse() -> None:
    messages, sockets = bench_push_render.build_messages(3, 2, "x25519", 2)
    fields = messages[0]
    envelopes = json.loads(fields["envelopes"])
    delivery.envelopes_of.cache_clear()
    for reader, device in sockets:
        out = delivery.render(None, "c_1", "1-0", fields, reader, device)
        assert out["envelope"] == envelopes[f"{reader}/{device}"]
    info = delivery.envelopes_of.cache_info()
    assert (info.misses, info.hits) == (1, len(sockets) - 1)


def test_distinct_messages_never_share_a_map() -> None:
    messages, _ = bench_push_render.build_messages(1, 1, "x25519", 2)
    a = delivery.render(None, "c_1", "1-0", messages[0], "u_0", "d_0")
    b = delivery.render(None, "c_1", "2-0", messages[1], "u_0", "d_1")
    assert a["envelope"] != b["envelope"] and b["envelope"] == "x1"
    assert delivery.render(None, "c_1", "1-0", messages[0], "u_9", "d_0")["envelope"] is None


def test_cache_is_bounded() -> None:
    delivery.envelopes_of.cache_clear()
    for i in range(delivery.ENVELOPE_CACHE_SIZE + 10):
        delivery.envelopes_of(json.dumps({"u/d": str(i)}))
    assert delivery.envelopes_of.cache_info().currsize == delivery.ENVELOPE_CACHE_SIZE


def test_benchmark_reports_both_paths() -> None:
    doc = bench_push_render.run(members=2, devices=1, suite="x25519", rounds=2, count=2)
    assert set(doc["cpu_us_per_message"]) == {"per_device", "per_message"}
    assert all(len(v) == 2 for v in doc["cpu_us_per_message_rounds"].values())
    assert doc["sockets"] == 2 and doc["ratio_per_message_vs_per_device"] > 0
