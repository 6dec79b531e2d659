"""Schemathesis against both services, on real processes: all checks, stateful phase included.

The fuzzer reads each service's ``/openapi.json`` and runs every phase
(explicit examples, coverage, fuzzing, and the stateful phase that follows the
document's links: create user -> open conversation -> send -> read -> unsend,
register media -> read it -> grant -> revoke) with every check: no 5xx, every
status and body as documented, schema-valid requests accepted, schema-invalid
ones refused, auth enforced, deleted resources gone.  A fixed seed and a small
budget keep it reproducible and quick (about 20 s here); ``make fuzz-api`` runs it
longer (``PDM_FUZZ_EXAMPLES``, ``PDM_FUZZ_SEED``).

The services run as in the rest of the suite (real aiohttp servers on real
redis-server), with rate limits off so that the budget explores the contract
rather than 429s (tests/test_abuse_limits.py covers the limits).  Sessions come
from dm's dev issuer; the user has no roles, as a backend integrating the API
would (the role-gated routes answer it 403, as documented).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from ..support.services import DmFactory, EdgeFactory

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("redis_server", ["single"], indirect=True)]

SEED = int(os.environ.get("PDM_FUZZ_SEED", "20261201"))
EXAMPLES = int(os.environ.get("PDM_FUZZ_EXAMPLES", "30"))
#: Seconds for one service's run (past it the CLI is stopped and the test fails).
TIMEOUT_S = float(os.environ.get("PDM_FUZZ_TIMEOUT_S", "100"))

#: Checks configuration, and why it departs from the defaults.
CONFIG = """
[phases.stateful]
# Long enough for create user -> open conversation -> send -> read -> unsend, report
# (12 stopped reaching the report once POST /v1/dev/sessions joined the walk).
max-steps = 16

[phases.stateful.inference]
# The stateful phase follows the document's own links: those are the contract.  (Inferred
# links guess, e.g. that the device POST /v1/devices adds already has a key to delete.)
algorithms = []

[checks.positive_data_acceptance]
# Schema-valid requests must succeed, or fail for a reason no request schema can carry:
# 401/403/404/409/429 (schemathesis' defaults: who asks, what exists, state) and
#  410: the resource is gone (unsent message, revoked grant, media taken down);
#  413: text is limited in UTF-8 bytes, while JSON Schema counts characters;
#  416: a well-formed Range outside the file.
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "410", "413", "416", "429"]

[checks.negative_data_rejection]
# 413 refuses an over-long body or field, as 400 does a malformed one.
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]

[[operations]]
# The body's form depends on the conversation's mode, which the request does not carry:
# a plain conversation refuses envelopes and a sealed one text (400, documented), and a
# sealed body can only be right for the devices registered at that moment.
include-path-regex = "^/v1/(conversations/\\\\{cid\\\\}/messages|reports)$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "410", "413", "429"]

[[operations]]
# An ML-KEM-768 key must be a valid encapsulation key (coefficients below q), which no
# pattern can say; a random 1216-byte string is 400.
include-path = "/v1/devices/{device_id}/key"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

[[operations]]
# Nobody blocks or unblocks themselves (400): which id is the caller's is not the schema's.
include-path = "/v1/blocks/{user_id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
"""


async def _schemathesis(url: str, token: str, workdir: Path, *extra: str) -> tuple[int, str]:
    exe = Path(sys.executable).parent / "schemathesis"
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(SEED),
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "-H",
        f"Authorization: Bearer {token}",
        *extra,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            out, _ = await proc.communicate()  # the servers keep serving on this loop
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"schemathesis took over {TIMEOUT_S} s against {url}") from None
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def test_schemathesis_finds_nothing(
    make_dm: DmFactory, make_edge: EdgeFactory, tmp_path: Path
) -> None:
    # Browser playback on, so its routes are fuzzed past "not configured" (404).
    edge = await make_edge(rate_limits_enabled=False, playback_secret_path=tmp_path / "playback.key")
    dm = await make_dm(edge=edge, rate_limits_enabled=False)
    user = await dm.user()
    assert user.session_token is not None
    edge_url = str(dm.edge.client.make_url("")).rstrip("/")
    for name, url, extra in (
        # The WebSocket cannot be fuzzed over plain HTTP (tests/test_dm_plain.py and
        # test_slow_peers.py drive it); everything else is in.
        ("dm", dm.dm_url, ("--exclude-path", "/v1/stream")),
        ("edge", edge_url, ()),
    ):
        workdir = tmp_path / name
        workdir.mkdir()
        code, out = await _schemathesis(url, user.session_token, workdir, *extra)
        (tmp_path / f"{name}.log").write_text(out)
        tail = "\n".join(out.splitlines()[-150:])
        assert code == 0, f"schemathesis against {name}:\n{tail}"
        assert "Server error" not in out, tail
        # The stateful phase ran and followed every link the document declares (for dm:
        # user -> conversation -> send -> read -> unsend, report; for the edge: media ->
        # record, bytes, grant -> revoke).
        links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", out)
        assert links is not None and links.group(1) == links.group(2) != "0", tail
