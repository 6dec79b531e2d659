"""The report's blocks as Markdown, plain-text tables and one self-contained HTML page
(inline CSS, no scripts, no network), and the number formats every section uses."""

from __future__ import annotations

import html
from typing import Any

from loadtests.report.stats import NO_DIFFERENCE

Block = tuple[Any, ...]


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
