"""``python -m loadtests compare RUN_A RUN_B``: how run B differs from run A, in three formats.

Product teams compare latency over time: before and after a change,
staging against production, this week against last.  Two runs are not
paired the way the modes of one run are (their rounds did not run back to
back), so each difference here is ``median(B trials) - median(A trials)``
of the per-trial percentile, with each run's trials resampled on their own
(loadtests.report.stats, ``paired=False``); an interval that spans zero reads
"no significant difference".  Per mode, per phase, and for viewing.

A difference is only meaningful when the two runs measured the same thing
the same way.  Differences that change what is measured (the load shape:
rate, trial length, views per share, process counts; the machine: CPU
model and count; the target) make the runs *incomparable*: the command
refuses (exit 2) unless ``--force``, and a forced report says so in its
first sentence.  Differences that may explain a change without making the
comparison meaningless (library and Python versions, the host name, the
SLO, rounds, a run that was not valid) are *caveats*, listed at the top.
The code revision is expected to differ: that is usually the point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.load.scenarios import PHASE_LABELS, TOTAL, VIEW_PREFIX, key, phases_of
from loadtests.report import hdr, headline
from loadtests.report.analysis import Run, analyze
from loadtests.report.formats import Block, delta, ms, to_html, to_markdown
from loadtests.report.stats import NO_DIFFERENCE, bootstrap_difference

SCHEMA = "pointer-dm/loadtest-compare/v1"
JSON_FILE, MD_FILE = "compare.json", "compare.md"
HTML_OUT = "compare.html"
PERCENTILES = {"delta_p50_ms": 50.0, "delta_p99_ms": 99.0, "delta_p999_ms": 99.9}
#: Configuration fields that change what a trial measures (differ -> incomparable).
BLOCKING_CONFIG = ("trial_rate", "trial_s", "view_ratio", "procs", "workers", "quick", "target")
#: Configuration fields that change only the step load or the intervals' width (caveats).
CAVEAT_CONFIG = ("rounds", "warmup_s", "step_rates", "step_s", "refine")
BLOCKING_MACHINE = ("cpu", "cpus", "memory_gib")
CAVEAT_MACHINE = ("hostname", "platform")
EXIT_INCOMPARABLE = 2


class Incomparable(Exception):
    """The runs differ in ways that make their difference meaningless."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def _differs(what: str, a: Any, b: Any) -> str:
    return f"{what}: A {json.dumps(a)} vs B {json.dumps(b)}"


def comparability(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> dict[str, Any]:
    """``blocking`` reasons (refuse without --force) and ``caveats`` (say them loudly)."""
    blocking: list[str] = []
    caveats: list[str] = []
    for side, meta in (("A", meta_a), ("B", meta_b)):
        if not meta.get("config"):
            blocking.append(
                f"run {side} has no recorded configuration (run.json): not a `loadtests run` directory"
            )
    cfg_a, cfg_b = meta_a.get("config", {}), meta_b.get("config", {})
    for name in BLOCKING_CONFIG:
        if cfg_a.get(name) != cfg_b.get(name):
            blocking.append(_differs(name, cfg_a.get(name), cfg_b.get(name)))
    for name in CAVEAT_CONFIG:
        if cfg_a.get(name) != cfg_b.get(name):
            caveats.append(_differs(name, cfg_a.get(name), cfg_b.get(name)))
    modes_a, modes_b = list(meta_a.get("modes", [])), list(meta_b.get("modes", []))
    if modes_a != modes_b:
        caveats.append(_differs("modes", modes_a, modes_b) + " (only the common ones compared)")
    if meta_a.get("slo") != meta_b.get("slo"):
        caveats.append("the SLO differs (saturation points are not comparable)")
    env_a, env_b = meta_a.get("environment", {}), meta_b.get("environment", {})
    mach_a, mach_b = env_a.get("machine", {}), env_b.get("machine", {})
    for name in BLOCKING_MACHINE:
        if mach_a.get(name) != mach_b.get(name):
            blocking.append(_differs(f"machine {name}", mach_a.get(name), mach_b.get(name)))
    for name in CAVEAT_MACHINE:
        if mach_a.get(name) != mach_b.get(name):
            caveats.append(_differs(f"machine {name}", mach_a.get(name), mach_b.get(name)))
    ver_a, ver_b = env_a.get("versions", {}), env_b.get("versions", {})
    for name in sorted(set(ver_a) | set(ver_b)):
        if ver_a.get(name) != ver_b.get(name):
            caveats.append(_differs(f"version of {name}", ver_a.get(name), ver_b.get(name)))
    return {"comparable": not blocking, "blocking": blocking, "caveats": caveats}


def _trial_values(run: Run, scenario: str, phase: str, p: float) -> list[float]:
    out = []
    for s in sorted(run.of("trial", scenario.removeprefix(VIEW_PREFIX)), key=lambda s: s.round):
        h = s.data.hists.get(key(scenario, phase))
        v = hdr.percentile_ms(h, p) if h is not None else None
        if v is not None:
            out.append(v)
    return out


def _merged(run: Run, scenario: str, phase: str) -> dict[str, float | None]:
    h = hdr.merge(
        s.data.hists[key(scenario, phase)]
        for s in run.of("trial", scenario.removeprefix(VIEW_PREFIX))
        if key(scenario, phase) in s.data.hists
    )
    p50, p99, p999 = hdr.percentiles_ms(h, [50.0, 99.0, 99.9])
    return {"p50_ms": _r(p50), "p99_ms": _r(p99), "p999_ms": _r(p999), "count": hdr.count(h)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def scenario_difference(
    a: Run, b: Run, scenario: str, phase: str = TOTAL, percentiles: dict[str, float] | None = None
) -> dict[str, Any]:
    """B minus A of one scenario's entry: merged figures of each run and unpaired CIs."""
    out: dict[str, Any] = {"a": _merged(a, scenario, phase), "b": _merged(b, scenario, phase)}
    for name, p in (percentiles or PERCENTILES).items():
        d = bootstrap_difference(
            _trial_values(a, scenario, phase, p), _trial_values(b, scenario, phase, p), paired=False
        )
        out[name] = d.as_dict()
    return out


def compare_runs(dir_a: Path, dir_b: Path, *, force: bool = False) -> dict[str, Any]:
    """The comparison document; raises :class:`Incomparable` unless ``force``."""
    a, b = Run.load(dir_a), Run.load(dir_b)
    comp = comparability(a.meta, b.meta)
    doc_a, doc_b = analyze(a), analyze(b)
    common = [m for m in doc_a["modes"] if m in doc_b["modes"]]
    if not common:
        raise Incomparable(["the runs have no measured mode in common"])
    if not comp["comparable"] and not force:
        raise Incomparable(comp["blocking"])
    for side, d in (("A", doc_a), ("B", doc_b)):
        if not d["validity"]["valid"]:
            comp["caveats"].insert(
                0, f"run {side} is NOT VALID: " + "; ".join(d["validity"]["problems"][:3])
            )
    comp["forced"] = force and bool(comp["blocking"])
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": time.time(),
        "runs": {
            side: {
                "dir": str(d),
                "valid": bool(x["validity"]["valid"]),
                "code": x.get("environment", {}).get("code", {}),
                "config": x.get("config", {}),
            }
            for side, d, x in (("a", dir_a, doc_a), ("b", dir_b, doc_b))
        },
        "comparability": comp,
        "modes": {},
    }
    for mode in common:
        entry = scenario_difference(a, b, mode)
        entry["phases"] = {
            phase: scenario_difference(a, b, mode, phase, {"delta_p50_ms": 50.0, "delta_p99_ms": 99.0})
            for phase in phases_of(mode)
        }
        view = VIEW_PREFIX + mode
        if "view" in doc_a["modes"][mode] and "view" in doc_b["modes"][mode]:
            entry["view"] = scenario_difference(a, b, view)
        doc["modes"][mode] = entry
    doc["headline"] = headline.between_runs(doc)
    return doc


def blocks(doc: dict[str, Any]) -> list[Block]:
    runs, comp = doc["runs"], doc["comparability"]
    out: list[Block] = [("h1", "Load-test comparison: run B against run A"), ("lead", doc["headline"])]
    ok = comp["comparable"] and all(r["valid"] for r in runs.values())
    if comp.get("forced"):
        out.append(
            (
                "verdict",
                False,
                "INCOMPARABLE RUNS, compared only because --force was "
                "given: " + "; ".join(comp["blocking"]),
            )
        )
    else:
        out.append(
            (
                "verdict",
                ok,
                "Comparable runs" if ok else "Comparable configuration, but a run is not valid",
            )
        )
    out.append(
        (
            "ul",
            [
                f"Run {s.upper()}: {r['dir']} (code "
                f"{r['code'].get('commit', '?')}{' dirty' if r['code'].get('dirty') else ''}"
                f", {'valid' if r['valid'] else 'NOT VALID'})"
                for s, r in runs.items()
            ],
        )
    )
    if comp["caveats"]:
        out.append(("p", "Caveats (differences that may explain a change):"))
        out.append(("ul", ["CAVEAT: " + c for c in comp["caveats"]]))
    out.append(
        (
            "p",
            "Each difference is B minus A: the median over B's trials minus the median "
            "over A's trials of each trial's percentile, with a bootstrap 95% interval "
            "(each run's trials resampled on their own: runs are not paired); "
            f'"{NO_DIFFERENCE}" when the interval spans zero.',
        )
    )
    out.append(("h2", "Whole share"))
    rows = []
    for mode, m in doc["modes"].items():
        rows.append(
            [
                mode,
                ms(m["a"]["p50_ms"]),
                ms(m["b"]["p50_ms"]),
                delta(m["delta_p50_ms"]),
                ms(m["a"]["p99_ms"]),
                ms(m["b"]["p99_ms"]),
                delta(m["delta_p99_ms"]),
                delta(m["delta_p999_ms"]),
            ]
        )
    out.append(
        (
            "table",
            [
                "mode",
                "A p50 ms",
                "B p50 ms",
                "Δp50 ms [95% CI]",
                "A p99 ms",
                "B p99 ms",
                "Δp99 ms [95% CI]",
                "Δp99.9 ms [95% CI]",
            ],
            rows,
        )
    )
    out.append(("h2", "Per phase"))
    rows = []
    for mode, m in doc["modes"].items():
        for phase, d in m["phases"].items():
            rows.append(
                [
                    mode,
                    PHASE_LABELS.get(phase, phase),
                    ms(d["a"]["p50_ms"]),
                    ms(d["b"]["p50_ms"]),
                    delta(d["delta_p50_ms"]),
                    ms(d["a"]["p99_ms"]),
                    ms(d["b"]["p99_ms"]),
                    delta(d["delta_p99_ms"]),
                ]
            )
    out.append(
        (
            "table",
            ["mode", "phase", "A p50", "B p50", "Δp50 [95% CI]", "A p99", "B p99", "Δp99 [95% CI]"],
            rows,
        )
    )
    views = {mode: m["view"] for mode, m in doc["modes"].items() if "view" in m}
    if views:
        out.append(("h2", "Re-opening a shared video (viewing)"))
        rows = [
            [
                mode,
                ms(v["a"]["p50_ms"]),
                ms(v["b"]["p50_ms"]),
                delta(v["delta_p50_ms"]),
                delta(v["delta_p99_ms"]),
            ]
            for mode, v in views.items()
        ]
        out.append(("table", ["mode", "A p50 ms", "B p50 ms", "Δp50 [95% CI]", "Δp99 [95% CI]"], rows))
    return out


def write_compare(dir_a: Path, dir_b: Path, out: Path, *, force: bool = False) -> dict[str, Path]:
    doc = compare_runs(dir_a, dir_b, force=force)
    out.mkdir(parents=True, exist_ok=True)
    bs = blocks(doc)
    paths = {"json": out / JSON_FILE, "md": out / MD_FILE, "html": out / HTML_OUT}
    paths["json"].write_text(json.dumps(doc, indent=1))
    paths["md"].write_text(to_markdown(bs))
    paths["html"].write_text(to_html(bs))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_a", type=Path, help="the baseline run directory")
    p.add_argument("run_b", type=Path, help="the run compared with it")
    p.add_argument(
        "--out",
        type=Path,
        help=f"where to write {JSON_FILE}, {MD_FILE}, {HTML_OUT} "
        "(default: RUN_B/compare-<name of RUN_A>)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="compare incomparable runs anyway (the report says so loudly)",
    )
    a = p.parse_args(argv)
    out = a.out or a.run_b / f"compare-{a.run_a.resolve().name}"
    try:
        paths = write_compare(a.run_a, a.run_b, out, force=a.force)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Incomparable as exc:
        print("error: the runs are not comparable:", file=sys.stderr)
        for reason in exc.reasons:
            print(f"  - {reason}", file=sys.stderr)
        print("(--force compares them anyway and flags the report)", file=sys.stderr)
        return EXIT_INCOMPARABLE
    doc = json.loads(paths["json"].read_text())
    print(doc["headline"])
    for c in doc["comparability"]["caveats"]:
        print(f"CAVEAT: {c}")
    for kind, path in paths.items():
        print(f"{kind:>4}: {path}")
    return 0
