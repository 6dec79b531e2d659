"""plain+scan measures a scanning dm or nothing: against an external deployment without a
scanning dm the run is refused with a clear message, never silently sent to the plain dm."""

from __future__ import annotations

import pytest

from loadtests.load.runner import options
from loadtests.load.seed import NO_SCAN_DM, Targets

EXTERNAL = ["--dm-url", "http://dm.example", "--edge-url", "http://edge.example"]


def test_plain_scan_against_external_dm_needs_a_scanning_dm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (EXTERNAL, [*EXTERNAL, "--modes", "plain,plain+scan"]):
        with pytest.raises(SystemExit) as exc:
            options(argv)
        assert exc.value.code == 2
        assert NO_SCAN_DM in capsys.readouterr().err
    # Without plain+scan, or with a scanning dm to send it to, the run goes ahead.
    assert options([*EXTERNAL, "--modes", "plain,sealed"]).modes == ["plain", "sealed"]
    o = options([*EXTERNAL, "--scan-dm-url", "http://scan.example"])
    assert "plain+scan" in o.modes and o.scan_dm_url == "http://scan.example"


def test_scanned_sends_never_fall_back_to_the_plain_dm() -> None:
    assert Targets("http://dm", "http://edge", "http://scan").send_base("plain+scan") == "http://scan"
    assert Targets("http://dm", "http://edge", "http://scan").send_base("plain") == "http://dm"
    with pytest.raises(ValueError, match="plain\\+scan needs a dm that scans"):
        Targets("http://dm", "http://edge").send_base("plain+scan")
    with pytest.raises(ValueError):
        Targets("http://dm", "http://edge").send_base("view-plain+scan")
