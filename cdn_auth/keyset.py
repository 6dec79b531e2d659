"""The verifier's side of the key ring: a JWKS file, re-read when it changes.

An edge holding only Ed25519 public keys can verify pointers but never
mint one.  The file is re-read when it changes (checked at most every
``recheck_s``, by :class:`service_kernel.reloading_file.ReloadingFile`), and at
once when a token names an unknown kid (a stat, parsed again only if changed),
so a key added by rotation is usable on its first request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service_kernel.clock import Clock, system_clock
from service_kernel.reloading_file import ReloadingFile

from .errors import KeyRingError
from .token_format import Alg, VerifyKey


def keys_from_jwks(doc: dict[str, Any]) -> dict[str, VerifyKey]:
    """Parse a JWKS into verify keys; only Ed25519 (OKP) and HS256 (oct) are accepted."""
    out: dict[str, VerifyKey] = {}
    for raw in doc.get("keys", []):
        kid = raw.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyRingError("JWKS key without kid")
        try:
            jwk = jwt.PyJWK(raw)
        except jwt.PyJWTError as exc:
            raise KeyRingError(f"bad JWK {kid}: {exc}") from exc
        if (
            raw.get("kty") == "OKP"
            and raw.get("crv") == "Ed25519"
            and isinstance(jwk.key, Ed25519PublicKey)
        ):
            out[kid] = VerifyKey(kid, Alg.ED25519, jwk.key)
        elif raw.get("kty") == "oct" and raw.get("alg") == "HS256" and isinstance(jwk.key, bytes):
            if len(jwk.key) < 32:
                raise KeyRingError(f"HMAC key {kid} shorter than 256 bits")
            out[kid] = VerifyKey(kid, Alg.HMAC_SHA256, jwk.key)
        else:
            raise KeyRingError(f"unsupported key type for {kid}")
    return out


class KeySet:
    """Verify keys by kid, from a JWKS file kept fresh (a bad file keeps the last good keys)."""

    def __init__(self, path: Path | str, *, clock: Clock = system_clock, recheck_s: float = 1.0) -> None:
        self.path = Path(path)
        self._file = ReloadingFile(
            self.path,
            self._read,
            what="pointer JWKS",
            clock=clock,
            recheck_s=recheck_s,
        )

    def __repr__(self) -> str:
        return f"KeySet(path={str(self.path)!r}, kids={sorted(self.keys)})"

    @property
    def keys(self) -> dict[str, VerifyKey]:
        return self._file.value

    @property
    def on_change(self) -> list[Callable[[dict[str, VerifyKey]], None]]:
        """Called with the new keys after each reload that changed them."""
        return self._file.on_change

    def current(self) -> dict[str, VerifyKey]:
        """The keys, re-reading the file if it changed since the last check."""
        return self._file.current()

    def refresh_for_unknown_kid(self) -> dict[str, VerifyKey]:
        """Re-check the file now: a token named a kid we do not know.

        Not rate-limited by time: a stat(2) costs microseconds and the file is
        parsed again only if it changed, so a flood of unknown kids stays cheap,
        while a key published a millisecond ago is found at once.
        """
        self._file.check()
        return self._file.value

    def _read(self) -> dict[str, VerifyKey]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise KeyRingError(f"no JWKS at {self.path}") from None
        return keys_from_jwks(json.loads(text))
