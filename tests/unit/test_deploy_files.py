"""What can be checked of the container setup without a Docker engine (none runs here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from ..support.paths import REPO_ROOT

ROOT = REPO_ROOT


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
    assert {"redis", "dm", "edge1", "edge2", "nginx", "locust-master", "locust-worker"} <= set(
        compose["services"]
    )
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
    provider = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "pointer-dm.yml").read_text()
    )["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    targets = {
        t
        for job in yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())[
            "scrape_configs"
        ]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    for service in ("dm", "media", "edge1", "edge2"):  # every process is scraped
        assert any(t.startswith(service + ":") for t in targets), service


def test_compose_nginx_config_is_rendered_from_the_template() -> None:
    from cdn_auth.front_config import render

    rendered = render(
        prefix=Path("/var/cache/nginx/edge"),
        port=8000,
        authorizer=["edge1:8080", "edge2:8080"],
        origin=Path("/data/origin"),
        auth_cache_s=30,
        workers="auto",
        control_listen="0.0.0.0:8001",
        lua_dir=Path("/etc/nginx/lua"),
        listen="0.0.0.0",  # noqa: S104 - the compose front door
        user="www-data",
    )
    assert rendered.rstrip() == (ROOT / "deploy" / "nginx" / "compose.conf").read_text().rstrip()
    assert "secure_link" not in rendered  # the benchmark-only location never ships
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nginx = compose["services"]["nginx"]
    assert "8001" not in str(nginx.get("ports", ""))  # the control listener is never published
    for edge in ("edge1", "edge2"):
        env = compose["services"][edge]["environment"]
        assert env["CDN_AUTH_FRONT_CONTROL_URL"] == "http://nginx:8001/_front/revocations"


def test_nginx_daemon_directive_not_duplicated() -> None:
    """The nginx image runs ``nginx -g 'daemon off;'``; a config saying it too is refused
    ("daemon directive is duplicate") and the front exits at once."""
    for conf in ("compose.conf", "edge.conf.template"):
        text = (ROOT / "deploy" / "nginx" / conf).read_text()
        assert not re.search(r"^\s*daemon\s", text, re.MULTILINE), conf


def test_nginx_prefix_exists_in_the_container() -> None:
    """compose.conf keeps pid, logs, temp and cache under /var/cache/nginx/edge, which the
    nginx image does not have: compose must mount something there."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nginx = compose["services"]["nginx"]
    conf = (ROOT / "deploy" / "nginx" / "compose.conf").read_text()
    prefix = re.search(r"^pid (\S+)/nginx\.pid;", conf, re.MULTILINE)
    assert prefix is not None
    mounted = list(nginx.get("tmpfs", ())) + [v.split(":")[1] for v in nginx["volumes"]]
    assert prefix.group(1) in mounted


def test_volume_mount_points_exist_in_the_image_owned_by_app() -> None:
    """An empty named volume takes the owner of the image's directory; where the image has
    none it mounts root-owned, and the non-root app cannot write (uploads failed)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    docker = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    made = re.search(r"mkdir -p ([^&\n]+)&& chown -R app:app ([^\n]+)", docker)
    assert made is not None
    dirs, owned = made.group(1).split(), made.group(2).split()
    for volume in compose["x-app"]["volumes"]:
        target = volume.split(":")[1]
        assert any(d == target or d.startswith(target + "/") for d in dirs), target
        assert any(target == o or target.startswith(o.rstrip("/") + "/") for o in owned), target


def test_compose_demo_switches_the_dev_issuer_on_explicitly() -> None:
    """The dev issuer is off by default; the demo stack needs it to sign its users in."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["dm"]["environment"]["DM_DEV_ISSUER"] == "true"
