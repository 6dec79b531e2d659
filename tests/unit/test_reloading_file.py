"""service_kernel.reloading_file: re-read on change, keep the last good value, pace by clock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cdn_auth.keyring import RING_FILE, KeyRing, KeyRingSource
from service_kernel.files import atomic_write
from service_kernel.reloading_file import ReloadingFile


def _watch(path: Path, now: list[float], seen: list[dict[str, int]]) -> ReloadingFile[dict[str, int]]:
    f = ReloadingFile(
        path,
        lambda: dict(json.loads(path.read_text())),
        what="test file",
        clock=lambda: now[0],
        recheck_s=1.0,
    )
    f.on_change.append(seen.append)
    return f


def test_first_load_raises_when_the_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _watch(tmp_path / "absent.json", [0.0], [])


def test_reloads_a_replaced_file_only_after_recheck_s(tmp_path: Path) -> None:
    path, now = tmp_path / "v.json", [0.0]
    seen: list[dict[str, int]] = []
    path.write_text('{"a": 1}')
    f = _watch(path, now, seen)
    atomic_write(path, b'{"a": 2}', 0o644)  # renamed over: a new inode
    assert f.current() == {"a": 1}  # not re-checked yet
    now[0] = 1.0
    assert f.current() == {"a": 2}
    assert seen == [{"a": 2}]
    assert f.current() is f.current()  # unchanged: not parsed again


def test_check_sees_an_in_place_rewrite_at_once(tmp_path: Path) -> None:
    path, now = tmp_path / "v.json", [0.0]
    seen: list[dict[str, int]] = []
    path.write_text('{"a": 1}')
    f = _watch(path, now, seen)
    path.write_text('{"a": 22}')  # same inode, other size
    assert f.check() is True
    assert f.value == {"a": 22}


def test_a_bad_or_missing_file_keeps_the_last_good_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, now = tmp_path / "v.json", [0.0]
    seen: list[dict[str, int]] = []
    path.write_text('{"a": 1}')
    f = _watch(path, now, seen)
    path.write_text("{not json")
    assert f.check() is False
    assert f.value == {"a": 1}
    assert any(
        r.getMessage() == "test file unreadable; keeping the previous keys" for r in caplog.records
    )
    os.unlink(path)
    assert f.check() is False
    assert f.value == {"a": 1}
    path.write_text('{"a": 3}')
    assert f.check() is True
    assert f.value == {"a": 3}
    assert seen == [{"a": 3}]


def test_key_ring_source_keeps_its_ring_through_a_corrupt_ring_file(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "ring")
    source = KeyRingSource(ring.path, recheck_s=0)
    signing = source.signer().kid
    (ring.path / RING_FILE).write_text("{half a file")
    assert source.signer().kid == signing
    ring = ring.add().switch()  # a good file again: the new key signs
    assert source.signer().kid == ring.signing_kid != signing
