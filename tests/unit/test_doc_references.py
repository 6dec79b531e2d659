"""The docs name real things: every repository path (``dm/store.py``), every module symbol
written as ``path/module.Symbol.member`` and every ``python -m`` entry point in the README,
the docs, the Makefile and the container files exists.  A restructuring that moves code
fails here until the docs follow it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from ..support.paths import REPO_ROOT

DOCS = [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "README.md"]
ENTRY_FILES = [*DOCS, REPO_ROOT / "Makefile", REPO_ROOT / "Dockerfile", REPO_ROOT / "docker-compose.yml"]
REF = re.compile(r"`((?:service_kernel|cdn_auth|dm|loadtests|tests|deploy|docs|\.ci)/[\w/.-]*\w)`")
PLAIN_SUFFIXES = {
    "py",
    "md",
    "lua",
    "json",
    "toml",
    "yml",
    "yaml",
    "conf",
    "template",
    "sh",
    "txt",
    "html",
    "js",
    "css",
    "csv",
    "key",
}


def _defines(source: str, name: str) -> bool:
    return (
        re.search(
            rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name)}\b"
            rf"|^\s*{re.escape(name)}\s*[:=]",
            source,
            re.M,
        )
        is not None
    )


def dangling(ref: str) -> str | None:
    """Why ``ref`` names nothing, or None if it names a file, a folder or a defined symbol."""
    if (REPO_ROOT / ref).exists():
        return None
    head, _, last = ref.rpartition("/")
    module, _, symbols = last.partition(".")
    source_file = REPO_ROOT / head / f"{module}.py"
    if not source_file.exists() or symbols in PLAIN_SUFFIXES:
        return "no such file"
    source = source_file.read_text()
    missing = [s for s in symbols.split(".") if not _defines(source, s)]
    return f"{', '.join(missing)} not defined in {head}/{module}.py" if missing else None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_and_symbol_a_doc_names_exists(doc: Path) -> None:
    refs = sorted(set(REF.findall(doc.read_text())))
    problems = [f"{r}: {why}" for r in refs if (why := dangling(r))]
    assert problems == []


def test_every_python_dash_m_entry_point_exists() -> None:
    modules = sorted(
        {m for f in ENTRY_FILES for m in re.findall(r"python3? -m ([a-z_][\w.]*[a-z_])", f.read_text())}
    )
    assert "loadtests.bench" in modules
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert missing == []


def test_the_checker_catches_what_it_is_for() -> None:
    assert dangling("dm/store.py") is None
    assert dangling("service_kernel/encoding.b64url_decode") is None
    assert dangling("cdn_auth/encoding.py") == "no such file"
    assert dangling("dm/store.DmStore.no_such_method") == "no_such_method not defined in dm/store.py"
