"""Sections of the report that stand on their own: the floor of the sealed overhead, what a
share costs the servers, and the validity of the measurement."""

from __future__ import annotations

import json
from typing import Any

from loadtests.report.formats import Block, delta, estimate, ms, rate


def floor_blocks(doc: dict[str, Any]) -> list[Block]:
    """The sealed overhead next to the floor its primitives set, measured in this run."""
    fl = {m: f for m, f in (doc.get("floor") or {}).items() if m in doc["modes"]}
    if not fl:
        return []
    out: list[Block] = [("h2", "The floor of the sealed overhead")]
    out.append(
        (
            "p",
            "What sealing cannot avoid on a share's critical path, measured in-process "
            "at the start of this run: the sender's seal, the recipient's open (CPU "
            "time per call), the edge's check of the derived grant on the first fetch "
            "and the binding of the first redeemer (one Redis round trip, wall clock). "
            "The sender's device derives the grant from its capability ahead of the "
            "share (a spare grant, made after its previous share): that cost is shown "
            "but is not on the critical path, and not in the floor. The measured "
            "overhead is the Δp50 vs plain above; its multiple of the floor says how "
            "much of it is design and measurement rather than cryptography.",
        )
    )
    if any(f.get("cold") for f in fl.values()):
        meta = doc.get("floor_meta") or {}
        out.append(
            (
                "p",
                "The cold floor is the same primitives each timed once after the process "
                f"sat idle {meta.get('cold_gap_ms', 20):.0f} ms (median of "
                f"{meta.get('cold_samples', 15)}), as every client step and the edge's "
                "first check run in a share: once, between network waits, after other "
                "processes had the cores. The warm floor is what the primitives cost; "
                "the cold one is what this machine charges for them one at a time.",
            )
        )
    rows = []
    for mode, f in fl.items():
        d = {
            "estimate": f["overhead_ms"],
            "ci_low": f["ci_low"],
            "ci_high": f["ci_high"],
            "significant": f["ci_low"] is not None and (f["ci_low"] > 0 or f["ci_high"] < 0),
        }
        rows.append(
            [
                mode,
                rate(f.get("derive_us")) + (" (ahead)" if f.get("derive_ahead") else ""),
                rate(f["seal_us"]),
                rate(f["open_us"]),
                rate(f["grant_check_us"]),
                "not measured" if f["binding_rtt_us"] is None else rate(f["binding_rtt_us"]),
                f"{f['floor_ms']:.3f}",
                _cold_floor(f),
                delta(d),
                "n/a" if f["multiple"] is None else f"{f['multiple']:.1f}x",
                "n/a" if f.get("cold_multiple") is None else f"{f['cold_multiple']:.1f}x",
            ]
        )
    out.append(
        (
            "table",
            [
                "mode",
                "derive µs",
                "seal µs",
                "open µs",
                "grant check µs",
                "binding RTT µs",
                "floor ms",
                "cold floor ms",
                "measured Δp50 ms [95% CI]",
                "multiple of the floor",
                "multiple of the cold floor",
            ],
            rows,
        )
    )
    return out


def _cold_floor(f: dict[str, Any]) -> str:
    cold = f.get("cold")
    if not cold:
        return "not measured"
    parts = ", ".join(
        f"{name} {rate(cold.get(k))}"
        for name, k in (("seal", "seal_us"), ("open", "open_us"), ("check", "grant_check_us"))
    )
    rtt = cold.get("binding_rtt_us")
    parts += f", RTT {rate(rtt)}" if rtt is not None else ""
    return f"{cold['floor_ms']:.3f} ({parts} µs)"


def cost_blocks(doc: dict[str, Any]) -> list[Block]:
    """Server CPU per share next to latency, capacity per core, and who saturated first."""
    modes = doc["modes"]
    if not any("server_cost" in m for m in modes.values()):
        return []
    cfg = doc.get("config", {})
    out: list[Block] = [("h2", "Server CPU per share")]
    out.append(
        (
            "p",
            "CPU the dm service, the edge and Redis spent per completed share in each "
            "trial (from /proc, sampled at the segment's start and end), with its "
            f"{cfg.get('view_ratio', 0):g} views per share included; median over "
            "trials with bootstrap 95% intervals, and sealed against plain as the median "
            "per-round ratio. Capacity = shares/s one fully busy server core would "
            "serve. The generator's CPU is the load generator's own (client crypto "
            "included), which runs on phones in production. When the servers' idle "
            "CPU was measured (every user connected, no flow, before the plan), the "
            "per-role figures, the ratio and the capacity are net of it: the marginal "
            "cost of a share.",
        )
    )
    idle = next(
        (
            m["server_cost"].get("idle_cpu_pct")
            for m in modes.values()
            if m.get("server_cost", {}).get("idle_cpu_pct")
        ),
        None,
    )
    if idle:
        out.append(
            (
                "p",
                "Idle CPU (% of one core): "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(idle.items()))
                + ".",
            )
        )
    rows = []
    for mode, m in modes.items():
        c = m.get("server_cost", {})
        if not c.get("measured"):
            rows.append(
                [
                    mode,
                    ms(m["p50_ms"]),
                    c.get("note", "not measured"),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        by = c["by_role_us"]
        rows.append(
            [
                mode,
                ms(m["p50_ms"]),
                rate(by.get("dm")),
                rate(by.get("edge")),
                rate(by.get("redis")),
                estimate(c["us_per_share"]),
                estimate(c.get("net_us_per_share")),
                estimate(c.get("ratio_vs_plain"), "{:.2f}", "x") if mode != "plain" else "(baseline)",
                rate(c["shares_per_core_s"]),
                estimate(c["generator_cpu_pct"]),
                estimate(c["servers_cpu_pct"]),
                estimate(c["machine_cpu_pct"]),
            ]
        )
    out.append(
        (
            "table",
            [
                "mode",
                "p50 ms",
                "dm µs",
                "edge µs",
                "Redis µs",
                "server µs/share [95% CI]",
                "net of idle [95% CI]",
                "vs plain [95% CI]",
                "shares/s per server core",
                "generator CPU %",
                "servers CPU %",
                "machine CPU %",
            ],
            rows,
        )
    )
    items = []
    for mode, m in modes.items():
        b = m.get("saturation_bound") or {}
        if b.get("saturated_first") is None:
            continue
        pct = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(b["cpu_pct"].items(), key=lambda kv: -kv[1]))
        verdict = {
            "generator-bound": "GENERATOR-BOUND: the saturation figure measures the "
            "load generator, not the servers",
            "machine-bound": "MACHINE-BOUND: the whole machine was saturated",
            "server-bound": f"server-bound ({b['saturated_first']})",
        }.get(b.get("bound") or "", "servers not measured")
        items.append(
            f"{mode}: at {b['at_rps']:g}/s the busiest process was "
            f"{b['saturated_first']} (CPU % of one core: {pct}); {verdict}"
        )
    if items:
        out.append(
            (
                "p",
                "Which process saturated first (the step where the SLO was first "
                "missed, or the highest step):",
            )
        )
        out.append(("ul", items))
    return out


def validity_blocks(doc: dict[str, Any]) -> list[Block]:
    v, env, cfg = doc["validity"], doc.get("environment", {}), doc.get("config", {})
    out: list[Block] = [("h2", "Validity")]
    if v["problems"]:
        out.append(("ul", ["PROBLEM: " + p for p in v["problems"]]))
    else:
        out.append(
            (
                "p",
                "Every trial achieved its target arrival rate on a machine that was "
                "not saturated, the generator never reached Locust's CPU warning, and its "
                "event loop woke flows within the loop-lag bound.",
            )
        )
    if v["notes"]:
        out.append(("ul", v["notes"]))
    rows = [
        [
            r["segment"],
            r["kind"],
            r["mode"],
            rate(r["target_rps"]),
            rate(r["achieved_rps"]),
            str(r["errors"]),
            f"{r['cpu_pct']:.0f}",
            "n/a" if r.get("machine_cpu_pct") is None else f"{r['machine_cpu_pct']:.0f}",
            ms(r.get("loop_lag_p99_ms")),
            "yes" if r["cpu_warning"] else "no",
            "; ".join(r["problems"]),
        ]
        for r in v["segments"]
    ]
    out.append(
        (
            "table",
            [
                "segment",
                "kind",
                "mode",
                "target /s",
                "achieved /s",
                "errors",
                "generator CPU %",
                "machine CPU %",
                "loop lag p99 ms",
                "CPU warning",
                "problems",
            ],
            rows,
        )
    )
    drv = doc.get("driver", {})
    runners = (
        f"distributed: 1 master + {drv.get('workers')} workers"
        if drv.get("distributed")
        else "one local runner"
    )
    facts = [
        f"Locust {drv.get('locust_version', '?')}, {runners}; "
        f"delivery observed over {drv.get('delivery', '?')}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        "Machine: " + ", ".join(f"{k} {v}" for k, v in env.get("machine", {}).items()),
        "Code: " + ", ".join(f"{k} {v}" for k, v in env.get("code", {}).items()),
        "Configuration: " + json.dumps(cfg, sort_keys=True),
    ]
    out.append(("ul", facts))
    return out
