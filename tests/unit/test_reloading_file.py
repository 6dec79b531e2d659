"""service_kernel.reloading_file: re-read on change, keep the last good value, pace by clock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cdn_auth.keyring import RING_FILE, KeyRing, KeyRingSource
from service_kernel.files import atomic_write
from service_kernel.reloading_file import RETRY_S, SETTLE_S, ReloadingFile


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


def _shape_sensitive(path: Path) -> dict[str, int]:
    """A loader written for the right document only, as key loaders are: JSON of another
    shape raises whatever it happens to raise (AttributeError, TypeError, KeyError...)."""
    doc = json.loads(path.read_text())
    return {str(k["kid"]): int(k["n"]) for k in doc.get("keys")}


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",  # ValueError
        b"[]",  # AttributeError: a list has no .get
        b"null",  # AttributeError
        b'{"keys": null}',  # TypeError: not iterable
        b'{"keys": [1]}',  # TypeError: int is not subscriptable
        b'{"keys": [{"n": 1}]}',  # KeyError
        b'{"keys": [{"kid": "a", "n": "x"}]}',  # ValueError from int()
        b"\xff\xfe",  # UnicodeDecodeError
    ],
)
def test_bad_content_of_any_kind_keeps_the_last_good_value(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"kid": "a", "n": 1}]}')
    f = ReloadingFile(path, lambda: _shape_sensitive(path), what="test keys", recheck_s=0.0)
    atomic_write(path, bad, 0o644)
    assert f.check() is False  # never raises
    assert f.current() == {"a": 1}
    atomic_write(path, b'{"keys": [{"kid": "b", "n": 2}]}', 0o644)
    assert f.check() is True
    assert f.value == {"b": 2}


def test_a_directory_in_place_of_the_file_keeps_the_last_good_value(tmp_path: Path) -> None:
    path, now = tmp_path / "v.json", [0.0]
    path.write_text('{"a": 1}')
    f = _watch(path, now, [])
    path.unlink()
    path.mkdir()
    assert f.check() is False
    assert f.value == {"a": 1}


def test_an_unchanged_bad_file_is_not_read_or_logged_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "v.json"
    path.write_text('{"a": 1}')
    reads: list[int] = []

    def load() -> dict[str, int]:
        reads.append(1)
        return dict(json.loads(path.read_text()))

    f = ReloadingFile(path, load, what="test file", recheck_s=0.0)
    atomic_write(path, b'{"a": ', 0o644)  # half-written
    for _ in range(50):  # a flood of unknown kids, each re-checking at once
        assert f.check() is False
    assert len(reads) == 2  # the first load, then the bad version once
    unreadable = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(unreadable) == 1
    atomic_write(path, b'{"a": 2', 0o644)  # changed, still bad: read (and logged) again once
    assert f.check() is False
    assert f.check() is False
    assert len(reads) == 3
    atomic_write(path, b'{"a": 2}', 0o644)  # fixed
    assert f.check() is True
    assert f.value == {"a": 2}
    assert f.failed_stamp is None


def test_a_missing_file_is_logged_once_until_it_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, now = tmp_path / "v.json", [0.0]
    path.write_text('{"a": 1}')
    f = _watch(path, now, [])
    path.unlink()
    for _ in range(20):
        assert f.check() is False
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1
    path.write_text('{"a": 5}')
    assert f.check() is True
    assert f.value == {"a": 5}


def test_a_failing_change_listener_does_not_escape_the_reload(tmp_path: Path) -> None:
    path, now = tmp_path / "v.json", [0.0]
    path.write_text('{"a": 1}')
    seen: list[dict[str, int]] = []
    f = _watch(path, now, [])

    def broken(_: dict[str, int]) -> None:
        raise RuntimeError("listener bug")

    f.on_change[:0] = [broken]
    f.on_change.append(seen.append)
    atomic_write(path, b'{"a": 2}', 0o644)
    assert f.check() is True
    assert f.value == {"a": 2}
    assert seen == [{"a": 2}]  # the listeners after the broken one still ran


def test_a_torn_read_is_retried_while_the_version_may_still_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file rewritten in place can be read torn, then finished within the same mtime tick
    at the same size: the same stamp.  The bad version is read again (paced, quietly) for
    SETTLE_S after the failure, so the finished file is not lost; then it is settled."""
    path = tmp_path / "v.json"
    path.write_text('{"a": 1}')
    now = [100.0]
    reads: list[int] = []

    def load() -> dict[str, int]:
        reads.append(1)
        return dict(json.loads(path.read_text()))

    f = ReloadingFile(path, load, what="test file", recheck_s=0.0, clock=lambda: now[0])
    path.write_bytes(b'{"a": 2 ')  # torn: the last byte not yet written
    stamp = os.stat(path)
    assert f.check() is False
    path.write_bytes(b'{"a": 2}')  # finished, same size
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the same tick: the same stamp
    assert f.check() is False  # paced: not again before RETRY_S
    now[0] += RETRY_S
    assert f.check() is True and f.value == {"a": 2}
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1
    # A version still bad after SETTLE_S is settled: not read again until it changes.
    path.write_bytes(b'{"a": 3 ')
    assert f.check() is False
    now[0] += SETTLE_S
    before = len(reads)
    for _ in range(20):
        now[0] += RETRY_S
        assert f.check() is False
    assert len(reads) == before
