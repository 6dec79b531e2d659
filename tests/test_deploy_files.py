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
        if "command" in svc and not svc["image"].startswith("prom/prometheus:"):
            assert svc["command"][0] in scripts, name


def test_compose_provisions_prometheus_and_grafana_from_deploy() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prom, grafana = compose["services"]["prometheus"], compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prom["volumes"] + grafana["volumes"]}
    config = next(a for a in prom["command"] if a.startswith("--config.file="))
    assert config.split("=", 1)[1] == mounts["./deploy/prometheus"] + "/prometheus.yml"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" /
                               "pointer-dm.yml").read_text())["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    targets = {t for job in yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml")
                                           .read_text())["scrape_configs"]
               for sc in job["static_configs"] for t in sc["targets"]}
    for service in ("dm", "media", "edge1", "edge2"):  # every process is scraped
        assert any(t.startswith(service + ":") for t in targets), service


def test_compose_nginx_config_is_rendered_from_the_template() -> None:
    from loadtests.nginx_front import render

    rendered = render(prefix=Path("/var/cache/nginx/edge"), port=8000,
                      authorizer=["edge1:8080", "edge2:8080"], origin=Path("/data/origin"),
                      auth_cache_s=5, workers="auto",
                      listen="0.0.0.0", user="nginx")  # noqa: S104 - the compose front door
    assert rendered.rstrip() == (ROOT / "deploy" / "nginx" / "compose.conf").read_text().rstrip()
    assert "secure_link" not in rendered  # the benchmark-only location never ships
