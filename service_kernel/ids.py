"""Identifier syntax: bounded, URL-safe, and safe to embed in Redis keys and paths."""

from __future__ import annotations

import re
import secrets

from .errors import InvalidField

MAX_ID_LEN = 64
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_id(prefix: str) -> str:
    """A fresh random id: a short type prefix and 128 random bits, URL-safe."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def check_id(value: object, field: str) -> str:
    """Return ``value`` if it is a well-formed id, else raise :class:`InvalidField`."""
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise InvalidField(f"{field} must match [A-Za-z0-9_-]{{1,{MAX_ID_LEN}}}")
    return value


def is_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None


MAX_USER_ID_LEN = 255
#: User and device ids come from the identity provider (``sub``, ``dev``), so their syntax is
#: broader than ours (``auth0|abc``, e-mail addresses, UUIDs), but never holds what our own
#: formats use as separators: ``,`` (push recipient lists), ``/`` (``user/device`` envelope
#: keys), ``{`` ``}`` (Redis Cluster hash tags), whitespace and control characters.
_USER_ID_RE = re.compile(r"[^\s,/{}\x00-\x1f\x7f]{1,255}")


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and _USER_ID_RE.fullmatch(value) is not None
