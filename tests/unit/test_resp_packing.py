"""LeanConnection packs with hiredis: byte for byte what redis-py's own packer makes
(tests/vectors/resp_pack.json, and any arguments hypothesis draws), and the same error
for what redis-py refuses."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from service_kernel.redis_connection import LeanConnection

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "resp_pack.json").read_text())["vectors"]

lean = LeanConnection()
reference = Connection()


DECODE: dict[str, Any] = {"s": str, "i": int, "f": float, "b": base64.b64decode}


def untag(v: dict[str, Any]) -> Any:
    ((kind, value),) = v.items()
    return DECODE[kind](value)


def packed(conn: Connection, *args: Any) -> bytes:
    return b"".join(conn.pack_command(*args))


def test_hiredis_packs_for_the_services() -> None:
    assert lean._fast_pack, "hiredis is a dependency: the fast packer must be in use"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: str(untag(v["args"][0])))
def test_vectors(vector: dict[str, Any]) -> None:
    args = [untag(a) for a in vector["args"]]
    assert packed(lean, *args) == base64.b64decode(vector["packed_b64"])


def test_a_pipeline_packs_as_its_commands_in_order() -> None:
    cmds = [[untag(a) for a in v["args"]] for v in VECTORS]
    assert b"".join(lean.pack_commands(cmds)) == b"".join(reference.pack_commands(cmds))


argument = st.one_of(
    st.text(), st.binary(), st.integers(), st.floats(allow_nan=False), st.sampled_from(["+inf", "-inf"])
)
name = st.sampled_from(["GET", "SET", "EVALSHA", "SCRIPT LOAD", b"CLIENT SETNAME", "x y  z"])


@given(name, st.lists(argument, max_size=8))
def test_same_bytes_as_redis_py(cmd: Any, args: list[Any]) -> None:
    assert packed(lean, cmd, *args) == packed(reference, cmd, *args)


class Color(int):
    """An int subclass: redis-py packs it by its repr, so it keeps redis-py's packer."""

    def __repr__(self) -> str:
        return "Color.RED"


@pytest.mark.parametrize(
    "bad",
    [None, True, False, object(), bytearray(b"a"), memoryview(b"ab"), Color(1), "\udc80"],
    ids=repr,
)
def test_what_redis_py_refuses_or_packs_its_own_way_stays_its_own(bad: Any) -> None:
    try:
        expected: Any = packed(reference, "SET", "k", bad)
    except (DataError, UnicodeEncodeError) as exc:
        with pytest.raises(type(exc)):
            packed(lean, "SET", "k", bad)
    else:
        assert packed(lean, "SET", "k", bad) == expected


def test_another_encoding_keeps_redis_pys_packer() -> None:
    latin = LeanConnection(encoding="latin-1")
    assert not latin._fast_pack
    assert packed(latin, "SET", "k", "caf\u00e9") == packed(
        Connection(encoding="latin-1"), "SET", "k", "caf\u00e9"
    )
