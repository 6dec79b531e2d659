"""Processes that start together on an empty key directory end up with one key.

Two dm processes sharing ``DM_ISSUER_DIR`` (and a franking key path) used to check for the
key file, both find none, each write its own and keep it in memory: each then refused the
sessions the other signed (a 401 in tests/integration/test_stream_leases.py, once in a
full suite run) and the franking countersignatures it made.  The same held for a key ring
two edges create at once.  Keys are now created exclusively, and the losers load the
winner's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
from pathlib import Path
from cdn_auth.keyring import KeyRing
from dm.identity import DevIssuer
from service_kernel.files import load_or_create_secret

d = Path(sys.argv[1])
sys.stdin.readline()  # start together
secret = load_or_create_secret(d / "franking.key").hex()
issuer = DevIssuer.load_or_create(d / "issuer").kid
ring = KeyRing.load_or_create(d / "ring")
print(json.dumps({"secret": secret, "issuer": issuer, "ring": ring.signing_kid}))
"""

PROCESSES = 6


@pytest.mark.parametrize("attempt", range(3))
def test_processes_starting_together_share_one_key_of_each_kind(tmp_path: Path, attempt: int) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        for _ in range(PROCESSES)
    ]
    for p in procs:  # all are up (imports done) before any creates a key
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({o["secret"] for o in outs}) == 1
    assert len({o["issuer"] for o in outs}) == 1
    assert len({o["ring"] for o in outs}) == 1
    # Once all are up, the JWKS on disk verifies the ring's signing key, and only the ring's
    # key is left.
    jwks = json.loads((tmp_path / "ring" / "verify.jwks.json").read_text())
    assert [k["kid"] for k in jwks["keys"]] == [outs[0]["ring"]]
    keys = {f.stem for f in (tmp_path / "ring" / "private").glob("*.key")}
    assert keys == {outs[0]["ring"]}


def test_a_ring_creator_that_loses_the_race_never_writes_a_jwks(tmp_path: Path) -> None:
    """A loser used to publish a JWKS of its own key (without the winner's) for a moment
    before rewriting the winner's: tokens the winner signed then failed at edges reading
    it.  Creators now take turns under a lock: the loser, queued behind the winner, finds
    the ring made and writes nothing."""
    import threading
    import time

    from cdn_auth.errors import KeyRingError
    from cdn_auth.keyring import LOCK_FILE, VERIFY_JWKS_FILE, KeyRing
    from cdn_auth.token_format import Alg
    from service_kernel.files import held_lock

    ring_dir = tmp_path / "ring"
    ring_dir.mkdir(mode=0o700)
    errors: list[BaseException] = []

    def loser() -> None:
        try:
            KeyRing.create(ring_dir)
        except KeyRingError as exc:
            errors.append(exc)

    with held_lock(ring_dir / LOCK_FILE):
        t = threading.Thread(target=loser)
        t.start()
        time.sleep(0.3)  # past its "no ring yet" check, now waiting on the lock
        assert t.is_alive()
        winner = KeyRing._create_locked(ring_dir, Alg.ED25519, None)
        jwks = ring_dir / VERIFY_JWKS_FILE
        before = (jwks.stat().st_ino, jwks.read_bytes())
    t.join(10)
    assert len(errors) == 1 and "already holds" in str(errors[0])
    assert (jwks.stat().st_ino, jwks.read_bytes()) == before  # never rewritten
    assert [k["kid"] for k in json.loads(before[1])["keys"]] == [winner.signing_kid]
    assert {f.stem for f in (ring_dir / "private").glob("*.key")} == {winner.signing_kid}
