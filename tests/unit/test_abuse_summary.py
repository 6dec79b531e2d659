"""The abuse benchmark's arithmetic: rounds rotate the vectors, and a vector's ratio is the
median of its p99s over the rounds over the median of the baselines' p99s."""

from __future__ import annotations

from typing import Any

from loadtests.bench.abuse import VECTORS, phase_order, summarize


def test_each_round_opens_with_a_baseline_and_rotates_the_vectors() -> None:
    order = phase_order(3)
    assert len(order) == 3 * (1 + len(VECTORS))
    rounds = [[name for r, name in order if r == k] for k in range(3)]
    assert all(names[0] == "baseline" and sorted(names[1:]) == sorted(VECTORS) for names in rounds)
    assert [names[1] for names in rounds] == list(VECTORS[:3])  # each round starts one later


def phase(r: int, p99: float, requests: int = 0, growth: int = 1000) -> dict[str, Any]:
    return {
        "round": r,
        "victim_p99_ms": p99,
        "attack_requests": requests,
        "attack_statuses": {"429": requests} if requests else {},
        "redis_bytes_delta": growth,
    }


def test_a_vector_ratio_is_a_quotient_of_medians_so_one_noisy_phase_does_not_decide() -> None:
    phases: dict[str, list[dict[str, Any]]] = {
        "baseline": [phase(0, 4.0), phase(1, 10.0), phase(2, 5.0)]
    }
    for name in VECTORS:
        # Growth beyond the round's baseline (1000 B): 600, 3600 and none (less than it).
        phases[name] = [phase(0, 6.0, 600, 1600), phase(1, 12.0, 1200, 4600), phase(2, 15.0, 900, 0)]
    report = summarize(phases, seconds=6.0)
    v = report["vectors"]["send_flood"]
    assert v["victim_p99_ratios"] == [1.5, 1.2, 3.0]  # per round, for reading
    assert v["victim_p99_ratio"] == 2.4  # median 12.0 over the baselines' median 5.0
    assert v["attack_requests_per_s"] == 150  # median 900 requests / 6 s
    assert v["attack_statuses"] == {"429": 2700}
    assert report["victim_p99_ratio_max"] == 2.4
    assert report["baseline_p99_ms"] == 5.0
    assert v["redis_bytes_per_attack_request"] == 1.0  # median of 1.0, 3.0 and 0
    assert report["redis_bytes_per_attack_request_max"] == 1.0
    assert report["rounds"] == 3 and report["attacker_priority"] == "idle"
