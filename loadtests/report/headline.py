"""The one sentence a report opens with: what a product manager can quote without the tables.

A table of percentiles and intervals is for engineers; whoever decides on
sealed mode needs one line that carries the effect, its uncertainty and
the scale it sits on ("Sealed adds 1.5 ms (95 % CI 0.6 to 2.6) to a 9.6 ms
share").  The sentence is built from the same numbers as the tables (the
report's JSON), never from separate arithmetic, and says "no significant
difference" exactly when the tables do, so the quote cannot outrun the
evidence.  An invalid measurement says so in the same sentence.
"""

from __future__ import annotations

from typing import Any

#: How a mode is named in prose; unknown modes (added later) keep their own name.
MODE_NAMES = {
    "plain": "plain",
    "plain+scan": "plain with scanning",
    "sealed": "sealed",
    "sealed-pq": "post-quantum sealed",
}


def mode_name(mode: str) -> str:
    return MODE_NAMES.get(mode, mode)


def _num(v: float) -> str:
    return f"{abs(v):.1f}" if abs(v) >= 0.05 else "0.0"


def _ci(d: dict[str, Any]) -> str:
    conf = round(100 * float(d.get("confidence", 0.95)))
    return f"{conf} % CI {d['ci_low']:+.1f} to {d['ci_high']:+.1f} ms"


def _effect(d: dict[str, Any] | None, verb_up: str, verb_down: str) -> str | None:
    """``adds 1.5 ms (95 % CI +0.6 to +2.6 ms)``, or the no-difference wording."""
    if not d or d.get("estimate") is None:
        return None
    if d.get("ci_low") is None:
        return (
            f"{verb_up if d['estimate'] >= 0 else verb_down} {_num(d['estimate'])} ms "
            "(too few trials for an interval)"
        )
    if not d.get("significant"):
        return f"makes no significant difference ({_ci(d)})"
    verb = verb_up if d["estimate"] > 0 else verb_down
    return f"{verb} {_num(d['estimate'])} ms ({_ci(d)})"


def single_run(doc: dict[str, Any]) -> str:
    """The analysis document of one run -> its opening sentence."""
    modes: dict[str, Any] = doc.get("modes", {})
    if not modes:
        return "No shares were measured."
    valid = bool(doc.get("validity", {}).get("valid"))
    tail = "" if valid else " This measurement is NOT VALID (see Validity): do not quote it."
    base = modes.get("plain")
    if base is None or base.get("p50_ms") is None:
        mode, m = next(iter(modes.items()))
        return f"A {mode_name(mode)} share takes {m.get('p50_ms') or 0:.1f} ms at the median." + tail
    clauses = []
    for mode, m in modes.items():
        if mode == "plain":
            continue
        effect = _effect(m.get("delta_p50_ms"), "adds", "saves")
        if effect is not None:
            clauses.append(f"{mode_name(mode)} {effect}")
    if not clauses:
        return f"A plain share takes {base['p50_ms']:.1f} ms at the median." + tail
    first = clauses[0][0].upper() + clauses[0][1:]
    text = f"{first} to a {base['p50_ms']:.1f} ms plain share at the median"
    return "; ".join([text, *clauses[1:]]) + "." + tail


def between_runs(doc: dict[str, Any]) -> str:
    """The comparison document of two runs -> its opening sentence (B against A)."""
    modes: dict[str, Any] = doc.get("modes", {})
    clauses = []
    for mode, m in modes.items():
        d = m.get("delta_p50_ms")
        a, b = m.get("a", {}).get("p50_ms"), m.get("b", {}).get("p50_ms")
        if not d or d.get("estimate") is None or a is None or b is None:
            continue
        if d.get("ci_low") is not None and not d.get("significant"):
            clauses.append(
                f"a {mode_name(mode)} share shows no significant difference "
                f"({a:.1f} -> {b:.1f} ms, {_ci(d)})"
            )
        else:
            way = "slower" if d["estimate"] > 0 else "faster"
            ci = f", {_ci(d)}" if d.get("ci_low") is not None else ", too few trials"
            clauses.append(
                f"a {mode_name(mode)} share is {_num(d['estimate'])} ms {way} "
                f"({a:.1f} -> {b:.1f} ms{ci})"
            )
    if not clauses:
        return "The two runs have no mode with measurements in common."
    text = "At the median, from run A to run B, " + "; ".join(clauses) + "."
    comp = doc.get("comparability", {})
    if not comp.get("comparable", True):
        text += " The runs are NOT COMPARABLE (forced): " + "; ".join(comp.get("blocking", []))
        text += "."
    elif not all(r.get("valid") for r in doc.get("runs", {}).values()):
        text += " At least one run is NOT VALID: do not quote this."
    return text
