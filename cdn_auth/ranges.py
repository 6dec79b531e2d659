"""HTTP conditional and Range request planning (RFC 9110 sections 13 and 14).

Pure functions: given the request headers and the representation's size
and validators, decide status, byte window and headers.  The edge then
streams exactly that window.  Only single ranges are served as 206; a
multi-range request gets the whole representation (200), which RFC 9110
allows and every video player accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_RANGE_RE = re.compile(
    r"\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*", re.IGNORECASE | re.ASCII
)  # ASCII: int() also reads Arabic-Indic digits
_ETAG_RE = re.compile(r'\s*(W/)?("[^"]*")\s*')


@dataclass(frozen=True, slots=True)
class Plan:
    status: int  # 200, 206, 304 or 416
    start: int = 0
    length: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def _etags(value: str) -> list[tuple[bool, str]] | None:
    """Parse an If-None-Match list into (weak, opaque-tag) pairs; None means '*'."""
    if value.strip() == "*":
        return None
    out = []
    for part in value.split(","):
        m = _ETAG_RE.fullmatch(part)
        if m:
            out.append((m.group(1) is not None, m.group(2)))
    return out


def parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """``(start, end_inclusive)``, ``None`` to ignore the header, or ``"unsatisfiable"``."""
    m = _RANGE_RE.fullmatch(value)
    if m is None:
        return None  # malformed or multiple ranges: ignore (RFC 9110 14.2)
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else int(last)
    if last != "" and end < start:
        return None  # invalid spec: ignore
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def plan(headers: Mapping[str, str], *, size: int, etag: str, last_modified: str) -> Plan:
    base = {"ETag": etag, "Last-Modified": last_modified, "Accept-Ranges": "bytes"}
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = _etags(inm)
        if tags is None or any(tag == etag for _, tag in tags):  # weak comparison
            return Plan(304, headers=base)
    rng = headers.get("Range")
    if rng is not None:
        if_range = headers.get("If-Range")
        if if_range is not None and not _if_range_matches(if_range, etag, last_modified):
            rng = None
    window = parse_range(rng, size) if rng is not None else None
    if window == "unsatisfiable":
        return Plan(416, headers={**base, "Content-Range": f"bytes */{size}"})
    if isinstance(window, tuple):
        start, end = window
        return Plan(
            206, start, end - start + 1, {**base, "Content-Range": f"bytes {start}-{end}/{size}"}
        )
    return Plan(200, 0, size, base)


def _if_range_matches(value: str, etag: str, last_modified: str) -> bool:
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison; a weak tag never matches
    return value == last_modified
