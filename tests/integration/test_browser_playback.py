"""The web client and browser playback in a real headless Chromium (Debian's, via Selenium).

One stack of real processes (``process_stack(web=True)``: Redis, the edge, dm;
exactly what ``python -m loadtests web`` runs) and three browser profiles:
Alice and Bob share a real H.264/AAC MP4 (or VP9/Opus WebM if this Chromium
cannot play H.264) through the web client; Carol holds Bob's link.  Waits are
on conditions with generous deadlines (a loaded 2-core machine); the one
duration asserted is the unsend's: the player's first refusal within the
edge's revocation bound plus a wide margin.  Skips without
chromium/chromedriver or ffmpeg.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdn_auth.playback import COOKIE_NAME
from cdn_auth.settings import EdgeSettings
from loadtests.sample_video import Container, FfmpegUnavailable, find_ffmpeg, make_video
from loadtests.stack.processes import ProcStack, process_stack

from ..support.browser import Browser, Request, find_chromium

pytestmark = pytest.mark.timeout(240)

ARTIFACTS = Path(os.environ.get("PDM_ARTIFACTS_DIR", "var/artifacts"))
H264_AAC = 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"'
VP9_OPUS = 'video/webm; codecs="vp9, opus"'
#: Bob's download rate: about 1.5 times the clip's bitrate, so he plays smoothly while most of
#: the file is not yet buffered, and a seek or a later position needs a new Range request.
BOB_DOWNLOAD_BYTES_S = 300 * 1024
CLIP_S = 30
#: The revocation bound the stack's edge promises (docs/operations.md, section 5.3): it has
#: applied an unsend within it or refuses pointers with 503.  The stack runs the default.
REVOCATION_BOUND_S = float(EdgeSettings.model_fields["staleness_bound_s"].default)
#: What the browser adds between the unsend's answer and the player's next Range request on a
#: loaded 2-core machine: the push to Bob's page, this test noticing it, and the seek it makes.
BROWSER_MARGIN_S = 10.0


@dataclass
class Web:
    stack: ProcStack
    video: Path
    tmp: Path

    def browser(self, name: str) -> Browser:
        return Browser(self.tmp / f"profile-{name}")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    find_chromium()
    try:
        find_ffmpeg()
    except FfmpegUnavailable as exc:
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("browser")
    with process_stack(tmp / "stack", web=True) as st:
        yield Web(st, tmp / "clip", tmp)


def _sign_in(b: Browser, app_url: str, name: str = "") -> str:
    b.driver.get(app_url)
    b.wait("the dev issuer's sign-in", lambda: b.by_css("#dev-sign-in").is_displayed())
    b.by_css("#new-name").send_keys(name)
    b.by_css("#create-user").click()
    user = b.wait("signed in", lambda: b.by_css("#whoami").get_attribute("data-user"))
    b.wait("the live stream", lambda: b.js("return document.body.dataset.live") == "1")
    return str(user)


def _video_state(b: Browser, message_id: str) -> dict[str, Any] | None:
    state = b.js(
        """
        const v = document.querySelector(`#messages li[data-id="${arguments[0]}"] video`);
        if (!v) return null;
        const ranges = [];
        for (let i = 0; i < v.buffered.length; i++) {
            ranges.push([v.buffered.start(i), v.buffered.end(i)]);
        }
        return {t: v.currentTime, duration: v.duration, ready: v.readyState, seeking: v.seeking,
                paused: v.paused, error: v.error ? v.error.code : null, buffered: ranges};
    """,
        message_id,
    )
    return dict(state) if state else None


def _unbuffered_time(
    state: dict[str, Any], after: float, before: float | None = None, margin: float = 1.5
) -> float | None:
    """A position in ``[after, before)`` at least ``margin`` s away from anything buffered.

    Behind the play position is the safe place to look after a seek: the download in
    flight runs forward from there, so a hole behind it needs a new request."""
    end = float(state["duration"]) - 1.0 if before is None else before
    t = after
    while t < end:
        if all(not (s - margin <= t <= e + margin) for s, e in state["buffered"]):
            return t
        t += 0.5
    return None


def _media(reqs: list[Request], media_id: str) -> list[Request]:
    return [r for r in reqs if f"/m/{media_id}" in r.url]


def _tokens(b: Browser) -> str:
    saved = b.js("return sessionStorage.getItem('pdm.session')")
    return str(json.loads(saved)["token"])


def _media_cookies(b: Browser) -> set[str]:
    """Every media cookie value the browser holds or has sent (the DevTools log keeps the
    Cookie headers really sent)."""
    held = b.driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
    values = {c["value"] for c in held if c["name"] == COOKIE_NAME}
    for r in b.network():
        for part in (r.header("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE_NAME and value:
                values.add(value)
    return values


def test_two_users_share_and_play_in_chromium(web: Web) -> None:
    """Send, live delivery, playback past 2 s, seek with Range, forwarded link refused (signed
    in as someone else, and signed out), unsend seen by the player; no session anywhere it
    should not be."""
    app_url = f"{web.stack.dm_url}/app/"
    alice, bob, carol = web.browser("alice"), web.browser("bob"), web.browser("carol")
    try:
        _run(web, app_url, alice, bob, carol)
    finally:
        for b in (alice, bob, carol):
            b.close()


def _run(web: Web, app_url: str, alice: Browser, bob: Browser, carol: Browser) -> None:
    a_id, b_id = _sign_in(alice, app_url, "alice"), _sign_in(bob, app_url, "bob")
    can_play = "return document.createElement('video').canPlayType(arguments[0])"
    container: Container = "mp4" if alice.js(can_play, H264_AAC) else "webm"
    if container == "webm":
        assert alice.js(can_play, VP9_OPUS), "this Chromium plays neither H.264/AAC nor VP9/Opus"
    clip = make_video(web.video.with_suffix(f".{container}"), container=container, seconds=CLIP_S)
    print(f"\nclip: {clip} ({container}, {clip.stat().st_size} bytes)")

    # Alice uploads the clip through the edge (multipart, CORS with credentials).
    alice.by_css("#upload-file").send_keys(str(clip.resolve()))
    alice.by_css("#upload").click()
    media_id = alice.wait("the upload", lambda: alice.by_css("#my-media li").get_attribute("data-id"))

    # Alice opens a plain conversation with Bob; Bob sees it appear live and opens it.
    alice.by_css("#new-members").send_keys(b_id)
    alice.by_css("#new-conversation button").click()
    alice.wait("the conversation", lambda: alice.by_css("#conversation-view").is_displayed())
    assert alice.text("#conversation-mode") == "plain mode"
    bob.wait(
        "the conversation to appear, marked plain",
        lambda: "plain" in bob.text("#conversations li .badge"),
    )
    bob.by_css("#conversations li").click()
    bob.wait("the conversation view", lambda: bob.by_css("#conversation-view").is_displayed())
    bob.driver.set_network_conditions(
        offline=False, latency=1, download_throughput=BOB_DOWNLOAD_BYTES_S, upload_throughput=1024 * 1024
    )

    # Alice sends; Bob receives it over the WebSocket (his conversation view is already open).
    alice.by_css("#text").send_keys("watch this")
    alice.by_css("#attach").click() if not alice.by_css("#attach").is_selected() else None
    alice.by_css("#composer button").click()
    message_id = alice.wait(
        "the sent message", lambda: alice.by_css("#messages li").get_attribute("data-id")
    )
    bob.wait("live delivery", lambda: bob.all_by_css(f'#messages li[data-id="{message_id}"] video'))
    url = bob.by_css(f'#messages li[data-id="{message_id}"] video').get_attribute("src")
    assert "pointer=" in url

    # Bob plays past 2 s, and time advances.
    bob.js("document.querySelector(`#messages li[data-id='${arguments[0]}'] video`).play()", message_id)
    first = bob.wait(
        "playback past 2 s",
        lambda: (s := _video_state(bob, message_id)) and s["t"] > 2.0 and s,
        timeout_s=60,
    )
    assert first["error"] is None
    bob.wait(
        "currentTime advancing",
        lambda: (
            _video_state(bob, message_id)["t"]  # type: ignore[index]
            > first["t"] + 0.5
        ),
        timeout_s=30,
    )
    shot = bob.screenshot(ARTIFACTS / "browser-bob-playing.png")
    print(f"screenshot: {shot.resolve()}")

    # Seek into what is not buffered yet: a new Range request, answered 206, and play on.
    # Far enough ahead to leave a hole behind the new position, for the unsend check below.
    seek_to = _unbuffered_time(_video_state(bob, message_id) or {}, after=12.0, margin=4.0)
    assert seek_to is not None, "the clip was fully buffered; the throttle did not hold"
    target = seek_to
    bob.js(
        "document.querySelector(`#messages li[data-id='${arguments[0]}'] video`)"
        ".currentTime = arguments[1]",
        message_id,
        target,
    )
    bob.wait(
        "playing after the seek",
        lambda: (s := _video_state(bob, message_id)) and not s["seeking"] and s["t"] > target + 0.5,
        timeout_s=60,
    )
    media_reqs = _media(bob.network(), media_id)
    ranged = [
        r
        for r in media_reqs
        if r.type == "Media"
        and r.status == 206
        and (r.header("Range") or "bytes=0-").split("=")[1].split("-")[0] not in ("", "0")
    ]
    assert ranged, [(r.type, r.status, r.header("Range")) for r in media_reqs]

    # Carol, signed out, opens Bob's link: 401.  Signed in as herself: 403, said in words.
    carol.driver.get(url)
    carol.wait("the refusal", lambda: "session_missing" in carol.text("body"))
    assert any(r.status == 401 for r in _media(carol.network(), media_id))
    _sign_in(carol, app_url)
    carol.by_css("#link-url").send_keys(url)
    carol.by_css("#open-link button").click()
    refusal = carol.wait(
        "the refusal in words",
        lambda: (
            (el := carol.by_css("#link-player .status"))
            and "refusal" in (el.get_attribute("class") or "")
            and el.text
        ),
    )
    assert "shared with someone else" in refusal and "403" in refusal, refusal
    print(f"screenshot: {carol.screenshot(ARTIFACTS / 'browser-carol-refused.png').resolve()}")
    assert any(r.status == 403 for r in _media(carol.network(), media_id))

    # Alice unsends while Bob's player is open: Bob's page shows the unsend, and the player's
    # next Range request is refused (410) and explained.
    alice.by_css(f'#messages li[data-id="{message_id}"] button.unsend').click()
    bob.wait(
        "the unsend pushed",
        lambda: (
            "unsent"
            in (bob.by_css(f'#messages li[data-id="{message_id}"]').get_attribute("class") or "")
        ),
    )
    state = _video_state(bob, message_id) or {}
    gap = _unbuffered_time(state, after=0.0, before=float(state["t"]))
    assert gap is not None, f"no unbuffered hole behind the play position: {state}"
    bob.js(
        "document.querySelector(`#messages li[data-id='${arguments[0]}'] video`)"
        ".currentTime = arguments[1]",
        message_id,
        gap,
    )
    try:
        words = bob.wait(
            "the player's refusal",
            lambda: (
                (el := bob.by_css(f'#messages li[data-id="{message_id}"] .status'))
                and el.get_attribute("data-code") == "message_unsent"
                and el.text
            ),
            timeout_s=60,
        )
    except AssertionError:
        print(
            "diagnostics:",
            gap,
            state,
            _video_state(bob, message_id),
            bob.text(f'#messages li[data-id="{message_id}"] .status'),
            [(r.type, r.status, r.header("Range")) for r in _media(bob.network(), media_id)],
        )
        raise
    assert "unsent by its sender" in words and "410" in words, words
    bob_media = [r for r in _media(bob.network(), media_id) if r.type == "Media"]
    refused = [r for r in bob_media if r.status == 410 and r.answered_mono is not None]
    assert refused, "the player itself made no refused request"
    # Timed by the browsers' own DevTools clocks: from Alice's page getting the unsend's answer
    # to Bob's player getting its first refusal.
    unsend = next(
        r
        for r in alice.network()
        if r.method == "DELETE" and r.url.endswith(f"/messages/{message_id}") and r.status == 200
    )
    assert unsend.answered_mono is not None
    first_refusal = min(r.answered_mono for r in refused if r.answered_mono is not None)
    refused_after_s = first_refusal - unsend.answered_mono
    print(f"unsend answered -> the player's first refused Range request: {refused_after_s:.2f} s")
    assert 0 < refused_after_s <= REVOCATION_BOUND_S + BROWSER_MARGIN_S, refused_after_s
    # And the edge itself: nothing the player asked for once the bound had passed was served.
    late = [
        r
        for r in bob_media
        if r.sent_mono is not None and r.sent_mono > unsend.answered_mono + REVOCATION_BOUND_S
    ]
    assert all(r.status != 206 for r in late), [(r.status, r.header("Range")) for r in late]
    shot = bob.screenshot(ARTIFACTS / "browser-bob-unsent.png")
    print(f"screenshot: {shot.resolve()}")

    # Bob leaves: the conversation goes from his list, and Alice's page says he left.
    bob.by_css("#leave").click()
    bob.wait("the conversation gone", lambda: not bob.all_by_css("#conversations li"))
    alice.wait("the leave shown", lambda: f"{b_id} left" in alice.text("#notice"))

    # A sealed conversation shows its mode and that it needs the SDK; the page sends nothing.
    alice.by_css("#new-members").send_keys(b_id)
    alice.by_css("#new-mode option[value=sealed]").click()
    alice.by_css("#new-conversation button").click()
    alice.wait("the sealed conversation", lambda: alice.text("#conversation-mode") == "sealed mode")
    assert "need the SDK" in alice.text("#sealed-note")
    assert not alice.by_css("#send").is_enabled()

    # Alice signs out and back in by picking her user from this browser's list: the dev issuer
    # gives her a fresh session; the browser kept her id and name, never a token.
    sessions = {_tokens(alice), _tokens(bob), _tokens(carol)}
    cookies = set().union(*(_media_cookies(b) for b in (alice, bob, carol)))
    alice.by_css("#sign-out").click()
    pick = f'#known-user-list li[data-id="{a_id}"] button.pick'
    alice.wait("the remembered user offered", lambda: alice.by_css(pick).is_displayed())
    assert "alice" in alice.text(pick), alice.text(pick)
    assert not alice.by_css("#app").is_displayed(), "signed out, the page shows no app"
    print(f"screenshot: {alice.screenshot(ARTIFACTS / 'browser-alice-pick.png').resolve()}")
    alice.by_css(pick).click()
    assert (
        alice.wait("signed in again", lambda: alice.by_css("#whoami").get_attribute("data-user")) == a_id
    )
    alice.wait("the live stream", lambda: alice.js("return document.body.dataset.live") == "1")
    alice.wait("her conversations", lambda: len(alice.all_by_css("#conversations li")) == 2)
    assert _tokens(alice) not in sessions
    sessions.add(_tokens(alice))
    remembered = str(alice.js("return JSON.stringify(localStorage)"))
    assert a_id in remembered and not any(s in remembered for s in sessions), remembered
    cookies |= _media_cookies(alice)
    assert cookies, "no media cookie seen: the log check below would prove nothing"

    # No session token in any URL or Referer the browsers sent, nor in any service log; no
    # media cookie in the edge's or dm's logs either.
    for b in (alice, bob, carol):
        for r in b.network():
            for s in sessions:
                assert s not in r.url, r.url
                assert s not in (r.header("Referer") or ""), r.url
    for log in web.stack.root.glob("*.log"):
        text = log.read_text(errors="replace")
        for s in sessions:
            assert s not in text, f"a session token in {log.name}"
        for c in cookies:
            assert c not in text, f"a media cookie in {log.name}"
        assert "pointer=" not in text, f"a pointer in {log.name}"
    assert a_id != b_id


def test_two_users_in_one_profile_take_turns(web: Web) -> None:
    """One browser profile holds one media cookie; two users signed in in two tabs of it take
    turns: each player that finds the other's cookie renews its own once and plays."""
    clip = make_video(web.tmp / "short.mp4", seconds=6, kbps=500)
    b = web.browser("shared")
    d = b.driver
    try:
        alice_tab = d.current_window_handle
        _sign_in(b, f"{web.stack.dm_url}/app/")
        d.switch_to.new_window("tab")
        bob = _sign_in(b, f"{web.stack.dm_url}/app/")  # the cookie is now Bob's
        bob_tab = d.current_window_handle
        d.switch_to.window(alice_tab)
        b.by_css("#upload-file").send_keys(str(clip.resolve()))
        b.by_css("#upload").click()
        b.wait("the upload", lambda: b.all_by_css("#my-media li"))
        b.by_css("#new-members").send_keys(bob)
        b.by_css("#new-conversation button").click()
        b.wait("the conversation", lambda: b.by_css("#conversation-view").is_displayed())
        b.by_css("#composer button").click()
        play = "document.querySelector('#messages li video').play()"
        now = "return document.querySelector('#messages li video').currentTime"
        # The player loads its metadata at once (preload), finds Bob's cookie, renews Alice's
        # and loads again; a person presses play once it shows the video, as here.
        ready = "return document.querySelector('#messages li video').readyState >= 1"
        b.wait("Alice's copy", lambda: b.all_by_css("#messages li video"))
        b.wait("Alice's player ready", lambda: b.js(ready), timeout_s=60)
        b.js(play)
        b.wait("Alice playing with a renewed cookie", lambda: b.js(now) > 1.0, timeout_s=60)
        d.switch_to.window(bob_tab)
        b.wait("the conversation in Bob's tab", lambda: b.all_by_css("#conversations li"))
        b.by_css("#conversations li").click()
        b.wait("Bob's copy", lambda: b.all_by_css("#messages li video"))
        b.wait("Bob's player ready", lambda: b.js(ready), timeout_s=60)
        b.js(play)
        # The cookie was Alice's since her renewal: Bob's player needed its own again.
        b.wait("Bob playing with a renewed cookie", lambda: b.js(now) > 1.0, timeout_s=60)
    finally:
        b.close()
