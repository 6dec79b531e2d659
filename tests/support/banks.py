"""Known-bad media banks on disk, as an operator exports them."""

from __future__ import annotations

import json
from pathlib import Path


def bank_manifest(tmp: Path, action: str, lines: list[str], *, csv: bool = False) -> Path:
    """A known-bad bank (``action`` on match) with ``lines`` of signals; its banks.json."""
    d = tmp / "banks"
    d.mkdir(exist_ok=True)
    name = "known.csv" if csv else "known.txt"
    header = ["signal_type,signal_str,collab,category,tags"] if csv else ["# exported bank"]
    (d / name).write_text("\n".join(header + lines) + "\n")
    (d / "banks.json").write_text(
        json.dumps({"banks": [{"name": "known-bad", "action": action, "files": [name]}]})
    )
    return d / "banks.json"
