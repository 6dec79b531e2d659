"""Session tokens: JWTs from an identity provider, verified against its JWKS.

pyjwt checks the signature, ``iss`` and ``aud`` with the algorithms pinned by
configuration (never the token's ``alg`` alone); this module checks the
times itself against an injected ``now``, so tests and the edge's decision
cache share one clock.  The JWKS comes from a file (re-read on change) or a
URL (fetched with aiohttp, refreshed periodically and on an unknown kid).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization

from service_kernel.clock import Clock, system_clock
from service_kernel.ids import is_user_id
from service_kernel.reloading_file import ReloadingFile

from .errors import SessionExpired, SessionInvalid

log = logging.getLogger(__name__)

MAX_SESSION_TOKEN_CHARS = 4096
DEFAULT_SESSION_LEEWAY_S = 5
DEFAULT_SESSION_MAX_LIFETIME_S = 24 * 3600
#: JOSE ``typ`` values a session may carry (RFC 8725 section 3.11: explicit typing, so a
#: JWT minted for another purpose by the same IdP key cannot pass as a session).
SESSION_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})
ADULT_AGE = 18
#: The youngest age the platform admits, used for an unspecific "minor" claim.
MINOR_AGE_FLOOR = 13


@dataclass(frozen=True, slots=True)
class Session:
    sub: str
    dev: str
    age: int | None  # the lowest age consistent with the claim; None if unknown
    region: str | None  # ISO 3166-1 alpha-2, upper case
    roles: frozenset[str]
    iat: int
    exp: int
    #: The identity provider key (JWKS kid) that signed it; "" when not from a session JWT
    #: (a browser playback cookie).  Its retirement ends the session at once.
    kid: str = ""
    #: Which publication of ``kid`` verified it (:meth:`JwksSource.generation`): a kid
    #: republished with other key material is a new generation, and ends this session.
    key_generation: int = 0

    @property
    def is_moderator(self) -> bool:
        return "moderator" in self.roles

    @property
    def from_cookie(self) -> bool:
        """Whether a browser media cookie stands for this session (a session JWT always
        names the key that signed it): ended by its device's sign-out, not by that key."""
        return not self.kid


def age_from_claim(claim: object, now: float) -> int | None:
    """Map the ``age`` claim to the lowest age it allows: "adult", "minor" or a birth year."""
    if claim == "adult":
        return ADULT_AGE
    if claim == "minor":
        return MINOR_AGE_FLOOR
    if isinstance(claim, int) and not isinstance(claim, bool) and 1900 <= claim <= 2200:
        year = time.gmtime(now).tm_year
        return max(0, year - claim - 1)  # not yet had this year's birthday: the safe side
    return None


def region_from_claim(claim: object) -> str | None:
    if isinstance(claim, str) and len(claim) == 2 and claim.isascii() and claim.isalpha():
        return claim.upper()
    return None


class JwksSource:
    """Holds the identity provider's keys as PyJWK objects by kid.

    A file is watched by :class:`service_kernel.reloading_file.ReloadingFile` (re-read
    when it changes; a bad file keeps the last good keys); a URL is fetched here.

    ``retired_listeners`` are called with the kids that left the set whenever a reload
    or fetch drops keys: services that cache verified sessions drop them there (a session
    signed by a retired key must stop working at once, not when it expires).
    """

    def __init__(
        self,
        location: str,
        *,
        clock: Clock = system_clock,
        refresh_s: float = 300.0,
        min_refetch_s: float = 5.0,
        poll_s: float = 1.0,
    ) -> None:
        self.location = location
        self._clock = clock
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.keys: dict[str, jwt.PyJWK] = {}
        self.retired_listeners: list[Callable[[list[str]], None]] = []
        self._generations: dict[str, int] = {}
        self._file: ReloadingFile[dict[str, jwt.PyJWK]] | None = None
        if not location.startswith(("http://", "https://")):
            # Re-checked when get() finds the keys stale or a kid unknown, and by poll()
            # (at most every poll_s: services call it on a tick or per request).
            self._file = ReloadingFile(
                location,
                lambda: self._parse(json.loads(Path(location).read_text())),
                what="session JWKS",
                clock=clock,
                recheck_s=poll_s,
            )
            self.keys = self._file.value
            self._fetched_at = self._clock()

    def _parse(self, doc: object) -> dict[str, jwt.PyJWK]:
        if not isinstance(doc, dict) or not isinstance(doc.get("keys", []), list):
            raise ValueError("a JWKS must be an object with a list of keys")
        keys: dict[str, jwt.PyJWK] = {}
        for raw in doc.get("keys", []):
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            kid = raw.get("kid")
            if not isinstance(kid, str):
                continue
            try:
                keys[kid] = jwt.PyJWK(raw)
            except jwt.PyJWTError as exc:
                log.warning("skipping unusable session JWK", extra={"kid": kid, "err": str(exc)})
        return keys

    def generation(self, kid: str) -> int:
        """How many times ``kid`` has been retired (removed, or republished with other key
        material): a session verified under an older generation is retired."""
        return self._generations.get(kid, 0)

    async def get(self, kid: str) -> jwt.PyJWK | None:
        key = self.keys.get(kid)
        stale = self._clock() - self._fetched_at >= self._refresh_s
        if key is not None and not stale:
            return key
        if key is None and self._clock() - self._fetched_at < self._min_refetch_s:
            return None  # an unknown kid must not let anyone hammer the IdP
        await self.refresh()
        return self.keys.get(kid)

    def poll(self) -> None:
        """Pick a changed JWKS file up (a stat at most every ``poll_s``; a URL waits for its
        next fetch): without this, a retirement would wait for the next unknown kid or the
        periodic refresh while every request is answered from a session cache."""
        if self._file is not None:
            self._replace(self._file.current())

    def _replace(self, keys: dict[str, jwt.PyJWK]) -> None:
        """Install a new key set; tell the listeners which kids left it."""
        if keys is self.keys:
            return
        # A kid that stays with other key material is a retirement too: its old sessions
        # fail a fresh verification and must not live on in a cache.
        gone = sorted(
            kid
            for kid, old in self.keys.items()
            if kid not in keys or _material(keys[kid]) != _material(old)
        )
        self.keys = keys
        for kid in gone:
            self._generations[kid] = self._generations.get(kid, 0) + 1
        if gone:
            log.warning("session keys retired", extra={"kids": gone})
            for cb in self.retired_listeners:
                cb(gone)

    async def refresh(self) -> None:
        if self._file is not None:
            if self._file.check():  # else logged; the old keys stay, and the next get() retries
                self._replace(self._file.value)
                self._fetched_at = self._clock()
            return
        async with self._lock:
            if self._clock() - self._fetched_at < self._min_refetch_s and self.keys:
                return
            try:
                timeout = aiohttp.ClientTimeout(total=5)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as http,
                    http.get(self.location) as resp,
                ):
                    resp.raise_for_status()
                    self._replace(self._parse(await resp.json(content_type=None)))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("session JWKS fetch failed; keeping old keys", extra={"err": str(exc)})
            finally:
                self._fetched_at = self._clock()


def _material(jwk: jwt.PyJWK) -> bytes:
    """The key itself, comparable across reloads (public keys as SubjectPublicKeyInfo)."""
    key = jwk.key
    if isinstance(key, bytes):
        return key
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:  # a private key in a JWKS: compare what it publishes
        public_bytes = key.public_key().public_bytes
    der: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


class SessionVerifier:
    """Verifies session JWTs: pinned algorithms, issuer, audience, times at ``now``."""

    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = ("EdDSA",),
        leeway_s: int = DEFAULT_SESSION_LEEWAY_S,
        max_lifetime_s: int = DEFAULT_SESSION_MAX_LIFETIME_S,
        clock: Clock = system_clock,
    ) -> None:
        if not algorithms or any(a.lower() == "none" for a in algorithms):
            raise ValueError("session algorithms must be pinned and never 'none'")
        self.max_lifetime_s = max_lifetime_s
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.leeway_s = leeway_s
        self._clock = clock

    async def verify(self, token: str, now: float | None = None) -> Session:
        now = self._clock() if now is None else now
        if not token or len(token) > MAX_SESSION_TOKEN_CHARS:
            raise SessionInvalid("token empty or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise SessionInvalid(f"header: {exc}") from None
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in SESSION_TYPES:
            raise SessionInvalid(f"typ {typ!r} is not a session type")
        if alg not in self.algorithms:
            raise SessionInvalid(f"alg {alg!r} not allowed")
        if not isinstance(kid, str):
            raise SessionInvalid("no kid")
        jwk = await self.jwks.get(kid)
        if jwk is None:
            raise SessionInvalid(f"unknown kid {kid!r}")
        generation = self.jwks.generation(kid)  # no await since get(): the same publication
        if jwk.algorithm_name != alg:
            raise SessionInvalid(f"alg {alg!r} does not match the key's {jwk.algorithm_name!r}")
        try:
            claims = jwt.decode(
                token,
                key=jwk.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "sub", "iss", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise SessionInvalid(f"{type(exc).__name__}: {exc}") from None
        return self._check_claims(claims, now, kid, generation)

    def _check_claims(
        self, claims: dict[str, Any], now: float, kid: str = "", key_generation: int = 0
    ) -> Session:
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", claims.get("iat"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat, nbf)):
            raise SessionInvalid("exp/iat/nbf must be integers")
        assert isinstance(exp, int) and isinstance(iat, int) and isinstance(nbf, int)
        if max(iat, nbf) > now + self.leeway_s:
            raise SessionInvalid("session dated in the future")
        if exp <= now - self.leeway_s:
            raise SessionExpired(f"exp {exp}")
        if exp - iat > self.max_lifetime_s:
            raise SessionInvalid(f"lifetime {exp - iat}s over {self.max_lifetime_s}s")
        sub = claims.get("sub")
        if not is_user_id(sub):
            raise SessionInvalid("bad sub")
        assert isinstance(sub, str)
        dev = claims.get("dev", "")
        roles = claims.get("roles", [])
        if not (dev == "" or is_user_id(dev)) or not isinstance(roles, list):
            raise SessionInvalid("bad dev or roles")
        assert isinstance(dev, str)
        return Session(
            sub=sub,
            dev=dev,
            age=age_from_claim(claims.get("age"), now),
            region=region_from_claim(claims.get("region")),
            roles=frozenset(r for r in roles if isinstance(r, str)),
            iat=iat,
            exp=exp,
            kid=kid,
            key_generation=key_generation,
        )
