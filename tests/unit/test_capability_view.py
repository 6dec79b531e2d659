"""The revocation view remembers a revoked capability for the capability window, longer
than the token window, on its own expiry queue; a starting edge loads that much."""

from __future__ import annotations

from cdn_auth.revocation import RevocationEvent, capability_revoked, grant_revoked
from cdn_auth.revocation_view import RevocationView


def _at(ev: RevocationEvent, at_s: float) -> RevocationEvent:
    return RevocationEvent(ev.kind, grant_id=ev.grant_id, cap_id=ev.cap_id, at_ms=int(at_s * 1000))


def test_capability_revocation_outlives_the_token_window() -> None:
    now = [1000.0]
    view = RevocationView(60, lambda: now[0], capability_window_s=3600)
    assert view.load_window_s == 3600
    view.apply(_at(capability_revoked("c_1"), 1000))
    view.apply(_at(grant_revoked("g_1"), 1000))
    assert "c_1" in view.capabilities and view.is_grant_revoked("g_1") and len(view) == 2
    now[0] = 1000 + 61
    view.expire()
    assert "c_1" in view.capabilities and not view.is_grant_revoked("g_1")
    now[0] = 1000 + 3601
    assert view.expire() == 1
    assert "c_1" not in view.capabilities and len(view) == 0


def test_a_repeated_capability_revocation_extends_it() -> None:
    now = [0.0]
    view = RevocationView(60, lambda: now[0], capability_window_s=100)
    view.apply(_at(capability_revoked("c_1"), 0))
    view.apply(_at(capability_revoked("c_1"), 50))
    now[0] = 120
    view.expire()
    assert "c_1" in view.capabilities
    now[0] = 151
    view.expire()
    assert "c_1" not in view.capabilities


def test_without_a_capability_window_the_token_window_applies() -> None:
    view = RevocationView(60, lambda: 0.0)
    assert view.load_window_s == 60 == view.capabilities.window_s
