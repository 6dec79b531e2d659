"""What a load run does, as data: the driver's configuration and the fixed part of its plan.

Kept free of Locust so the runner (which must not load gevent) can write
the configuration the driver process reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.load.scenarios import MODES
from loadtests.report.slo import Slo


@dataclass
class DriveConfig:
    dm_url: str
    edge_url: str
    seed_file: str | None
    out_dir: str
    pools: dict[str, int]
    modes: list[str] = field(default_factory=lambda: list(MODES))
    workers: int = 0
    view_ratio: float = 0.5
    warmup_s: float = 2.0
    rounds: int = 5
    trial_rate: float = 20.0
    trial_s: float = 10.0
    step_rates: list[float] = field(default_factory=list)
    step_s: float = 5.0
    refine: int = 1
    slo: dict[str, Any] = field(default_factory=lambda: Slo().as_dict())
    scan_dm_url: str = ""
    #: Server processes on this machine (name -> pid) whose CPU each segment samples;
    #: empty for a remote target (server CPU "not measured").
    server_pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DriveConfig:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))


@dataclass
class Planned:
    kind: str  # warmup | trial | step
    mode: str
    rate: float
    duration_s: float
    round: int
    bisect: bool = False

    def label(self) -> str:
        what = {
            "warmup": "warm-up",
            "trial": f"trial {self.round}",
            "step": f"{'bisect' if self.bisect else 'step'} {self.round}",
        }[self.kind]
        return f"{what:<9} {self.mode:<9} @ {self.rate:g}/s"


def rotated(modes: list[str], k: int) -> list[str]:
    k %= max(1, len(modes))
    return modes[k:] + modes[:k]


def fixed_plan(cfg: DriveConfig) -> Iterator[Planned]:
    for m in cfg.modes:
        if cfg.warmup_s > 0:
            yield Planned("warmup", m, cfg.trial_rate, cfg.warmup_s, 0)
    for r in range(1, cfg.rounds + 1):
        for m in rotated(cfg.modes, r - 1):
            yield Planned("trial", m, cfg.trial_rate, cfg.trial_s, r)
