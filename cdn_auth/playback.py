"""Browser playback: a short-lived, recipient-bound media cookie minted from a bearer session.

An HTML ``<video src>`` cannot send ``Authorization: Bearer``.  A web client
therefore trades its session, once, for a *playback token* that the edge sets
as an HttpOnly cookie scoped to ``Path=/m/`` (as CloudFront signed cookies
do).  The token is not the session JWT: it is a v1 token (see
:mod:`cdn_auth.token_format`, type ``B``) signed with HMAC-SHA256 under an
edge secret, carrying only what the media rules need (``sub``, device, age,
region) and expiring after minutes and never after the session itself.  It
carries no roles: moderator powers never ride on a cookie.

The edge accepts it only on ``GET|HEAD /m/{id}`` and on ``/auth`` for
nginx (for an original GET/HEAD), so it opens no cross-site request forgery
path to any state-changing route; the pointer still names the recipient, so
another user's cookie gets ``403 pointer_wrong_recipient`` like another
user's bearer session does.  docs/protocol.md section 13 argues the
design and what was rejected.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from service_kernel.clock import Clock, system_clock
from service_kernel.files import load_or_create_secret

from . import token_format as tf
from .errors import SessionExpired, SessionInvalid, TokenError, TokenExpired
from .session import Session
from .token_format import Alg, SigningKey, TokenType, VerifyKey

COOKIE_NAME = "pdm_media"
COOKIE_PATH = "/m/"
#: ``age`` is a u16 in the token; this value means "the session made no usable age claim".
_AGE_UNKNOWN = 0xFFFF
#: The upper bound any playback token may have, whatever the settings say.
MAX_PLAYBACK_TTL_S = 3600


class PlaybackTokens:
    """Mints and verifies playback tokens under one edge secret (HMAC-SHA256).

    Every edge that serves media must hold the same secret (a file, like the
    franking key).  The kid is derived from the secret, so a replaced secret
    makes old cookies fail with 401 and the web client simply asks again.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        ttl_s: int,
        leeway_s: int = tf.DEFAULT_LEEWAY_S,
        clock: Clock = system_clock,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the playback secret must be at least 32 bytes")
        if not 10 <= ttl_s <= MAX_PLAYBACK_TTL_S:
            raise ValueError(f"playback ttl must be 10..{MAX_PLAYBACK_TTL_S} s")
        kid = "pb-" + hashlib.sha256(b"playback-kid\x00" + secret).hexdigest()[:12]
        self._signer = SigningKey(kid, Alg.HMAC_SHA256, secret)
        self._keys = {kid: VerifyKey(kid, Alg.HMAC_SHA256, secret)}
        self.ttl_s = ttl_s
        self._leeway_s = leeway_s
        self._clock = clock

    @classmethod
    def from_file(
        cls, path: Path, *, ttl_s: int, leeway_s: int = tf.DEFAULT_LEEWAY_S, clock: Clock = system_clock
    ) -> PlaybackTokens:
        return cls(load_or_create_secret(path), ttl_s=ttl_s, leeway_s=leeway_s, clock=clock)

    def __repr__(self) -> str:
        return f"PlaybackTokens(kid={self._signer.kid!r}, ttl_s={self.ttl_s})"

    def mint(self, session: Session, now: float | None = None) -> tuple[str, int]:
        """A token for ``session``: returns it and its expiry (never after the session's)."""
        iat = int(self._clock() if now is None else now)
        exp = min(iat + self.ttl_s, session.exp)
        if exp <= iat:
            raise SessionExpired("the session expires before a playback token could live")
        age = _AGE_UNKNOWN if session.age is None else min(session.age, _AGE_UNKNOWN - 1)
        fields = (
            tf.pack_string(session.sub)
            + tf.pack_string(session.dev)
            + tf.pack_u16(age)
            + tf.pack_string(session.region or "")
        )
        return tf.encode(TokenType.PLAYBACK, self._signer, iat, exp, fields), exp

    def verify(self, token: str, now: float | None = None) -> Session:
        """The session a playback token stands for; 401 (never 403) when it does not verify,
        because a bad cookie means "no valid session", exactly like a bad bearer."""
        now = self._clock() if now is None else now
        try:
            env = tf.verify(
                token,
                TokenType.PLAYBACK,
                self._keys,
                now,
                leeway_s=self._leeway_s,
                max_lifetime_s=MAX_PLAYBACK_TTL_S,
            )
            r = tf.FieldReader(env.fields)
            sub, dev, age, region = r.string(), r.string(), r.u16(), r.string()
            r.end()
        except TokenExpired as exc:
            raise SessionExpired(f"playback cookie: {exc.detail}") from None
        except TokenError as exc:
            raise SessionInvalid(f"playback cookie: {exc.code}") from None
        if not sub:
            raise SessionInvalid("playback cookie: empty sub")
        return Session(
            sub=sub,
            dev=dev,
            age=None if age == _AGE_UNKNOWN else age,
            region=region or None,
            roles=frozenset(),
            iat=env.iat,
            exp=env.exp,
        )
