"""cdn_auth: media registry, signed pointers and grants, and the edge that authorizes video fetches.

The library front: mint and verify pointers and grants, manage the key ring,
and verify under a rotating key set (:class:`Verifier` retries a token whose
kid is unknown after re-reading the JWKS, so a rotation fails no request)::

    import cdn_auth

    ring = cdn_auth.KeyRing.create("var/keys/pointer")
    token = cdn_auth.mint_pointer(ring.signer(), media_id="m_1", sub="alice",
                                  conversation_id="c_1", message_id="1-0", now=time.time())
    verifier = cdn_auth.Verifier(cdn_auth.KeySet(ring.path / cdn_auth.VERIFY_JWKS_FILE),
                                 max_lifetime_s=900)
    claims = verifier.pointer(token)    # raises a cdn_auth.TokenError leaf

Every failure is a :class:`CdnAuthError`; token failures are :class:`TokenError`
leaves.  The HTTP edge (``cdn_auth.app``) is built on these and is not part of
the library API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Loaded on first use (PEP 562), not here: dm's client SDK imports this package for
# __version__ and must not pull in server-only dependencies (PyJWT, via the key set).
_EXPORTS: dict[str, tuple[str, str]] = {
    "VERIFY_JWKS_FILE": (".keyring", "VERIFY_JWKS_FILE"),
    "Alg": (".token_format", "Alg"),
    "CdnAuthError": (".errors", "CdnAuthError"),
    "Grant": (".grant", "Grant"),
    "KeyRing": (".keyring", "KeyRing"),
    "KeyRingError": (".errors", "KeyRingError"),
    "KeyRingSource": (".keyring", "KeyRingSource"),
    "KeySet": (".keyset", "KeySet"),
    "Pointer": (".pointer", "Pointer"),
    "SigningKey": (".token_format", "SigningKey"),
    "TokenBadSignature": (".errors", "TokenBadSignature"),
    "TokenError": (".errors", "TokenError"),
    "TokenExpired": (".errors", "TokenExpired"),
    "TokenMalformed": (".errors", "TokenMalformed"),
    "TokenNotYetValid": (".errors", "TokenNotYetValid"),
    "TokenUnknownKey": (".errors", "TokenUnknownKey"),
    "TokenWrongType": (".errors", "TokenWrongType"),
    "Verifier": (".verifier", "Verifier"),
    "VerifyKey": (".token_format", "VerifyKey"),
    "keys_from_jwks": (".keyset", "keys_from_jwks"),
    "mint_grant": (".grant", "mint"),
    "mint_pointer": (".pointer", "mint"),
    "verify_grant": (".grant", "verify"),
    "verify_pointer": (".pointer", "verify"),
}

if TYPE_CHECKING:
    from .errors import (
        CdnAuthError,
        KeyRingError,
        TokenBadSignature,
        TokenError,
        TokenExpired,
        TokenMalformed,
        TokenNotYetValid,
        TokenUnknownKey,
        TokenWrongType,
    )
    from .grant import Grant
    from .grant import mint as mint_grant
    from .grant import verify as verify_grant
    from .keyring import VERIFY_JWKS_FILE, KeyRing, KeyRingSource
    from .keyset import KeySet, keys_from_jwks
    from .pointer import Pointer
    from .pointer import mint as mint_pointer
    from .pointer import verify as verify_pointer
    from .token_format import Alg, SigningKey, VerifyKey
    from .verifier import Verifier


if not TYPE_CHECKING:  # type checkers see the imports above, and catch a misspelt name

    def __getattr__(name: str) -> object:
        try:
            module, attr = _EXPORTS[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value  # once: later lookups find it without this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "VERIFY_JWKS_FILE",
    "Alg",
    "CdnAuthError",
    "Grant",
    "KeyRing",
    "KeyRingError",
    "KeyRingSource",
    "KeySet",
    "Pointer",
    "SigningKey",
    "TokenBadSignature",
    "TokenError",
    "TokenExpired",
    "TokenMalformed",
    "TokenNotYetValid",
    "TokenUnknownKey",
    "TokenWrongType",
    "Verifier",
    "VerifyKey",
    "__version__",
    "keys_from_jwks",
    "mint_grant",
    "mint_pointer",
    "verify_grant",
    "verify_pointer",
]
