"""The dev identity issuer: mints EdDSA session JWTs and publishes their JWKS.

For local use and tests.  Production turns it off and points every service
at a real identity provider's JWKS; nothing else changes, because services
only ever verify against a JWKS (see cdn_auth.session).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service_kernel.encoding import b64url_encode
from service_kernel.files import atomic_write, create_exclusive

DEFAULT_SESSION_TTL_S = 3600
KEY_FILE = "issuer.key"
JWKS_FILE = "jwks.json"


class DevIssuer:
    def __init__(self, key: Ed25519PrivateKey, kid: str, *, issuer: str, audience: str) -> None:
        self._key = key
        self.kid = kid
        self.issuer = issuer
        self.audience = audience

    def __repr__(self) -> str:
        return f"DevIssuer(kid={self.kid!r}, issuer={self.issuer!r})"

    @classmethod
    def load_or_create(
        cls, directory: Path | str, *, issuer: str = "pointer-dm-dev", audience: str = "pointer-dm"
    ) -> DevIssuer:
        """Load the issuer key from ``directory`` (creating it, mode 0600, if absent)
        and (re)write the public ``jwks.json`` beside it."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = d / KEY_FILE
        if not key_path.exists():
            # Created exclusively: of processes starting together, one key wins and every
            # one of them loads it below (each keeping its own signed tokens the others
            # refused, with 401s, before).
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            create_exclusive(key_path, pem, 0o600)
        # The same rule as every other key file: a key others can read is refused.
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{key_path} is readable by others (mode {mode:o}); chmod 600 it")
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{key_path} is not an Ed25519 key")
        key = loaded
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        kid = "s-" + b64url_encode(raw)[:12]
        me = cls(key, kid, issuer=issuer, audience=audience)
        atomic_write(d / JWKS_FILE, json.dumps(me.jwks(), indent=1).encode(), 0o644)
        return me

    @classmethod
    def generate(cls, *, issuer: str = "pointer-dm-dev", audience: str = "pointer-dm") -> DevIssuer:
        """An in-memory issuer (tests and benchmarks)."""
        return cls(
            Ed25519PrivateKey.generate(), "s-" + secrets.token_hex(6), issuer=issuer, audience=audience
        )

    def jwks(self) -> dict[str, Any]:
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": b64url_encode(raw),
                    "kid": self.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }

    def write_jwks(self, path: Path | str) -> None:
        atomic_write(Path(path), json.dumps(self.jwks()).encode(), 0o644)

    def mint(
        self,
        sub: str,
        *,
        dev: str = "d1",
        age: str | int | None = "adult",
        region: str = "GB",
        roles: list[str] | None = None,
        ttl_s: int = DEFAULT_SESSION_TTL_S,
        now: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        iat = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "dev": dev,
            "region": region,
            "iat": iat,
            "exp": iat + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        if age is not None:  # no claim: the age is unknown, and age gates fail closed
            claims["age"] = age
        if roles:
            claims["roles"] = roles
        if extra:
            claims.update(extra)
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "JWT"})
