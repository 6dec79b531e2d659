"""The container deployment, run for real: build the image, bring the compose stack up, and
share a video through the nginx front: upload, send, play with Range, a forwarded link
refused, and the link refused after an unsend within the documented bound.  Prometheus
comes up too and must scrape every process and load the rules.

It needs a Docker engine and Compose (v2 ``docker compose`` or Debian's ``docker-compose``
1.29), so it runs when ``PDM_COMPOSE_TEST=1``: ``make test-compose`` sets it, and so does
``.ci/run`` whenever it can start an engine (as root with Debian's ``docker.io``).  Without
a registry, first make the stand-in base images: ``deploy/offline/make-base-images.sh``
(``.ci/run`` does).  A cold run (image build included) takes a few minutes.  Grafana is
not started (no stand-in exists for it offline); its provisioning files are checked in
``tests/unit/test_deploy_files.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from dm.client import DmClient, DmClientError
from loadtests.load.seed import video_bytes
from service_kernel.redis_process import free_port

from ..support.messages import media_of
from ..support.paths import REPO_ROOT

ROOT = REPO_ROOT
SERVICES = ["redis", "dm", "media", "edge1", "edge2", "nginx", "prometheus"]
#: The edges push each revocation to the front's decision cache at once; 5 s is the
#: staleness bound within which the front stops trusting it in any case
#: (docs/operations.md, sections 10.2 and 10.3).
FRONT_REVOCATION_BOUND_S = 5.0
#: Tolerance over the bound: one poll interval and the edges' propagation.
POLL_S = 0.2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) if present, else ``docker-compose`` (v1), else None."""
    if shutil.which("docker"):
        v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if v2.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _skip_reason() -> str | None:
    if os.environ.get("PDM_COMPOSE_TEST") != "1":
        return (
            "builds the image and runs the compose stack (minutes): run `make "
            "test-compose` (PDM_COMPOSE_TEST=1) on a machine with a Docker engine"
        )
    if shutil.which("docker") is None:
        return "no docker client (Debian: apt-get install docker.io)"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine answers (start dockerd)"
    if compose_command() is None:
        return "no Compose (Debian: apt-get install docker-compose)"
    return None


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    dm_url: str
    media_url: str
    front_url: str
    prometheus_url: str

    def run(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.compose, *args],
            cwd=ROOT,
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        assert proc.returncode == 0, f"{args}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    compose = compose_command()
    assert compose is not None
    ports = {name: free_port() for name in ("DM", "MEDIA", "FRONT", "PROMETHEUS", "GRAFANA", "LOCUST")}
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": f"pdmtest{os.getpid()}",
        # The edges and the nginx front share it (docs/operations.md, section 10.1).
        "POINTER_FRONT_SECRET": secrets.token_urlsafe(24),
        **{f"PDM_{name}_PORT": str(port) for name, port in ports.items()},
    }
    st = Stack(
        [*compose, "-f", str(ROOT / "docker-compose.yml")],
        env,
        f"http://127.0.0.1:{ports['DM']}",
        f"http://127.0.0.1:{ports['MEDIA']}",
        f"http://localhost:{ports['FRONT']}",
        f"http://127.0.0.1:{ports['PROMETHEUS']}",
    )
    try:
        st.run("build", "dm", timeout_s=1200)
        st.run("run", "--rm", "keys")
        st.run("up", "-d", *SERVICES)
        yield st
    finally:
        logs = subprocess.run(
            [*st.compose, "logs", "--no-color", "--tail", "40"],
            cwd=ROOT,
            env=env,
            text=True,
            capture_output=True,
            check=False,
        )
        print(logs.stdout[-6000:])
        subprocess.run(
            [*st.compose, "down", "-v", "--remove-orphans"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
            timeout=300,
        )


async def _wait_ready(http: aiohttp.ClientSession, url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return
                last = f"{r.status} {await r.text()}"
        except aiohttp.ClientError as exc:
            last = repr(exc)
        await asyncio.sleep(0.5)
    raise AssertionError(f"{url} not ready: {last}")


async def _upload(http: aiohttp.ClientSession, media_url: str, session: str, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field(
        "metadata", json.dumps({"content_type": "video/mp4"}), content_type="application/json"
    )
    form.add_field("file", data, filename="clip.mp4", content_type="video/mp4")
    async with http.post(
        f"{media_url}/v1/media", data=form, headers={"Authorization": f"Bearer {session}"}
    ) as r:
        body = await r.json()
        assert r.status == 201, body
        return str(body["id"])


async def test_sharing_flow_through_nginx_in_compose(stack: Stack) -> None:
    data = video_bytes()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for url in (stack.dm_url + "/readyz", stack.media_url + "/readyz"):
            await _wait_ready(http, url)
        alice, bob, carol = (DmClient(stack.dm_url, http=http) for _ in range(3))
        for c in (alice, bob, carol):
            await c.create_user()
        assert alice.session_token is not None
        media_id = await _upload(http, stack.media_url, alice.session_token, data)
        conv = await alice.create_conversation([bob.uid])
        sent = await alice.send(conv["id"], text="watch", media_id=media_id)
        page = await bob.read(conv["id"])
        url = media_of(next(m for m in page["messages"] if m["id"] == sent["id"]))["url"]
        assert url.startswith(stack.front_url + "/m/"), url

        played = await bob.fetch_media(url, range_=(100, 1123))  # through nginx
        assert played.status == 206
        assert played.body == data[100:1124]
        assert played.headers["Content-Range"] == f"bytes 100-1123/{len(data)}"

        with pytest.raises(DmClientError) as forwarded:  # bob's link, carol's session
            await carol.fetch_media(url, range_=(0, 99))
        assert forwarded.value.status == 403

        await alice.unsend(conv["id"], sent["id"])
        unsent_at = time.monotonic()
        refused: DmClientError | None = None
        while time.monotonic() - unsent_at <= FRONT_REVOCATION_BOUND_S + 1.0:
            try:
                await bob.fetch_media(url, range_=(0, 99))
            except DmClientError as exc:
                refused = exc
                break
            await asyncio.sleep(POLL_S)
        took = time.monotonic() - unsent_at
        assert refused is not None, f"still playable {took:.1f}s after the unsend"
        assert refused.status == 410
        assert took <= FRONT_REVOCATION_BOUND_S + 1.0
        print(f"unsend refused at the front after {took:.2f}s")


async def test_prometheus_scrapes_every_process_and_loads_the_rules(stack: Stack) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await _wait_ready(http, stack.prometheus_url + "/-/ready")
        deadline = time.monotonic() + 90
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            async with http.get(stack.prometheus_url + "/api/v1/targets") as r:
                targets = (await r.json())["data"]["activeTargets"]
            health = {t["labels"]["instance"]: t["health"] for t in targets}
            if len(health) == 4 and set(health.values()) == {"up"}:
                break
            await asyncio.sleep(2)
        assert health == {t: "up" for t in ("media:8080", "edge1:8080", "edge2:8080", "dm:8090")}
        async with http.get(stack.prometheus_url + "/api/v1/rules") as r:
            groups = {g["name"]: g for g in (await r.json())["data"]["groups"]}
        assert {"pointer_dm_recording", "pointer_dm_alerts"} <= set(groups)
        assert all(rule["health"] != "err" for g in groups.values() for rule in g["rules"])
