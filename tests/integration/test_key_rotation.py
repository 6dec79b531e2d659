"""Key ring: files, rotation steps, and a rotation under concurrent fetches with zero failures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from cdn_auth import pointer
from cdn_auth.cli import main as cli_main
from cdn_auth.errors import KeyRingError
from cdn_auth.keyring import PRIVATE_DIR, RING_FILE, VERIFY_JWKS_FILE, KeyRing, KeyRingSource
from cdn_auth.keyset import KeySet
from cdn_auth.token_format import Alg
from dm.identity import DevIssuer

from ..support.services import Edge, bearer


def test_private_keys_are_owner_only(ring: KeyRing) -> None:
    assert ring.path.stat().st_mode & 0o777 == 0o700
    for f in (ring.path / PRIVATE_DIR).iterdir():
        assert f.stat().st_mode & 0o777 == 0o600
    assert (ring.path / RING_FILE).stat().st_mode & 0o777 == 0o600
    jwks = json.loads((ring.path / VERIFY_JWKS_FILE).read_text())
    assert all("d" not in k and k["kty"] == "OKP" for k in jwks["keys"])  # public only


def test_group_readable_key_refused(ring: KeyRing) -> None:
    key = next((ring.path / PRIVATE_DIR).iterdir())
    key.chmod(0o640)
    with pytest.raises(KeyRingError):
        KeyRing.load(ring.path).signer()


def test_rotation_steps(ring: KeyRing) -> None:
    old = ring.signing_kid
    ring = ring.add(now=1000)
    new = ring.keys[-1].kid
    assert ring.signing_kid == old and len(ring.verify_jwks()["keys"]) == 2
    ring = ring.switch(now=2000)
    assert ring.signing_kid == new
    ring, gone = ring.retire(900, now=2000 + 900)  # tokens may still be live: keep it
    assert gone == [] and len(ring.keys) == 2
    ring, gone = ring.retire(900, now=2000 + 900 + 5)
    assert gone == [old] and [k.kid for k in ring.keys] == [new]
    assert not (ring.path / PRIVATE_DIR / f"{old}.key").exists()
    assert KeyRing.load(ring.path).signing_kid == new


def test_corrupt_ring_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / RING_FILE).write_text("{not json")
    with pytest.raises(KeyRingError):
        KeyRing.load(tmp_path / "r")
    with pytest.raises(KeyRingError):
        KeyRing.load(tmp_path / "missing")


def test_keyset_reloads_on_change_and_keeps_keys_through_a_bad_file(ring: KeyRing) -> None:
    now = [0.0]
    ks = KeySet(ring.path / VERIFY_JWKS_FILE, clock=lambda: now[0])
    ring2 = ring.add()
    assert ring2.keys[-1].kid in ks.refresh_for_unknown_kid()
    (ring.path / VERIFY_JWKS_FILE).write_text("garbage")
    now[0] = 10.0
    assert len(ks.current()) == 2  # a bad file does not take the edge down


def test_cli_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "cli-ring")
    assert cli_main(["keys", "init", "--dir", d, "--alg", "hmac"]) == 0
    assert cli_main(["keys", "jwks", "--dir", d]) == 2  # secrets need an explicit flag
    assert cli_main(["keys", "rotate", "--dir", d, "--publish-wait-s", "0"]) == 0
    assert cli_main(["keys", "list", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert "signing" in out and "superseded" in out
    assert cli_main(["keys", "init", "--dir", d]) == 1  # refuses to overwrite


async def test_rotation_under_concurrent_fetches_has_no_failures(
    edge: Edge, issuer: DevIssuer, ring: KeyRing
) -> None:
    media, _ = await edge.add_media(size=4096)
    source = KeyRingSource(ring.path, recheck_s=0)
    auth = bearer(issuer.mint("bob"))
    results: dict[str, int] = {}
    stop = asyncio.Event()

    async def player() -> None:
        while not stop.is_set():
            signer = source.signer()
            ptr = pointer.mint(
                signer,
                media_id=media.id,
                sub="bob",
                conversation_id="c",
                message_id="m",
                now=time.time(),
            )
            async with edge.client.get(
                f"/m/{media.id}", params={"pointer": ptr}, headers={**auth, "Range": "bytes=0-99"}
            ) as r:
                await r.read()
                key = f"{r.status}:{signer.kid}"
                results[key] = results.get(key, 0) + 1

    tasks = [asyncio.create_task(player()) for _ in range(8)]
    await asyncio.sleep(0.3)
    old = ring.signing_kid
    ring = ring.add()  # 1: publish
    await asyncio.sleep(0.3)
    ring = ring.switch()  # 2: sign with the new key
    await asyncio.sleep(0.3)
    ring, gone = ring.retire(900, now=time.time() + 905)  # 3: as if the lifetime had passed
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    assert gone == [old]
    assert {k for k in results if not k.startswith("206:")} == set(), results
    assert results.get(f"206:{old}", 0) > 0 and results.get(f"206:{ring.signing_kid}", 0) > 0


async def test_hmac_and_ed25519_rings_are_separate(tmp_path: Path) -> None:
    h = KeyRing.create(tmp_path / "h", Alg.HMAC_SHA256)
    jwks = h.verify_jwks()
    assert jwks["keys"][0]["kty"] == "oct" and jwks["keys"][0]["alg"] == "HS256"
