"""Parsing untrusted JSON without a way to a 500: bounded depth, strict strings, no NaN.

Python's :func:`json.loads` recurses once per nesting level, so
``'[' * 5000`` raises :class:`RecursionError` (not :class:`ValueError`)
deep inside the parser; it accepts ``NaN``/``Infinity``, which are not
JSON; and it decodes ``"\\ud800"`` into a lone surrogate that cannot be
encoded back to UTF-8, so the first Redis write or ``.encode()`` of that
string fails far from the boundary.  :func:`loads` turns each of these into
:class:`~service_kernel.errors.MalformedRequest` at the boundary, and checks the
nesting depth and every string (keys too) with an explicit stack, never by
recursion.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import MalformedRequest

#: No request body of either service nests deeper than 4; 32 leaves room and stays cheap.
MAX_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise MalformedRequest(f"{name} is not JSON")


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw``; :class:`MalformedRequest` for anything but strict, shallow JSON."""
    if _too_deep(raw, max_depth):
        raise MalformedRequest(f"JSON nested deeper than {max_depth}")
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedRequest("body is not valid JSON") from None
    check_strings(doc)
    return doc


def _too_deep(raw: bytes | str, max_depth: int) -> bool:
    """Scan brackets outside strings before parsing, so deep input never reaches the
    recursive parser (a :class:`RecursionError` there is costly and its catch fragile)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # the common case: no scan needed
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def check_strings(doc: Any) -> None:
    """Every string in ``doc`` (object keys included) must be encodable as UTF-8."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_str(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                _check_str(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _check_str(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedRequest("strings must be valid Unicode (no lone surrogates)") from None
