"""The simulated hosts: one network namespace each, joined to the root namespace by a
client link and a WAN link (delayed by netem where the kernel has it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

from loadtests.bench.harness import BenchError
from loadtests.stack.nginx import NginxFront, NginxUnavailable, check_lua_module, find_nginx


def sh(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(args)}: {done.stderr.strip()[:300]}")


def why_not() -> str | None:
    """None when this machine can run the benchmark, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces); run it as root, as CI does"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2)"
    try:
        find_nginx()
        check_lua_module()
    except NginxUnavailable as exc:
        return str(exc)
    if shutil.which("redis-server") is None:
        return "needs redis-server"
    return None


def netem_available() -> bool:
    name = f"pdmq{os.getpid() % 100000}"
    try:
        sh("ip", "link", "add", name, "type", "dummy")
    except BenchError:
        return False
    try:
        sh("tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "1ms")
        return True
    except BenchError:
        return False
    finally:
        with contextlib.suppress(BenchError):
            sh("ip", "link", "del", name)


@dataclass
class Host:
    index: int
    delay_ms: float
    ns: str
    wan_root: str  # the root side of the WAN link (the relay listens here)
    wan_host: str
    client_root: str
    client_host: str  # nginx listens here
    front: NginxFront | None = None
    relay: subprocess.Popen[bytes] | None = None
    links: list[str] = field(default_factory=list)


@contextlib.contextmanager
def namespaces(delays: list[float], netem: bool) -> Iterator[list[Host]]:
    tag = os.getpid() % 10000
    net = 100 + os.getpid() % 100
    hosts = []
    try:
        for i, delay in enumerate(delays):
            h = Host(
                i,
                delay,
                f"pdm{tag}h{i}",
                f"10.{net}.{2 * i}.1",
                f"10.{net}.{2 * i}.2",
                f"10.{net}.{2 * i + 1}.1",
                f"10.{net}.{2 * i + 1}.2",
            )
            hosts.append(h)
            sh("ip", "netns", "add", h.ns)
            sh("ip", "netns", "exec", h.ns, "ip", "link", "set", "lo", "up")
            for kind, root_ip, host_ip in (
                ("w", h.wan_root, h.wan_host),
                ("c", h.client_root, h.client_host),
            ):
                a, b = f"pd{tag}{kind}{i}a", f"pd{tag}{kind}{i}b"
                sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
                h.links.append(a)
                sh("ip", "link", "set", b, "netns", h.ns)
                sh("ip", "addr", "add", f"{root_ip}/24", "dev", a)
                sh("ip", "link", "set", a, "up")
                sh("ip", "netns", "exec", h.ns, "ip", "addr", "add", f"{host_ip}/24", "dev", b)
                sh("ip", "netns", "exec", h.ns, "ip", "link", "set", b, "up")
                if kind == "w" and netem and delay > 0:
                    sh("tc", "qdisc", "add", "dev", a, "root", "netem", "delay", f"{delay}ms")
                    sh(
                        "ip",
                        "netns",
                        "exec",
                        h.ns,
                        "tc",
                        "qdisc",
                        "add",
                        "dev",
                        b,
                        "root",
                        "netem",
                        "delay",
                        f"{delay}ms",
                    )
        yield hosts
    finally:
        for h in hosts:
            with contextlib.suppress(BenchError):
                sh("ip", "netns", "del", h.ns)  # takes its veth ends, and so the pairs
            for link in h.links:
                with contextlib.suppress(BenchError):
                    sh("ip", "link", "del", link)
