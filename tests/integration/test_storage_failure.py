"""A storage failure on upload is a 503 with a clear code, never a 500.

The compose deployment once answered every upload with 500 (``PermissionError``): the
``origin`` volume was root-owned and the service runs as ``app``.  These tests make the
same failure for real: an origin directory the serving process cannot write.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dm.identity import DevIssuer

from ..support.media_api import upload_form
from ..support.services import Edge, bearer

NOBODY = 65534


@contextlib.contextmanager
def unwritable(root: Path) -> Iterator[None]:
    """Make ``root`` unwritable for this process: as root (who ignores permission bits),
    by running as ``nobody`` meanwhile (the directory's parents are 0700, owned by root);
    otherwise by taking the write bits away."""
    if os.geteuid() == 0:
        os.setegid(NOBODY)
        os.seteuid(NOBODY)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)
    else:
        mode = root.stat().st_mode
        root.chmod(0o500)
        try:
            yield
        finally:
            root.chmod(mode)


async def _upload(edge: Edge, session: str) -> tuple[int, dict[str, str], dict[str, object]]:
    async with edge.client.post(
        "/v1/media",
        data=upload_form({"content_type": "video/mp4"}, b"\x00" * 4096),
        headers=bearer(session),
    ) as r:
        return r.status, dict(r.headers), await r.json()


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


async def test_upload_to_unwritable_origin_is_503_not_500(
    edge: Edge, issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    session = issuer.mint("alice")
    root = edge.state.origin.root
    status, _, _ = await _upload(edge, session)  # writable: works (and warms the key caches)
    assert status == 201
    with caplog.at_level(logging.ERROR, logger="cdn_auth.origin"), unwritable(root):
        status, headers, body = await _upload(edge, session)
    assert status == 503, body
    assert body["error"]["code"] == "storage_unavailable"  # type: ignore[index]
    assert int(headers["Retry-After"]) > 0
    assert any(
        r.getMessage() == "origin storage failed" and getattr(r, "errno", "") == "EACCES"
        for r in caplog.records
    )
    assert not _leftovers(root)
    # Writable again: uploads recover without a restart.
    assert (await _upload(edge, session))[0] == 201


async def test_upload_when_uploads_is_not_a_directory_is_503(edge: Edge, issuer: DevIssuer) -> None:
    """A broken volume (here: ``uploads`` is a file) is the same kind of failure."""
    root = edge.state.origin.root
    (root / "uploads").write_bytes(b"not a directory")
    status, _, body = await _upload(edge, issuer.mint("alice"))
    assert (status, body["error"]["code"]) == (503, "storage_unavailable")  # type: ignore[index]
