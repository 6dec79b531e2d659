"""The revocation view's sign-outs (``playback_ended``): the latest time per user and
device, forgotten a window after the latest, and the nginx front's dependency for them."""

from __future__ import annotations

import dataclasses

from cdn_auth.authorizer import Decision
from cdn_auth.front_feed import decision_deps, dep, event_deps
from cdn_auth.media import AudienceRules, Media
from cdn_auth.revocation import RevocationEvent, playback_ended
from cdn_auth.revocation_view import RevocationView
from cdn_auth.session import Session


def _at(ev: RevocationEvent, at_s: float) -> RevocationEvent:
    return dataclasses.replace(ev, at_ms=int(at_s * 1000))


def test_a_sign_out_is_kept_for_the_window_after_the_latest() -> None:
    now = [1000.0]
    view = RevocationView(60, lambda: now[0])
    view.apply(_at(playback_ended("bob", "laptop"), 1000))
    assert view.playback_ended_at("bob", "laptop") == 1000
    assert view.playback_ended_at("bob", "phone") is None and len(view) == 1
    view.apply(_at(playback_ended("bob", "laptop"), 1030))  # signed out again
    assert view.playback_ended_at("bob", "laptop") == 1030 and view.queued == 1
    now[0] = 1061
    view.expire()
    assert view.playback_ended_at("bob", "laptop") == 1030  # 60 s after the latest
    now[0] = 1091
    assert view.expire() == 1
    assert view.playback_ended_at("bob", "laptop") is None and len(view) == 0


def test_a_sign_out_round_trips_the_stream_and_names_the_fronts_dependency() -> None:
    ev = playback_ended("bob", "laptop")
    back = RevocationEvent.from_stream("1796000000000-0", ev.fields())
    assert (back.kind, back.user_id, back.device_id, back.at_ms) == (
        "playback_ended",
        "bob",
        "laptop",
        1796000000000,
    )
    assert event_deps(back) == [dep("b", "bob", "laptop")]
    assert dep("b", "bob", "laptop") != dep("b", "bob", "phone")


def test_a_cookie_decision_depends_on_its_device_and_a_bearer_one_does_not() -> None:
    media = Media(
        "m_1",
        "alice",
        "public",
        False,
        AudienceRules(),
        "active",
        "video/mp4",
        1,
        "0" * 64,
        "v.mp4",
        0,
    )
    cookie = Session("bob", "laptop", 30, "GB", frozenset(), 0, 600)  # kid "": a cookie
    bearer = dataclasses.replace(cookie, kid="idp-1")
    assert dep("b", "bob", "laptop") in decision_deps(Decision(media, cookie, None, through_ms=0))
    assert not any(
        d.startswith("b:") for d in decision_deps(Decision(media, bearer, None, through_ms=0))
    )
