"""Session JWT verification: pinned algorithms, issuer/audience, times; one test per attack."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth.errors import SessionError, SessionExpired
from cdn_auth.session import JwksSource, SessionVerifier, age_from_claim
from dm.identity import JWKS_FILE, DevIssuer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, object], claims: dict[str, object], key: bytes | None) -> str:
    signing = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    sig = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(sig)


@pytest.fixture
def verifier(issuer: DevIssuer, tmp_path: Path) -> SessionVerifier:
    return SessionVerifier(
        JwksSource(str(tmp_path / "session-keys" / JWKS_FILE)),
        issuer="pointer-dm-dev",
        audience="pointer-dm",
    )


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": "pointer-dm-dev",
        "aud": "pointer-dm",
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        **over,
    }


async def test_valid_session(issuer: DevIssuer, verifier: SessionVerifier) -> None:
    s = await verifier.verify(issuer.mint("alice", age=2000, region="gb", roles=["moderator"]))
    assert (s.sub, s.region, s.is_moderator) == ("alice", "GB", True)
    assert s.age is not None and s.age >= 18


async def test_alg_none_rejected(issuer: DevIssuer, verifier: SessionVerifier) -> None:
    token = _forge({"alg": "none", "kid": issuer.kid}, _claims(), None)
    with pytest.raises(SessionError):
        await verifier.verify(token)


async def test_algorithm_confusion_hs256_with_public_key_rejected(
    issuer: DevIssuer, verifier: SessionVerifier
) -> None:
    public = base64.urlsafe_b64decode(issuer.jwks()["keys"][0]["x"] + "=")
    token = _forge({"alg": "HS256", "kid": issuer.kid, "typ": "JWT"}, _claims(), public)
    with pytest.raises(SessionError):
        await verifier.verify(token)


def test_none_cannot_be_pinned(verifier: SessionVerifier) -> None:
    with pytest.raises(ValueError):
        SessionVerifier(verifier.jwks, issuer="x", audience="y", algorithms=["none"])


async def test_tampered_session_rejected(issuer: DevIssuer, verifier: SessionVerifier) -> None:
    h, p, s = issuer.mint("alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["sub"] = "mallory"
    with pytest.raises(SessionError):
        await verifier.verify(f"{h}.{_b64(json.dumps(claims).encode())}.{s}")


async def test_expired_session_rejected(issuer: DevIssuer, verifier: SessionVerifier) -> None:
    with pytest.raises(SessionExpired):
        await verifier.verify(issuer.mint("alice", now=time.time() - 7200, ttl_s=60))


async def test_future_dated_session_rejected(issuer: DevIssuer, verifier: SessionVerifier) -> None:
    with pytest.raises(SessionError):
        await verifier.verify(issuer.mint("alice", now=time.time() + 3600))


async def test_unknown_kid_rejected(verifier: SessionVerifier) -> None:
    other = DevIssuer.generate()
    with pytest.raises(SessionError):
        await verifier.verify(other.mint("alice"))


@pytest.mark.parametrize("field,value", [("iss", "evil"), ("aud", "other-service")])
async def test_wrong_issuer_or_audience_rejected(
    verifier: SessionVerifier, field: str, value: str
) -> None:
    other = DevIssuer.generate(**{"issuer" if field == "iss" else "audience": value})
    verifier.jwks.keys[other.kid] = __import__("jwt").PyJWK(other.jwks()["keys"][0])
    with pytest.raises(SessionError):
        await verifier.verify(other.mint("alice"))


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c", "x" * 5000, "....", "eyJ.eyJ.e"])
async def test_garbage_rejected(verifier: SessionVerifier, garbage: str) -> None:
    with pytest.raises(SessionError):
        await verifier.verify(garbage)


def test_age_claims() -> None:
    now = time.mktime((2026, 6, 1, 0, 0, 0, 0, 0, 0))
    assert age_from_claim("adult", now) == 18
    assert age_from_claim("minor", now) == 13
    assert age_from_claim(2010, now) == 15  # might be 15 or 16: take the lower
    assert age_from_claim("unknown", now) is None
    assert age_from_claim(True, now) is None


async def test_verified_session_names_its_key(issuer: DevIssuer, verifier: SessionVerifier) -> None:
    assert (await verifier.verify(issuer.mint("alice"))).kid == issuer.kid


async def test_a_retired_session_key_is_reported_once_the_file_changes(
    issuer: DevIssuer, tmp_path: Path
) -> None:
    path = tmp_path / "session-keys" / JWKS_FILE
    now = [1000.0]
    jwks = JwksSource(str(path), clock=lambda: now[0], poll_s=1.0)
    retired: list[list[str]] = []
    jwks.retired_listeners.append(retired.append)
    successor = DevIssuer.generate()
    successor.write_jwks(path)
    jwks.poll()  # within poll_s of the last check: not even a stat
    assert issuer.kid in jwks.keys and retired == []
    now[0] += 1.0
    jwks.poll()
    assert set(jwks.keys) == {successor.kid}
    assert retired == [[issuer.kid]]
    jwks.poll()
    now[0] += 1.0
    jwks.poll()  # unchanged: nothing new retired
    assert retired == [[issuer.kid]]


@pytest.mark.parametrize("doc", [b"[]", b"null", b'{"keys": 1}', b'"keys"'])
async def test_a_jwks_that_is_not_an_object_keeps_the_keys(
    issuer: DevIssuer, verifier: SessionVerifier, tmp_path: Path, doc: bytes
) -> None:
    path = tmp_path / "session-keys" / JWKS_FILE
    retired: list[list[str]] = []
    verifier.jwks.retired_listeners.append(retired.append)
    path.write_bytes(doc)
    await verifier.jwks.refresh()
    verifier.jwks.poll()
    assert (await verifier.verify(issuer.mint("alice"))).sub == "alice"
    assert retired == []


async def test_a_kid_republished_with_another_key_counts_as_retired(
    issuer: DevIssuer, tmp_path: Path
) -> None:
    path = tmp_path / "session-keys" / JWKS_FILE
    jwks = JwksSource(str(path), poll_s=0.0)
    retired: list[list[str]] = []
    jwks.retired_listeners.append(retired.append)
    path.write_text(json.dumps(issuer.jwks()))  # the same document again: nothing retired
    jwks.poll()
    assert retired == []
    impostor = DevIssuer(Ed25519PrivateKey.generate(), issuer.kid, issuer="i", audience="a")
    impostor.write_jwks(path)
    jwks.poll()
    assert retired == [[issuer.kid]]
