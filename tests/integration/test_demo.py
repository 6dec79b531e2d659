"""The README's main command, end to end: the demo must show both the stream and the refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.demo import demo


async def test_demo_streams_to_recipient_and_refuses_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await demo(tmp_path / "demo") == 0
    out = capsys.readouterr().out
    assert "sha256 matches" in out
    assert "403 pointer_wrong_recipient" in out
    assert "410 message_unsent" in out
    assert "206 bytes 0-1048575/4194304" in out
