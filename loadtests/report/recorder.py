"""Recording every phase of every flow, per measurement segment, and merging across processes.

A *segment* is one measured stretch of a run (a trial of one mode, one step
of the step load).  Each Locust process (the local runner, or every worker
in distributed mode) keeps a :class:`Recorder`; the request event hook puts
each latency into the histogram of ``(segment, entry)``, failures into a
counter, and whole-share totals also into a per-second histogram for the
latency-over-time plot.  :meth:`Recorder.drain` hands everything recorded
since the last drain to the caller as plain data (msgpack-able, so it rides
in Locust's worker reports) and forgets it; a :class:`Merger` on the master
adds those payloads up.  Because histograms add exactly, the merged count
is the sum of the workers' counts, whatever the order reports arrive in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtests.load.scenarios import TOTAL, split_key
from loadtests.report import hdr

#: A flow that starts this much after its intended time was held up by the generator.
LATE_MS = 10.0
FLOW_FIELDS = ("started", "completed", "failed", "late")


def _flow_counts() -> dict[str, int]:
    return dict.fromkeys(FLOW_FIELDS, 0)


@dataclass
class _Pending:
    hists: dict[str, HdrHistogram] = field(default_factory=dict)
    fails: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    timeline: dict[str, HdrHistogram] = field(default_factory=dict)
    flows: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(_flow_counts))

    def payload(self) -> dict[str, Any]:
        return {
            "hist": {k: hdr.encode(h) for k, h in self.hists.items()},
            "fails": dict(self.fails),
            "timeline": {k: hdr.encode(h) for k, h in self.timeline.items()},
            "flows": {k: dict(v) for k, v in self.flows.items()},
        }


class Recorder:
    """Per-process sink for latencies; not thread-safe, which gevent's greenlets do not need.

    Recording is pure computation (no I/O), so no greenlet switch can happen
    in the middle of one ``record`` call.
    """

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        #: Everything ever recorded by this process (successes and failures).
        self.recorded_total = 0

    def _seg(self, segment: str) -> _Pending:
        seg = self._pending.get(segment)
        if seg is None:
            seg = self._pending[segment] = _Pending()
        return seg

    def record(
        self, segment: str, entry: str, ms: float, *, ok: bool, second: int | None = None
    ) -> None:
        seg = self._seg(segment)
        self.recorded_total += 1
        if not ok:
            seg.fails[entry] += 1
            return
        h = seg.hists.get(entry)
        if h is None:
            h = seg.hists[entry] = hdr.new()
        hdr.record_ms(h, ms)
        if second is not None and split_key(entry)[1] == TOTAL:
            tkey = f"{entry}@{second}"
            t = seg.timeline.get(tkey)
            if t is None:
                t = seg.timeline[tkey] = hdr.new()
            hdr.record_ms(t, ms)

    def flow(self, segment: str, scenario: str, what: str) -> None:
        """Count a flow event: ``started``, ``completed``, ``failed`` or ``late``."""
        self._seg(segment).flows[scenario][what] += 1

    def drain(self, segment: str | None = None) -> dict[str, Any]:
        """Everything pending (or one segment's), as plain data, and forget it."""
        names = list(self._pending) if segment is None else [segment]
        out = {name: self._pending.pop(name).payload() for name in names if name in self._pending}
        return {"segments": out}


@dataclass
class SegmentData:
    """A segment's merged measurements (decoded histograms)."""

    hists: dict[str, HdrHistogram] = field(default_factory=dict)
    fails: dict[str, int] = field(default_factory=dict)
    timeline: dict[str, dict[int, HdrHistogram]] = field(default_factory=dict)
    flows: dict[str, dict[str, int]] = field(default_factory=dict)

    def add_payload(self, part: dict[str, Any]) -> None:
        for k, text in part.get("hist", {}).items():
            self.hists.setdefault(k, hdr.new()).add(hdr.decode(text))
        for k, n in part.get("fails", {}).items():
            self.fails[k] = self.fails.get(k, 0) + int(n)
        for tkey, text in part.get("timeline", {}).items():
            entry, _, sec = tkey.rpartition("@")
            per = self.timeline.setdefault(entry, {})
            per.setdefault(int(sec), hdr.new()).add(hdr.decode(text))
        for scenario, counts in part.get("flows", {}).items():
            mine = self.flows.setdefault(scenario, _flow_counts())
            for name in FLOW_FIELDS:
                mine[name] += int(counts.get(name, 0))

    def total_count(self) -> int:
        return sum(hdr.count(h) for h in self.hists.values()) + sum(self.fails.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "hist": {k: hdr.encode(h) for k, h in sorted(self.hists.items())},
            "fails": dict(sorted(self.fails.items())),
            "timeline": {
                entry: {str(s): hdr.encode(h) for s, h in sorted(per.items())}
                for entry, per in sorted(self.timeline.items())
            },
            "flows": self.flows,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SegmentData:
        out = cls()
        out.hists = {k: hdr.decode(v) for k, v in doc.get("hist", {}).items()}
        out.fails = {k: int(v) for k, v in doc.get("fails", {}).items()}
        out.timeline = {
            entry: {int(s): hdr.decode(v) for s, v in per.items()}
            for entry, per in doc.get("timeline", {}).items()
        }
        out.flows = {
            k: {f: int(v.get(f, 0)) for f in FLOW_FIELDS} for k, v in doc.get("flows", {}).items()
        }
        return out


class Merger:
    """The master's side: payloads from any number of processes, merged per segment."""

    def __init__(self) -> None:
        self.segments: dict[str, SegmentData] = {}

    def add(self, payload: dict[str, Any]) -> None:
        for name, part in payload.get("segments", {}).items():
            self.segments.setdefault(name, SegmentData()).add_payload(part)

    def take(self, segment: str) -> SegmentData:
        return self.segments.pop(segment, SegmentData())
