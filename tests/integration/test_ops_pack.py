"""The operations pack: Prometheus rules (promtool), the Grafana dashboard, and the metrics
both name, checked against what the services really export.

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it as root);
without it the promtool tests skip and say so.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cdn_auth.keyring import KeyRing
from dm.identity import DevIssuer
from dm.notify import QUEUE_MAX
from dm.web_state import STATE as DM_STATE
from loadtests.stack.processes import ProcStack, process_stack
from service_kernel.redis_process import RedisProcess

from ..support.edge import fetch, mint
from ..support.paths import REPO_ROOT
from ..support.services import DmStack, EdgeFactory, wait_until

REPO = REPO_ROOT
PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "pointer-dm.json"
#: Series Prometheus makes itself rather than scraping.
PROMETHEUS_OWN = {"up"}

_PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    _PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it when run as root)",
)


# -- which metrics a PromQL expression names ------------------------------------------------

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPINGS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.$:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: literals, label matchers, range and grouping
    clauses removed first, then every identifier that is not a function call or keyword."""
    s = _STRINGS.sub('""', expr)
    s = _MATCHERS.sub("", s)
    s = _RANGES.sub("", s)
    s = _GROUPINGS.sub("", s)
    names = set()
    for m in _IDENT.finditer(s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


@pytest.mark.parametrize(
    "expr,names",
    [
        (
            'sum by (job, status) (rate(cdn_auth_http_responses_total{status=~"5.."}[5m]))',
            {"cdn_auth_http_responses_total"},
        ),
        ("a:b:rate5m < 0.5 * (a:b:rate5m offset 1h) and on (job, cache) (c > 1)", {"a:b:rate5m", "c"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))", {"x_bucket"}),
        ('up{job=~"cdn_auth|dm"} == 0 or dm_redis_up == 0', {"up", "dm_redis_up"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


# -- the files ---------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", ())]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def named_metrics() -> dict[str, set[str]]:
    """Raw metric name -> where it is used (rule names, dashboard panels)."""
    out: dict[str, set[str]] = {}
    for r in rules():
        for name in promql_metric_names(r["expr"]):
            out.setdefault(name, set()).add(r.get("record") or r["alert"])
    for expr in dashboard_exprs():
        for name in promql_metric_names(expr):
            out.setdefault(name, set()).add("dashboard")
    return out


@needs_promtool
def test_promtool_check_rules() -> None:
    _promtool("check", "rules", str(RULES))


@needs_promtool
def test_promtool_unit_tests_for_every_alert() -> None:
    tests = PROM / "tests" / "alerts_test.yml"
    _promtool("test", "rules", str(tests))
    tested = {
        t["alertname"]
        for g in yaml.safe_load(tests.read_text())["tests"]
        for t in g.get("alert_rule_test", ())
    }
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts <= tested, f"alerts without a unit test: {sorted(alerts - tested)}"


@needs_promtool
def test_promtool_check_config() -> None:
    _promtool("check", "config", str(PROM / "prometheus.yml"))


def _promtool(*args: str) -> None:
    assert _PROMTOOL is not None
    proc = subprocess.run(
        [_PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False, cwd=PROM
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_says_how_bad_and_what_to_look_at() -> None:
    for r in rules():
        if "alert" in r:
            assert r["labels"]["severity"] in ("page", "warn"), r["alert"]
            assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_recording_rules_used_are_defined() -> None:
    used = {n for n in named_metrics() if ":" in n}
    assert used <= recorded(), sorted(used - recorded())


def test_dashboard_is_well_formed_for_provisioning() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    ds = yaml.safe_load(
        (REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    for p in doc["panels"]:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == ds["uid"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]


# -- against the real services ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcStack]:
    with process_stack(tmp_path_factory.mktemp("opsstack")) as st:
        yield st


def exported(url: str) -> set[str]:
    """Every sample name a ``/metrics`` page can carry, from its metric families (so a
    labelled family with no children yet still counts)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # noqa: S310 - http only
        text = r.read().decode()
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total", "_created"),
            "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"),
        }.get(fam.type, ("",))
        names.update(fam.name + s for s in suffixes)
        names.update(s.name for s in fam.samples)
    return names


@pytest.mark.slow
def test_rules_and_dashboard_name_only_exported_metrics(stack: ProcStack) -> None:
    have = exported(stack.edge_url) | exported(stack.dm_url) | PROMETHEUS_OWN | recorded()
    missing = {name: sorted(where) for name, where in named_metrics().items() if name not in have}
    assert not missing, f"named but not exported by either service: {missing}"


# -- the metrics the alerts need behave --------------------------------------------------------


async def test_failing_closed_counts_as_decision_error_and_5xx(
    make_edge: EdgeFactory, issuer: DevIssuer, ring: KeyRing, tmp_path: Path
) -> None:
    server = RedisProcess(tmp_path / "own-redis").start()
    try:
        edge = await make_edge(redis_url=server.url, staleness_bound_s=1.0, revocation_block_ms=100)
        media, _ = await edge.add_media()
        bob, ptr = issuer.mint("bob"), mint(ring, media)
        assert (await fetch(edge, media.id, bob, ptr))[0] == 200
        assert _scrape_value(await _scrape(edge.client), "cdn_auth_redis_up") == 1
        server.stop()

        async def stale() -> bool:
            return (await fetch(edge, media.id, bob, ptr))[0] == 503

        await wait_until(stale, timeout_s=5.0)
        text = await _scrape(edge.client)
    finally:
        server.stop()
    assert _scrape_value(text, "cdn_auth_redis_up") == 0
    assert _scrape_value(text, "cdn_auth_revocation_staleness_bound_seconds") == 1.0
    assert _scrape_value(text, "cdn_auth_revocation_tail_age_seconds") > 1.0
    assert (
        _scrape_value(text, "cdn_auth_decisions_total", outcome="error", reason="revocation_stale") >= 1
    )
    assert (
        _scrape_value(text, "cdn_auth_decisions_total", outcome="deny", reason="revocation_stale")
        is None
    )  # not a refusal of the token
    assert _scrape_value(text, "cdn_auth_http_responses_total", status="503") >= 1
    assert _scrape_value(text, "cdn_auth_http_responses_total", status="200") >= 1


async def test_dm_counts_responses_and_send_latency(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    await alice.send(conv["id"], text="hi")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            dm.dm_url + "/v1/conversations/c_nope",
            headers={"Authorization": f"Bearer {alice.session_token}"},
        ) as r:
            missing_status = r.status
        async with http.get(dm.dm_url + "/metrics") as r:
            text = await r.text()
    assert missing_status in (403, 404)
    assert _scrape_value(text, "dm_http_responses_total", status="201") >= 2  # user(s), send
    assert _scrape_value(text, "dm_http_responses_total", status=str(missing_status)) == 1
    assert _scrape_value(text, "dm_send_seconds_count") == 1
    assert _scrape_value(text, "dm_redis_up") == 1
    assert _scrape_value(text, "dm_notify_tail_age_seconds") < 5


async def test_slow_consumer_drop_is_counted(dm: DmStack) -> None:
    alice = await dm.user()
    state = dm.app[DM_STATE]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            dm.dm_url + "/v1/stream", headers={"Authorization": f"Bearer {alice.session_token}"}
        ) as ws:
            await wait_until(lambda: state.hub.connected == 1, 5)
            # More events than the subscriber's queue holds arrive before its sender runs.
            entries = [
                (
                    f"1-{i}",
                    {
                        "e": json.dumps(
                            {
                                "type": "member_left",
                                "to": alice.uid,
                                "conversation_id": "c_x",
                                "user_id": "u_x",
                            }
                        )
                    },
                )
                for i in range(QUEUE_MAX + 1)
            ]
            state.hub._dispatch(entries)  # the tailer's own entry point, called as it would
            async for _ in ws:  # frames sent before the close; iteration ends at the close
                pass
            assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        await asyncio.sleep(0)
        async with http.get(dm.dm_url + "/metrics") as r:
            text = await r.text()
    assert _scrape_value(text, "dm_websockets_dropped_total", reason="slow_consumer") == 1


async def _scrape(client: Any) -> str:
    async with client.get("/metrics") as r:
        assert r.status == 200
        return str(await r.text())


def _scrape_value(text: str, name: str, **labels: str) -> Any:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None
