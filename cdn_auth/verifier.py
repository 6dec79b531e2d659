"""Verifying pointers and grants against a key set, with the retry that makes rotation seamless.

:func:`cdn_auth.pointer.verify` and :func:`cdn_auth.grant.verify` check a
token against the keys they are given.  A :class:`Verifier` supplies the
current keys of a :class:`~cdn_auth.keyset.KeySet` and, when a token names a
kid it does not know, re-reads the JWKS at once and verifies once more: a
key added by rotation (``cdn-auth keys add``) may have been published a
moment ago, and its first tokens must not fail.  The re-read is a stat(2),
parsing the file only if it changed, so a flood of unknown kids stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from service_kernel.clock import Clock, system_clock

from . import grant as grant_mod
from . import pointer as pointer_mod
from .errors import TokenUnknownKey
from .grant import Grant
from .keyset import KeySet
from .pointer import Pointer
from .token_format import DEFAULT_LEEWAY_S

C = TypeVar("C", Pointer, Grant)


class Verifier:
    """Pointers and grants verified under a key set that rotation keeps changing.

    ``max_lifetime_s`` is the longest ``exp - iat`` accepted and ``leeway_s`` the clock
    skew tolerated; the ``*_at`` methods take the time instead of reading ``clock``.
    Each raises a :class:`~cdn_auth.errors.TokenError` leaf; none returns a bool.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        max_lifetime_s: int,
        leeway_s: int = DEFAULT_LEEWAY_S,
        clock: Clock = system_clock,
    ) -> None:
        self.keys = keys
        self.max_lifetime_s = max_lifetime_s
        self.leeway_s = leeway_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"Verifier({self.keys!r}, max_lifetime_s={self.max_lifetime_s}, leeway_s={self.leeway_s})"

    def pointer(self, token: str) -> Pointer:
        return self.pointer_at(token, self._clock())

    def pointer_at(self, token: str, now: float) -> Pointer:
        return self._verify(pointer_mod.verify, token, now)

    def grant(self, token: str) -> Grant:
        return self.grant_at(token, self._clock())

    def grant_at(self, token: str, now: float) -> Grant:
        return self._verify(grant_mod.verify, token, now)

    def _verify(self, verify: Callable[..., C], token: str, now: float) -> C:
        try:
            return verify(
                token,
                self.keys.current(),
                now,
                max_lifetime_s=self.max_lifetime_s,
                leeway_s=self.leeway_s,
            )
        except TokenUnknownKey:
            # A rotation may have published a key moments ago: re-read, then retry once.
            return verify(
                token,
                self.keys.refresh_for_unknown_kid(),
                now,
                max_lifetime_s=self.max_lifetime_s,
                leeway_s=self.leeway_s,
            )
