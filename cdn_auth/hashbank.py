"""Hash banks: lists of known-bad media hashes, and what to do with a match.

A bank holds exact hashes (MD5, SHA-256) and perceptual ones (PDQ), and an
action: ``refuse`` (the upload fails, 403 ``media_banked``) or ``hold`` (the
media is registered with status ``held``: no edge serves it until a
moderator decides).

Files are read in the forms hash-sharing tools export:

* ThreatExchange's CSV (``threatexchange dataset -P --csv``): a header row
  with ``signal_type`` and ``signal_str`` columns (others ignored);
* one signal per line, ``<signal_type> <signal>`` or ``<signal_type>,<signal>``
  (``threatexchange dataset -P -S``, HMA's bank exports);
* ``#`` comments and blank lines are skipped.

Signal types: ``pdq``; ``video_md5``, ``photo_md5``, ``md5``;
``video_sha256``, ``photo_sha256``, ``sha256``.  Anything else is refused
with the line number (a bank silently missing entries is worse than none).

The manifest (``EdgeSettings.bank_manifest``) is JSON:
``{"banks": [{"name": "ncmec-sample", "action": "refuse", "files": ["a.csv"]}]}``
with files relative to the manifest.  Entries added at run time (a
moderator's "add to bank") live in Redis and are merged on each match.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from service_kernel.files import read_json_list

from .errors import BankFormatError as BankFormatError
from .pdq_hex import DEFAULT_THRESHOLD, parse_hex

if TYPE_CHECKING:
    from .pdq_index import PdqIndex

ACTIONS = ("refuse", "hold")
SIGNAL_TYPES = {
    "pdq": "pdq",
    "md5": "md5",
    "video_md5": "md5",
    "photo_md5": "md5",
    "sha256": "sha256",
    "video_sha256": "sha256",
    "photo_sha256": "sha256",
}
_HEX = {
    "md5": re.compile(r"[0-9a-f]{32}"),
    "sha256": re.compile(r"[0-9a-f]{64}"),
    "pdq": re.compile(r"[0-9a-f]{64}"),
}
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_FILE_BYTES = 512 * 1024 * 1024


def normalize(signal_type: str, signal: str) -> tuple[str, str]:
    """(kind, lower-case hex) for a signal, or BankFormatError."""
    kind = SIGNAL_TYPES.get(signal_type.strip().lower())
    if kind is None:
        raise BankFormatError(f"unknown signal type {signal_type[:40]!r}")
    value = signal.strip().lower()
    if _HEX[kind].fullmatch(value) is None:
        raise BankFormatError(f"{signal_type} signal is not {kind} hex")
    return kind, value


def parse_signals(text: str) -> list[tuple[str, str]]:
    """Signals from one file's text (any of the accepted forms)."""
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    out: list[tuple[str, str]] = []
    if "signal_type" in first and "signal_str" in first:
        for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            try:
                out.append(normalize(row.get("signal_type") or "", row.get("signal_str") or ""))
            except BankFormatError as exc:
                raise BankFormatError(f"line {n}: {exc}") from None
        return out
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[,\s]+", line, maxsplit=2)
        if len(parts) < 2:
            raise BankFormatError(f"line {n}: expected '<signal_type> <signal>'")
        try:
            out.append(normalize(parts[0], parts[1]))
        except BankFormatError as exc:
            raise BankFormatError(f"line {n}: {exc}") from None
    return out


@dataclass
class Bank:
    """One bank's signals in memory; the PDQ index is rebuilt when entries are added."""

    name: str
    action: str
    threshold: int = DEFAULT_THRESHOLD
    md5: set[str] = field(default_factory=set)
    sha256: set[str] = field(default_factory=set)
    pdq: list[bytes] = field(default_factory=list)
    _index: PdqIndex | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if _NAME_RE.fullmatch(self.name) is None:
            raise BankFormatError(f"bank name {self.name[:40]!r} is not [a-z0-9_-]")
        if self.action not in ACTIONS:
            raise BankFormatError(f"bank action must be one of {ACTIONS}")

    def add(self, signals: Iterable[tuple[str, str]]) -> None:
        seen = set(self.pdq)
        for kind, value in signals:
            if kind == "md5":
                self.md5.add(value)
            elif kind == "sha256":
                self.sha256.add(value)
            else:
                raw = parse_hex(value)
                if raw not in seen:
                    seen.add(raw)
                    self.pdq.append(raw)
                    self._index = None

    def __len__(self) -> int:
        return len(self.md5) + len(self.sha256) + len(self.pdq)

    def matches(self, signals: Iterable[tuple[str, str]]) -> list[tuple[str, str, int]]:
        """The (kind, signal, distance) of each given signal found in this bank."""
        hits: list[tuple[str, str, int]] = []
        pdq_queries: list[str] = []
        for kind, value in signals:
            if (kind == "md5" and value in self.md5) or (kind == "sha256" and value in self.sha256):
                hits.append((kind, value, 0))
            elif kind == "pdq":
                pdq_queries.append(value)
        if pdq_queries and self.pdq:
            if self._index is None:
                from .pdq_index import PdqIndex  # numpy loads on the first perceptual match

                self._index = PdqIndex(self.pdq, self.threshold)
            for q in pdq_queries:
                found = self._index.search(parse_hex(q))
                if found:
                    hits.append(("pdq", q, min(d for _, d in found)))
        return hits


def load_manifest(path: Path, *, threshold: int = DEFAULT_THRESHOLD) -> list[Bank]:
    """The banks a manifest names, with their files read."""
    try:
        entries = read_json_list(path, "banks")
    except ValueError as exc:
        raise BankFormatError(str(exc)) from None
    banks = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("files", []), list):
            raise BankFormatError(f"{path}: each bank is {{name, action, files}}")
        bank = Bank(str(entry.get("name", "")), str(entry.get("action", "refuse")), threshold)
        for name in entry.get("files", []):
            file = (path.parent / str(name)).resolve()
            if not file.is_relative_to(path.parent.resolve()) or not file.is_file():
                raise BankFormatError(f"{path}: bank file {name!r} is not beside the manifest")
            if file.stat().st_size > MAX_FILE_BYTES:
                raise BankFormatError(f"{file}: larger than {MAX_FILE_BYTES} bytes")
            try:
                bank.add(parse_signals(file.read_text()))
            except BankFormatError as exc:
                raise BankFormatError(f"{file}: {exc}") from None
        banks.append(bank)
    return banks
