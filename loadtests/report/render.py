"""``python -m loadtests report RUN_DIR``: the comparison report as JSON, Markdown and HTML.

One analysis (loadtests.report.analysis) feeds all three, so they always agree:
``report.json`` for machines, ``report.md`` for a ticket or a pull
request, ``report.html`` for people: one self-contained page (inline CSS,
plots as embedded SVG, no scripts, no network) that opens offline.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import sys
from pathlib import Path
from typing import Any

from loadtests.load.scenarios import PHASE_LABELS, SEGMENTS, TOTAL, key
from loadtests.report import hdr, headline, plots, safety_table
from loadtests.report.analysis import Run, analyze
from loadtests.report.stats import NO_DIFFERENCE

JSON_FILE, MD_FILE, HTML_FILE = "report.json", "report.md", "report.html"
Block = tuple[Any, ...]


# -- formatting ------------------------------------------------------------------------------


def ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def delta(d: dict[str, Any] | None) -> str:
    """``+1.23 [+0.40, +2.10]``, or the estimate and "no significant difference"."""
    if not d or d.get("estimate") is None:
        return "n/a"
    est = f"{d['estimate']:+.2f}"
    if d.get("ci_low") is None:
        return f"{est} (not enough trials)"
    ci = f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
    return f"{est} {ci}" + ("" if d.get("significant") else f" {NO_DIFFERENCE}")


def saturation_text(m: dict[str, Any]) -> str:
    v = m.get("saturation_rps")
    if v is None:
        return "below the lowest step" if "missed even" in m.get("saturation_note", "") else "n/a"
    text = f">= {v:g}" if m.get("saturation_note", "").startswith("not reached") else f"{v:g}"
    kind = (m.get("saturation_bound") or {}).get("bound")
    return f"{text} ({kind})" if kind in ("generator-bound", "machine-bound") else text


def estimate(d: dict[str, Any] | None, fmt: str = "{:.0f}", unit: str = "") -> str:
    """``412 [380, 455]`` from a bootstrap estimate; "n/a" without one."""
    if not d or d.get("estimate") is None:
        return "n/a"
    text = fmt.format(d["estimate"]) + unit
    if d.get("ci_low") is None:
        return text
    return f"{text} [{fmt.format(d['ci_low'])}, {fmt.format(d['ci_high'])}]"


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
            "at the start of this run: the sender's device deriving the grant from its "
            "capability, its seal, the recipient's open (CPU time per call), the "
            "edge's check of the derived grant on the first fetch and the binding "
            "of the first redeemer (one Redis round trip, wall clock). The measured "
            "overhead is the Δp50 vs plain above; its multiple of the floor says how "
            "much of it is design and measurement rather than cryptography.",
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
                rate(f.get("derive_us")),
                rate(f["seal_us"]),
                rate(f["open_us"]),
                rate(f["grant_check_us"]),
                "not measured" if f["binding_rtt_us"] is None else rate(f["binding_rtt_us"]),
                f"{f['floor_ms']:.3f}",
                delta(d),
                "n/a" if f["multiple"] is None else f"{f['multiple']:.1f}x",
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
                "measured Δp50 ms [95% CI]",
                "multiple of the floor",
            ],
            rows,
        )
    )
    return out


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


# -- the report as blocks (rendered twice: Markdown and HTML) -----------------------------------


def summary_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "mode",
        "shares",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "shares/s",
        "errors",
        "saturation /s",
        "Δp50 vs plain ms [95% CI]",
        "Δp99 vs plain ms [95% CI]",
    ]
    rows = []
    for mode, m in doc["modes"].items():
        rows.append(
            [
                mode,
                str(m["count"]),
                ms(m["p50_ms"]),
                ms(m["p99_ms"]),
                ms(m["p999_ms"]),
                rate(m["rps"]),
                str(m["errors"]),
                saturation_text(m),
                delta(m.get("delta_p50_ms")) if mode != "plain" else "(baseline)",
                delta(m.get("delta_p99_ms")) if mode != "plain" else "(baseline)",
            ]
        )
    return head, rows


def blocks(doc: dict[str, Any], images: dict[str, str]) -> list[Block]:
    cfg, modes = doc.get("config", {}), doc["modes"]
    validity = doc["validity"]
    out: list[Block] = [
        ("h1", "Sharing a video by DM: plain, plain + scanning, sealed, post-quantum sealed"),
        ("lead", doc.get("headline") or headline.single_run(doc)),
    ]
    when = datetime.datetime.fromtimestamp(doc["generated_at"], datetime.UTC)
    if cfg:
        out.append(
            (
                "p",
                f"Generated {when:%Y-%m-%d %H:%M} UTC. Each mode was run in "
                f"{cfg.get('rounds', '?')} interleaved trials of "
                f"{cfg.get('trial_s', '?')} s at {cfg.get('trial_rate', '?')} shares/s "
                "(open model, latency from the intended start), plus views at "
                f"{cfg.get('view_ratio', 0):g}x that rate; then a step load. "
                f"Target: {cfg.get('target', '?')}.",
            )
        )
    else:
        out.append(
            (
                "p",
                f"Generated {when:%Y-%m-%d %H:%M} UTC from a plain Locust run "
                "(locust -f loadtests/load/locustfile.py --hdr-out): one open-ended segment, "
                "so there are no repeated trials to compare and no step load.",
            )
        )
    verdict = "VALID" if validity["valid"] else "NOT VALID: " + "; ".join(validity["problems"])
    out.append(("verdict", validity["valid"], f"Measurement: {verdict}"))
    out.append(("h2", "Whole share, merged over trials"))
    out.append(
        (
            "p",
            "A share is everything from the moment the sender was due to start "
            "(grant, seal, send) until the recipient has been pushed the message, "
            f"opened it and played the first range and {SEGMENTS} more segments. "
            "Percentiles come from the HDR histogram merged over "
            "all trials (below 1000 shares, p99.9 is the slowest one); differences are "
            "medians over paired rounds with bootstrap "
            f'95% intervals, "{NO_DIFFERENCE}" when the interval spans zero. '
            f"Saturation: the highest step rate meeting the SLO "
            f"({doc['slo']['text']}).",
        )
    )
    head, rows = summary_rows(doc)
    out.append(("table", head, rows))
    out.append(("img", images.get("spectrum"), "Percentile spectrum of the modes overlaid"))
    out += cost_blocks(doc)
    out += floor_blocks(doc)
    out.append(("h2", "Per phase (p50 / p99 ms, merged over trials)"))
    phases = ("grant", "seal", "send", "delivery", "open", "first_byte", "segment", TOTAL)
    rows = []
    for phase in phases:
        row = [PHASE_LABELS.get(phase, phase)]
        for mode in modes:
            t = modes[mode]["phases"].get(phase)
            row.append(f"{ms(t['p50_ms'])} / {ms(t['p99_ms'])}" if t and t["count"] else "-")
        rows.append(row)
    out.append(("table", ["phase", *modes], rows))
    comps = doc.get("comparisons", {})
    if comps:
        rows = []
        for mode, c in comps.items():
            for phase, d in c.get("phases", {}).items():
                rows.append(
                    [
                        mode,
                        PHASE_LABELS.get(phase, phase),
                        delta(d["delta_p50_ms"]),
                        delta(d["delta_p99_ms"]),
                    ]
                )
        out.append(("p", "Differences of the phases both modes share (ms, vs plain):"))
        out.append(("table", ["mode", "phase", "Δp50 [95% CI]", "Δp99 [95% CI]"], rows))
    out.append(("img", images.get("phases"), "Per-phase stacked bars"))
    views = {m: v["view"] for m, v in modes.items() if "view" in v}
    if views:
        out.append(("h2", "Re-opening a shared video (viewing)"))
        out.append(
            (
                "p",
                "A viewer reads the message again (a plain read mints a new pointer; "
                "a sealed one is decrypted again) and plays it.",
            )
        )
        rows = []
        for mode, v in views.items():
            dv = comps.get(mode, {}).get("view", {})
            rows.append(
                [
                    mode,
                    ms(v["p50_ms"]),
                    ms(v["p99_ms"]),
                    ms(v["p999_ms"]),
                    rate(v["rps"]),
                    str(v["errors"]),
                    delta(dv.get("delta_p50_ms")) if dv else "(baseline)",
                    delta(dv.get("delta_p99_ms")) if dv else "(baseline)",
                ]
            )
        out.append(
            (
                "table",
                [
                    "mode",
                    "p50 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "views/s",
                    "errors",
                    "Δp50 [95% CI]",
                    "Δp99 [95% CI]",
                ],
                rows,
            )
        )
    out.append(("h2", "Throughput and saturation (step load)"))
    rows = [
        [
            s["mode"],
            rate(s["target_rps"]),
            rate(s["achieved_rps"]),
            ms(s["p50_ms"]),
            ms(s["p99_ms"]),
            f"{s['error_pct']:.2f}",
            "yes" if s["meets_slo"] else "no",
            "; ".join(s["problems"]),
        ]
        for s in doc["steps"]
    ]
    out.append(
        (
            "table",
            ["mode", "target /s", "achieved /s", "p50 ms", "p99 ms", "errors %", "SLO met", "notes"],
            rows,
        )
    )
    out.append(
        (
            "ul",
            [f"{m}: {saturation_text(v)} shares/s ({v['saturation_note']})" for m, v in modes.items()],
        )
    )
    out.append(("img", images.get("throughput"), "Latency against throughput"))
    out.append(("h2", "Latency over time"))
    out.append(("img", images.get("timeline"), "Latency over time"))
    out.append(("h2", "Trials"))
    rows = []
    for mode, m in modes.items():
        for t in m["trials"]:
            rows.append(
                [
                    mode,
                    str(t["round"]),
                    ms(t["p50_ms"]),
                    ms(t["p99_ms"]),
                    ms(t["p999_ms"]),
                    rate(t["rps"]),
                    str(t["errors"]),
                ]
            )
    out.append(("table", ["mode", "round", "p50 ms", "p99 ms", "p99.9 ms", "shares/s", "errors"], rows))
    out += validity_blocks(doc)
    out.append(("h2", "Appendix: what each mode lets a safety team do"))
    out.append(
        (
            "p",
            "Row by row against the seed articles' claims; each row names the test "
            "that shows it (docs/safety.md). The plain+scan row above measures the "
            "latency of keeping eyes on; the sealed rows the latency of keeping "
            "eyes off.",
        )
    )
    out.append(("table", safety_table.HEAD, safety_table.ROWS))
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


# -- rendering -----------------------------------------------------------------------------------


def to_markdown(bs: list[Block]) -> str:
    lines: list[str] = []
    for b in bs:
        kind = b[0]
        if kind == "h1":
            lines += [f"# {b[1]}", ""]
        elif kind == "h2":
            lines += [f"## {b[1]}", ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "verdict":
            lines += [f"**{b[2]}**", ""]
        elif kind == "lead":
            lines += [f"> **{b[1]}**", ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in b[1]] + [""]
        elif kind == "table":
            lines += [table_markdown(b[1], b[2]), ""]
        elif kind == "img":
            lines += [f"_Plot: {b[2]} (see report.html)_", ""]
    return "\n".join(lines)


def table_markdown(head: list[str], rows: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def table_text(head: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    )


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f1f3f5} td:first-child,th:first-child{text-align:left}
.verdict{padding:.6em 1em;border-radius:4px;font-weight:600}
.ok{background:#e6f4ea;color:#1e4620}.bad{background:#fdecea;color:#611a15}
figure{margin:1em 0}figure img{max-width:100%;height:auto}figcaption{font-size:.8em;color:#666}
li{font-size:.9em}
.lead{font-size:1.15em;font-weight:600;border-left:4px solid #1f6fb4;padding-left:.7em}
"""


def to_html(bs: list[Block]) -> str:
    e = html.escape
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{e(next(b[1] for b in bs if b[0] == 'h1'))}</title>",
        f"<style>{CSS}</style></head><body>",
    ]
    for b in bs:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "verdict":
            parts.append(f'<p class="verdict {"ok" if b[1] else "bad"}">{e(b[2])}</p>')
        elif kind == "lead":
            parts.append(f'<p class="lead">{e(b[1])}</p>')
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            parts.append(
                "<table><thead><tr>"
                + "".join(f"<th>{e(h)}</th>" for h in b[1])
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
                + "</tbody></table>"
            )
        elif kind == "img" and b[1]:
            parts.append(
                f'<figure><img src="{b[1]}" alt="{e(b[2])}"><figcaption>{e(b[2])}</figcaption></figure>'
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def render_plots(run: Run, doc: dict[str, Any]) -> dict[str, str]:
    modes = list(doc["modes"])
    merged = {
        m: hdr.merge(
            s.data.hists[key(m, TOTAL)] for s in run.of("trial", m) if key(m, TOTAL) in s.data.hists
        )
        for m in modes
    }
    phases = {m: doc["modes"][m]["phases"] for m in modes}
    return {
        "spectrum": plots.spectrum(merged),
        "phases": plots.phase_bars(phases),
        "throughput": plots.latency_vs_throughput(
            doc["steps"],
            {m: doc["modes"][m]["saturation_rps"] for m in modes},
            float(doc["slo"]["p99_ms"]),
        ),
        "timeline": plots.over_time(doc["timeline"], doc["segments"]),
    }


def write_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Analyze ``run_dir`` and write the three files; returns their paths."""
    run = Run.load(run_dir)
    doc = analyze(run)
    out = out_dir or run_dir
    out.mkdir(parents=True, exist_ok=True)
    bs = blocks(doc, render_plots(run, doc))
    paths = {"json": out / JSON_FILE, "md": out / MD_FILE, "html": out / HTML_FILE}
    paths["json"].write_text(json.dumps(doc, indent=1))
    paths["md"].write_text(to_markdown(bs))
    paths["html"].write_text(to_html(bs))
    return paths


def summary_text(doc: dict[str, Any]) -> str:
    head, rows = summary_rows(doc)
    v = doc["validity"]
    lines = [
        doc.get("headline") or headline.single_run(doc),
        "",
        table_text(head, rows),
        "",
        "VALID measurement" if v["valid"] else "NOT VALID: " + "; ".join(v["problems"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests report", description=__doc__)
    p.add_argument("run_dir", type=Path, help="a run directory (segments.jsonl, driver.json)")
    p.add_argument("--out", type=Path, help="where to write the report (default: run_dir)")
    a = p.parse_args(argv)
    try:
        paths = write_report(a.run_dir, a.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    doc = json.loads(paths["json"].read_text())
    print(summary_text(doc))
    for kind, path in paths.items():
        print(f"{kind:>4}: {path}")
    return 0
