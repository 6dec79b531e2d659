"""docs/safety.md's mode-by-mode table is the report appendix's, and names real tests."""

from __future__ import annotations

import re

from loadtests.report import safety_table
from loadtests.report.formats import table_markdown

from ..support.paths import REPO_ROOT

ROOT = REPO_ROOT


def test_safety_table_in_docs_matches_the_report_appendix() -> None:
    text = (ROOT / "docs" / "safety.md").read_text()
    block = text.split("<!-- safety-table:start -->")[1].split("<!-- safety-table:end -->")[0]
    assert block.strip() == table_markdown(safety_table.HEAD, safety_table.ROWS).strip()


def test_every_test_the_safety_table_names_exists() -> None:
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
    names = safety_table.test_names()
    assert len(names) >= 15
    assert [n for n in names if n not in defined] == []
