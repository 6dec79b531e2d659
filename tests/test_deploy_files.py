"""What can be checked of the container setup without a Docker engine (none runs here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, re.MULTILINE)
    assert [s[1] for s in stages] == ["build", "runtime"]
    assert all(image.startswith("python:3.11-slim") for image, _ in stages)
    assert re.search(r"^USER app$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    for path in re.findall(r"^COPY (?:--chown=\S+ )?(\S+) ", text, re.MULTILINE):
        if not path.startswith("--from"):
            assert (ROOT / path).exists(), path


def test_every_compose_command_is_a_real_entry_point() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    scripts |= {"locust", "redis-server"}
    assert {"redis", "dm", "edge1", "edge2", "nginx", "locust-master",
            "locust-worker"} <= set(compose["services"])
    assert "--appendonly" in compose["services"]["redis"]["command"]
    for name, svc in compose["services"].items():
        if "command" in svc:
            assert svc["command"][0] in scripts, name


def test_compose_nginx_config_is_rendered_from_the_template() -> None:
    from loadtests.nginx_front import render

    rendered = render(prefix=Path("/var/cache/nginx/edge"), port=8000,
                      authorizer=["edge1:8080", "edge2:8080"], origin=Path("/data/origin"),
                      auth_cache_s=5, workers="auto",
                      listen="0.0.0.0", user="nginx")  # noqa: S104 - the compose front door
    assert rendered.rstrip() == (ROOT / "deploy" / "nginx" / "compose.conf").read_text().rstrip()
    assert "secure_link" not in rendered  # the benchmark-only location never ships
