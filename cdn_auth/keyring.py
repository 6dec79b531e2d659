"""The pointer/grant key ring on disk: several kids, newest signs, rotation without failures.

Layout of a ring directory (mode 0700)::

    ring.json              which kids exist, their algorithm, and which one signs
    private/<kid>.key      Ed25519 PKCS#8 PEM, or 32 random bytes base64 (HMAC); mode 0600
    verify.jwks.json       what edges load: Ed25519 public keys (mode 0644), or for an
                           HMAC ring the secrets as "oct" keys (mode 0600)

Rotation is three steps so that no request fails (docs/operations.md):

1. ``add``: a new key is published in verify.jwks.json but does not sign yet;
   edges pick it up (they re-read the file on change and on an unknown kid).
2. ``switch``: the new key signs; the old one is marked superseded and still verifies.
3. ``retire``: a superseded key is deleted once every token it signed has
   expired, i.e. ``superseded_at + max_token_lifetime_s + leeway``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service_kernel.clock import Clock
from service_kernel.encoding import b64url_decode, b64url_encode
from service_kernel.files import atomic_write, create_exclusive, held_lock
from service_kernel.reloading_file import ReloadingFile

from .errors import KeyRingError
from .token_format import DEFAULT_LEEWAY_S, Alg, SigningKey

RING_FILE = "ring.json"
VERIFY_JWKS_FILE = "verify.jwks.json"
PRIVATE_DIR = "private"
LOCK_FILE = ".create.lock"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    alg: Alg
    created_at: int
    superseded_at: int | None = None


def _new_kid(now: float) -> str:
    return "k" + time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)


class KeyRing:
    """An immutable snapshot of a ring directory; mutators return a new, saved ring."""

    def __init__(self, path: Path, keys: tuple[KeyInfo, ...], signing_kid: str) -> None:
        self.path = path
        self.keys = keys
        self.signing_kid = signing_kid
        self._signer: SigningKey | None = None

    def __repr__(self) -> str:
        return (
            f"KeyRing(path={str(self.path)!r}, kids={[k.kid for k in self.keys]}, "
            f"signing={self.signing_kid!r})"
        )

    # -- loading and creating ----------------------------------------------
    @classmethod
    def create(cls, path: Path | str, alg: Alg = Alg.ED25519, *, now: float | None = None) -> KeyRing:
        path = Path(path)
        if (path / RING_FILE).exists():
            raise KeyRingError(f"{path} already holds a key ring")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        # Processes creating the ring together take turns: the first creates it, the others
        # find it made and never write a JWKS of their own (which edges could read, briefly
        # without the winner's key, before the loser rewrote it).
        with held_lock(path / LOCK_FILE):
            if (path / RING_FILE).exists():
                raise KeyRingError(f"{path} already holds a key ring")
            return cls._create_locked(path, alg, now)

    @classmethod
    def _create_locked(cls, path: Path, alg: Alg, now: float | None) -> KeyRing:
        (path / PRIVATE_DIR).mkdir(exist_ok=True, mode=0o700)
        os.chmod(path / PRIVATE_DIR, 0o700)
        ts = time.time() if now is None else now
        info = KeyInfo(_new_kid(ts), alg, int(ts))
        _write_secret(path, info)
        ring = cls(path, (info,), info.kid)
        # The JWKS first, as save() does; the ring file only if none appeared meanwhile (a
        # filesystem where flock is not shared between creators, e.g. some network mounts):
        # of processes creating the ring together, one wins, and a loser rewrites the JWKS
        # from the winner's ring, drops its own key, and reports the ring as existing.
        ring._save_jwks()
        if not create_exclusive(path / RING_FILE, ring._ring_doc(), 0o600):
            winner = cls.load(path)
            winner._save_jwks()
            (path / PRIVATE_DIR / f"{info.kid}.key").unlink(missing_ok=True)
            raise KeyRingError(f"{path} already holds a key ring")
        return ring

    @classmethod
    def load(cls, path: Path | str) -> KeyRing:
        path = Path(path)
        try:
            doc = json.loads((path / RING_FILE).read_text())
            keys = tuple(
                KeyInfo(
                    k["kid"],
                    Alg.from_name(k["alg"]),
                    int(k["created_at"]),
                    None if k.get("superseded_at") is None else int(k["superseded_at"]),
                )
                for k in doc["keys"]
            )
            signing = str(doc["signing"])
        except FileNotFoundError:
            raise KeyRingError(f"no key ring at {path}; run `cdn-auth keys init`") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyRingError(f"corrupt {path / RING_FILE}: {exc}") from exc
        if signing not in {k.kid for k in keys}:
            raise KeyRingError("signing kid is not in the ring")
        return cls(path, keys, signing)

    @classmethod
    def load_or_create(cls, path: Path | str, alg: Alg = Alg.ED25519) -> KeyRing:
        if (Path(path) / RING_FILE).exists():
            return cls.load(path)
        try:
            return cls.create(path, alg)
        except KeyRingError:
            return cls.load(path)  # another process created it first: use that one

    # -- use ------------------------------------------------------------------
    def signer(self) -> SigningKey:
        """The key that signs new tokens (loaded lazily, once per snapshot)."""
        if self._signer is None:
            info = self._info(self.signing_kid)
            self._signer = SigningKey(info.kid, info.alg, _read_secret(self.path, info))
        return self._signer

    def verify_jwks(self) -> dict[str, Any]:
        """The JWKS an edge needs: public keys, or HMAC secrets in single-trust mode."""
        return {"keys": [_jwk(info, _read_secret(self.path, info)) for info in self.keys]}

    @property
    def has_secrets_in_jwks(self) -> bool:
        return any(k.alg is Alg.HMAC_SHA256 for k in self.keys)

    # -- rotation -----------------------------------------------------------------
    def add(self, alg: Alg | None = None, *, now: float | None = None) -> KeyRing:
        """Step 1: publish a new key that verifies but does not sign yet."""
        ts = time.time() if now is None else now
        info = KeyInfo(_new_kid(ts), alg or self._info(self.signing_kid).alg, int(ts))
        _write_secret(self.path, info)
        ring = KeyRing(self.path, (*self.keys, info), self.signing_kid)
        ring.save()
        return ring

    def switch(self, kid: str | None = None, *, now: float | None = None) -> KeyRing:
        """Step 2: make ``kid`` (default: the newest key) sign; the old signer is superseded."""
        ts = int(time.time() if now is None else now)
        target = kid or self.keys[-1].kid  # keys are kept in the order they were added
        self._info(target)
        if target == self.signing_kid:
            return self
        keys = tuple(
            replace(k, superseded_at=ts)
            if k.kid == self.signing_kid
            else replace(k, superseded_at=None)
            if k.kid == target
            else k
            for k in self.keys
        )
        ring = KeyRing(self.path, keys, target)
        ring.save()
        return ring

    def retire(
        self, max_token_lifetime_s: int, *, now: float | None = None, leeway_s: int = DEFAULT_LEEWAY_S
    ) -> tuple[KeyRing, list[str]]:
        """Step 3: delete superseded keys whose every token has expired."""
        ts = time.time() if now is None else now
        gone = [
            k
            for k in self.keys
            if k.superseded_at is not None and k.superseded_at + max_token_lifetime_s + leeway_s <= ts
        ]
        if not gone:
            return self, []
        ring = KeyRing(self.path, tuple(k for k in self.keys if k not in gone), self.signing_kid)
        ring.save()
        for k in gone:
            with contextlib.suppress(FileNotFoundError):
                (self.path / PRIVATE_DIR / f"{k.kid}.key").unlink()
        return ring, [k.kid for k in gone]

    def _ring_doc(self) -> bytes:
        doc = {
            "version": 1,
            "signing": self.signing_kid,
            "keys": [
                {
                    "kid": k.kid,
                    "alg": k.alg.jwa,
                    "created_at": k.created_at,
                    "superseded_at": k.superseded_at,
                }
                for k in self.keys
            ],
        }
        return json.dumps(doc, indent=1).encode()

    def _save_jwks(self) -> None:
        mode = 0o600 if self.has_secrets_in_jwks else 0o644
        atomic_write(
            self.path / VERIFY_JWKS_FILE, json.dumps(self.verify_jwks(), indent=1).encode(), mode
        )

    def save(self) -> None:
        # The JWKS goes first: a key must be verifiable before any ring names it signer.
        self._save_jwks()
        atomic_write(self.path / RING_FILE, self._ring_doc(), 0o600)

    def _info(self, kid: str) -> KeyInfo:
        for k in self.keys:
            if k.kid == kid:
                return k
        raise KeyRingError(f"no key {kid!r} in the ring")


class KeyRingSource:
    """The minting side's view of a ring directory, re-read when ``ring.json`` changes.

    Long-running minters (dm, the media API) hold one of these so a
    ``cdn-auth keys switch`` takes effect without a restart; a ring that cannot be read
    keeps the last good one (:class:`service_kernel.reloading_file.ReloadingFile`).
    """

    def __init__(
        self, path: Path | str, *, recheck_s: float = 1.0, clock: Clock = time.monotonic
    ) -> None:
        self.path = Path(path)
        self._file = ReloadingFile(
            self.path / RING_FILE,
            lambda: KeyRing.load(self.path),
            what="key ring",
            clock=clock,
            recheck_s=recheck_s,
        )

    def current(self) -> KeyRing:
        return self._file.current()

    def signer(self) -> SigningKey:
        return self.current().signer()


def _write_secret(path: Path, info: KeyInfo) -> None:
    if info.alg is Alg.ED25519:
        data = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        data = b64url_encode(secrets.token_bytes(32)).encode()
    atomic_write(path / PRIVATE_DIR / f"{info.kid}.key", data, 0o600)


def _read_secret(path: Path, info: KeyInfo) -> Ed25519PrivateKey | bytes:
    file = path / PRIVATE_DIR / f"{info.kid}.key"
    mode = file.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyRingError(f"{file} is readable by others (mode {mode:o}); chmod 600 it")
    data = file.read_bytes()
    if info.alg is Alg.ED25519:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyRingError(f"{file} is not an Ed25519 key")
        return key
    try:
        return b64url_decode(data.decode().strip())
    except ValueError as exc:
        raise KeyRingError(f"{file} is not a base64url key: {exc}") from None


def _jwk(info: KeyInfo, secret: Ed25519PrivateKey | bytes) -> dict[str, str]:
    if isinstance(secret, Ed25519PrivateKey):
        x = secret.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(x),
            "kid": info.kid,
            "alg": "EdDSA",
            "use": "sig",
        }
    return {"kty": "oct", "k": b64url_encode(secret), "kid": info.kid, "alg": "HS256", "use": "sig"}
