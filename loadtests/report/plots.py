"""The report's four plots, drawn with matplotlib as SVG and embedded as data URIs.

matplotlib (not a JavaScript charting library) because the page must be
one self-contained file that opens offline and in any mail client or
ticket: static SVG is a few tens of kilobytes per plot, needs no script,
and prints well.  Each SVG is embedded as a ``data:`` URI so the plots'
internal ids cannot clash with each other or with the page.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files only

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from loadtests.load.scenarios import PHASE_LABELS, SHARE_PHASES
from loadtests.report import hdr

COLORS = {"plain": "#1f6fb4", "plain+scan": "#7b4fb4", "sealed": "#e07b00", "sealed-pq": "#2a9d4b"}
KIND_SHADES = {"warmup": "#eeeeee", "trial": "#f7fbff", "step": "#fff7ec"}
PHASE_COLORS = {
    "grant": "#8c564b",
    "seal": "#d62728",
    "delivery": "#1f77b4",
    "open": "#9467bd",
    "first_byte": "#2ca02c",
    "segment": "#bcbd22",
}
plt.rcParams.update(
    {
        "svg.fonttype": "none",
        "svg.hashsalt": "loadtests",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def _data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _color(mode: str) -> str:
    return COLORS.get(mode, "#555555")


def spectrum(hists: dict[str, Any]) -> str:
    """Latency by percentile, x in "nines" (log of 1/(1-p)), one line per mode overlaid."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    top = 1.0
    for mode, h in hists.items():
        pts = hdr.spectrum(h, max_nines=4.0)
        if not pts:
            continue
        xs = [1.0 / (1.0 - p / 100.0) if p < 100 else 1e4 for p, _ in pts]
        ys = [v for _, v in pts]
        top = max(top, xs[-1])
        ax.plot(xs, ys, color=_color(mode), label=f"{mode} (n={hdr.count(h)})", lw=1.6)
    ax.set_xscale("log")
    ticks = [t for t in (1, 2, 10, 100, 1000, 10000) if t <= max(top, 10)]
    labels = {1: "0", 2: "50", 10: "90", 100: "99", 1000: "99.9", 10000: "99.99"}
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: labels.get(round(x), "")))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("percentile")
    ax.set_ylabel("whole share, ms")
    ax.set_title("Percentile spectrum (merged over all trials)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, frameon=False)
    return _data_uri(fig)


def latency_vs_throughput(
    steps: list[dict[str, Any]], saturation: dict[str, float | None], slo_ms: float
) -> str:
    """p99 and p50 against achieved rate for every step, with each mode's saturation point."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for mode in dict.fromkeys(s["mode"] for s in steps):
        mine = sorted(
            (s for s in steps if s["mode"] == mode and s["p99_ms"] is not None),
            key=lambda s: s["target_rps"],
        )
        if not mine:
            continue
        xs = [s["achieved_rps"] for s in mine]
        ax.plot(xs, [s["p99_ms"] for s in mine], "o-", color=_color(mode), label=f"{mode} p99")
        ax.plot(
            xs, [s["p50_ms"] for s in mine], "o:", color=_color(mode), alpha=0.6, label=f"{mode} p50"
        )
        sat = saturation.get(mode)
        at = [s for s in mine if s["target_rps"] == sat]
        if at:
            ax.plot(
                [at[0]["achieved_rps"]],
                [at[0]["p99_ms"]],
                "*",
                ms=16,
                color=_color(mode),
                markeredgecolor="black",
                label=f"{mode} saturation {sat:g}/s",
            )
    ax.axhline(slo_ms, color="#c00", ls="--", lw=1, label=f"SLO {slo_ms:g} ms")
    if not steps:
        ax.text(0.5, 0.5, "no step load in this run", transform=ax.transAxes, ha="center")
    ax.set_yscale("log")
    ax.set_xlabel("achieved shares/s")
    ax.set_ylabel("whole share, ms")
    ax.set_title("Latency against throughput (step load)")
    ax.grid(True, alpha=0.3)
    _legend(ax, frameon=False, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return _data_uri(fig)


def phase_bars(phases: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Per mode, the phases' median latencies stacked (delivery includes the send)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    modes = list(phases)
    shown = [p for p in SHARE_PHASES if p != "send"]
    for i, mode in enumerate(modes):
        left = 0.0
        for phase in shown:
            row = phases[mode].get(phase)
            v = row.get("p50_ms") if row else None
            if not v:
                continue
            width = float(v) * (3 if phase == "segment" else 1)
            ax.barh(
                i,
                width,
                left=left,
                color=PHASE_COLORS.get(phase, "#999"),
                edgecolor="white",
                label=PHASE_LABELS[phase],
            )
            left += width
        total = phases[mode].get("total", {}).get("p50_ms")
        if total:
            ax.plot([total], [i], "k|", ms=18, mew=2)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    if uniq:
        ax.legend(
            uniq.values(),
            uniq.keys(),
            frameon=False,
            fontsize=7,
            ncol=3,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.22),
        )
    ax.set_yticks(range(len(modes)), modes)
    ax.invert_yaxis()
    ax.set_xlabel("ms (median of each phase; segments x3; | = median whole share)")
    ax.set_title("Where a share's time goes (p50 per phase)")
    return _data_uri(fig)


def over_time(points: dict[str, list[list[float]]], spans: list[dict[str, Any]]) -> str:
    """p99 (and p50) of the whole share per second, over the run, segments shaded by kind."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    for s in spans:
        ax.axvspan(s["start_s"], s["end_s"], color=KIND_SHADES.get(s["kind"], "#fafafa"), lw=0)
    for mode, pts in points.items():
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[2] for p in pts], ".", color=_color(mode), ms=4, label=f"{mode} p99")
        ax.plot(xs, [p[1] for p in pts], ".", color=_color(mode), ms=2, alpha=0.4)
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the run started (grey: warm-up, blue: trials, orange: steps)")
    ax.set_ylabel("whole share, ms")
    ax.set_title("Latency over time (per second; small dots p50)")
    ax.grid(True, alpha=0.3)
    _legend(ax, frameon=False, fontsize=7)
    return _data_uri(fig)
