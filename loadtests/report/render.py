"""``python -m loadtests report RUN_DIR``: the comparison report as JSON, Markdown and HTML.

One analysis (loadtests.report.analysis) feeds all three, so they always agree:
``report.json`` for machines, ``report.md`` for a ticket or a pull
request, ``report.html`` for people: one self-contained page (inline CSS,
plots as embedded SVG, no scripts, no network) that opens offline.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from loadtests.load.scenarios import PHASE_LABELS, SEGMENTS, TOTAL, key
from loadtests.report import hdr, headline, plots, safety_table
from loadtests.report.analysis import Run, analyze
from loadtests.report.formats import (
    Block,
    delta,
    ms,
    rate,
    saturation_text,
    table_text,
    to_html,
    to_markdown,
)
from loadtests.report.sections import cost_blocks, floor_blocks, validity_blocks
from loadtests.report.stats import NO_DIFFERENCE

JSON_FILE, MD_FILE, HTML_FILE = "report.json", "report.md", "report.html"


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
