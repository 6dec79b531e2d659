"""The cdn_auth library front: what a user gets from ``import cdn_auth`` alone."""

from __future__ import annotations

from pathlib import Path

import pytest

import cdn_auth

NOW = 1_700_000_000.0


def _pointer(ring: cdn_auth.KeyRing) -> str:
    return cdn_auth.mint_pointer(
        ring.signer(), media_id="m_1", sub="alice", conversation_id="c_1", message_id="1-0", now=NOW
    )


def test_pointer_verifies_across_a_key_rotation(tmp_path: Path) -> None:
    """A key published and switched to after the verifier last read the JWKS: its first
    pointer verifies (the unknown kid makes the verifier re-read the key set, then retry)."""
    ring = cdn_auth.KeyRing.create(tmp_path / "ring", now=NOW)
    # A frozen clock: the key set never re-reads on its own, only for an unknown kid.
    keys = cdn_auth.KeySet(ring.path / cdn_auth.VERIFY_JWKS_FILE, clock=lambda: NOW, recheck_s=3600)
    verifier = cdn_auth.Verifier(keys, max_lifetime_s=900, clock=lambda: NOW)
    assert verifier.pointer(_pointer(ring)).kid == ring.signing_kid

    ring = ring.add(now=NOW).switch(now=NOW)
    token = _pointer(ring)
    with pytest.raises(cdn_auth.TokenUnknownKey):  # without the retry: refused
        cdn_auth.verify_pointer(token, keys.current(), NOW, max_lifetime_s=900)
    claims = verifier.pointer(token)
    assert (claims.media_id, claims.sub, claims.kid) == ("m_1", "alice", ring.signing_kid)


def test_unknown_key_is_still_refused_after_the_retry(tmp_path: Path) -> None:
    ring = cdn_auth.KeyRing.create(tmp_path / "ring", now=NOW)
    stranger = cdn_auth.KeyRing.create(tmp_path / "other", now=NOW)
    verifier = cdn_auth.Verifier(
        cdn_auth.KeySet(ring.path / cdn_auth.VERIFY_JWKS_FILE), max_lifetime_s=900, clock=lambda: NOW
    )
    with pytest.raises(cdn_auth.TokenUnknownKey):
        verifier.pointer(_pointer(stranger))
    grant = cdn_auth.mint_grant(
        stranger.signer(),
        grant_id="g_1",
        media_id="m_1",
        max_redeemers=2,
        sharer="alice",
        now=NOW,
        ttl_s=600,
    )
    with pytest.raises(cdn_auth.TokenError):
        verifier.grant(grant)


def test_every_exported_name_resolves() -> None:
    """The front loads its names lazily (dm's SDK imports the package without PyJWT):
    each name in __all__ must still be there."""
    for name in cdn_auth.__all__:
        assert getattr(cdn_auth, name) is not None, name
    assert cdn_auth.verify_pointer.__module__ == "cdn_auth.pointer"
    with pytest.raises(AttributeError):
        _ = cdn_auth.no_such_name  # type: ignore[attr-defined]
