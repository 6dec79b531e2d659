"""Test support: headless Chromium from the distribution, driven by Selenium through chromedriver.

Only the Debian packages are used (``chromium``, ``chromium-driver``): no
browser is downloaded.  Each :class:`Browser` is its own profile (a fresh
``--user-data-dir``), so cookies are never shared between the users a test
plays.  The DevTools performance log records every request the page makes
(URL, headers as sent, status), which is how the tests see Range requests,
refusals and the absence of session tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,1000",
    "--no-default-browser-check",
)


def find_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths, or skip the test with the reason."""
    browser = next(
        (
            p
            for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser"))
            if p and os.access(p, os.X_OK)
        ),
        None,
    )
    driver = next(
        (
            p
            for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver")
            if p and os.access(p, os.X_OK)
        ),
        None,
    )
    if browser is None or driver is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium "
            "chromium-driver; .ci/run installs them when root)"
        )
    return browser, driver


@dataclass
class Request:
    """One request the page made, from the DevTools log."""

    request_id: str
    url: str
    type: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    at: float = 0.0
    method: str = ""
    #: When the browser sent it and when its answer's headers arrived: DevTools' own event
    #: times (seconds of the system's monotonic clock, as ``time.monotonic()``), so they compare
    #: across browser profiles on one machine, unlike the log's times (when chromedriver
    #: happened to read the event).
    sent_mono: float | None = None
    answered_mono: float | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class Browser:
    def __init__(self, profile: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        chromium, chromedriver = find_chromium()
        profile.mkdir(parents=True, exist_ok=True)
        opts = Options()
        opts.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={profile}")
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(options=opts, service=Service(executable_path=chromedriver))
        self.driver.set_script_timeout(30)
        self.requests: dict[str, Request] = {}

    def close(self) -> None:
        self.driver.quit()

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, what: str, cond: Callable[[], T | None], timeout_s: float = 30.0) -> T:
        """Poll ``cond`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = cond()
                if value:
                    return value
            except Exception as exc:  # a stale element, or a page mid-load: poll again
                last_error = exc
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout_s:.0f} s waiting for {what}"
            + (f" (last error: {last_error})" if last_error else "")
        )

    def by_css(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all_by_css(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.by_css(css).text)

    def network(self) -> list[Request]:
        """Every request seen so far (the log is drained on each call and accumulated)."""
        entries: list[dict[str, Any]] = self.driver.get_log("performance")  # type: ignore[no-untyped-call]
        for entry in entries:
            msg = json.loads(entry["message"])["message"]
            method, p = msg.get("method", ""), msg.get("params", {})
            rid = p.get("requestId", "")
            if method == "Network.requestWillBeSent":
                req = p["request"]
                r = self.requests.setdefault(rid, Request(rid, req["url"], p.get("type", "")))
                r.url, r.type, r.at = req["url"], p.get("type", r.type), entry["timestamp"] / 1000
                r.method, r.sent_mono = req.get("method", ""), p.get("timestamp")
                r.headers.update(req.get("headers", {}))
            elif method == "Network.requestWillBeSentExtraInfo":  # the headers really sent
                self.requests.setdefault(rid, Request(rid, "", "")).headers.update(p.get("headers", {}))
            elif method == "Network.responseReceived":
                r = self.requests.setdefault(rid, Request(rid, p["response"]["url"], ""))
                r.status = int(p["response"]["status"])
                r.type = p.get("type", r.type)
                r.answered_mono = p.get("timestamp")
        return list(self.requests.values())

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path
