"""``parley load --find-capacity``: add subscribers step by step until a service level breaks.

Pure: :class:`CapacitySearch` is told what each step measured and answers whether to
add more subscribers; :func:`measure_step` turns the per-second progress of a window
into a :class:`StepResult`. The run (:mod:`loadgen.load.run`) does the I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen.load.metrics import KINDS, Interval
from loadgen.report.build import LOOP_LAG_LIMIT_MS, SERVER_CPU_LIMIT, WORKER_CPU_LIMIT


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    """What must hold at a load for it to count: p99 latency (each kind) and loss."""

    p99_ms: float = 50.0
    loss_pct: float = 1.0


@dataclass(slots=True)
class StepResult:
    subscribers_per_room: int
    subscribers: int
    p99_ms: float | None
    loss_pct: float | None
    received_pps: float
    server_cpu_pct: float | None
    loadgen_saturated: bool
    #: the load generator's processes: their CPU summed (% of one core), and µs of it per
    #: packet received by all subscribers (publishers' and fixed costs included)
    loadgen_cpu_pct: float | None = None
    loadgen_us_per_received_packet: float | None = None
    #: who ran out of CPU: "server" (its mean over SERVER_CPU_LIMIT % of its core),
    #: "load generator", "both", or None
    saturated: str | None = None
    passed: bool = False
    #: Why the step failed (empty when it passed).
    reasons: list[str] = field(default_factory=list)


def measure_step(
    progress: list[dict[str, Any]],
    server_cpu: list[float],
    start: float,
    end: float,
    subscribers_per_room: int,
    subscribers: int,
) -> StepResult:
    """What the workers' per-second ``progress`` reports within ``(start, end]`` say."""
    window = [p for p in progress if start < p["t"] <= end + 0.5]
    total = Interval()
    for p in window:
        total.merge(Interval.from_json(p["interval"]))
    p99s = [total.latency[k].percentile(99) for k in KINDS if total.latency[k].count]
    lost = sum(total.counters[k].lost for k in KINDS)
    expected = sum(total.counters[k].expected for k in KINDS)
    received = sum(total.counters[k].received for k in KINDS)
    seconds = len({round(p["t"]) for p in window}) or 1
    per_worker: dict[int, list[dict[str, Any]]] = {}
    for p in window:
        per_worker.setdefault(int(p.get("worker", 0)), []).append(p)
    saturated = False
    loadgen_cpu = 0.0
    for reports in per_worker.values():
        cpu = sum(r["cpu_pct"] for r in reports) / len(reports)
        loadgen_cpu += cpu
        lagging = sum(r["lag_ms"] > LOOP_LAG_LIMIT_MS for r in reports)
        if cpu > WORKER_CPU_LIMIT or lagging * 2 > len(reports):
            saturated = True
    server_cpu_pct = sum(server_cpu) / len(server_cpu) if server_cpu else None
    received_pps = received / seconds
    return StepResult(
        subscribers_per_room=subscribers_per_room,
        subscribers=subscribers,
        p99_ms=max((v for v in p99s if v is not None), default=None),
        loss_pct=100.0 * lost / expected if expected > 0 else None,
        received_pps=received_pps,
        server_cpu_pct=server_cpu_pct,
        loadgen_saturated=saturated,
        loadgen_cpu_pct=round(loadgen_cpu, 1) if per_worker else None,
        loadgen_us_per_received_packet=round(loadgen_cpu * 1e4 / received_pps, 2)
        if per_worker and received_pps > 0
        else None,
        saturated=who_saturated(server_cpu_pct, saturated),
    )


def who_saturated(server_cpu_pct: float | None, loadgen_saturated: bool) -> str | None:
    """ "server", "load generator", "both" or None: who ran out of CPU."""
    server = server_cpu_pct is not None and server_cpu_pct > SERVER_CPU_LIMIT
    if server and loadgen_saturated:
        return "both"
    if server:
        return "server"
    return "load generator" if loadgen_saturated else None


class CapacitySearch:
    """Linear search upwards: ``start``, ``start + step``, ... subscribers per room.

    A step passes when latency p99 and loss are within the service level and media
    was received at all. The search stops at the first failing step, when the load
    generator saturated (the result is then a lower bound), or at ``limit``.
    """

    def __init__(self, start: int, step: int, limit: int, level: ServiceLevel) -> None:
        if start < 1 or step < 1 or limit < start:
            raise ValueError("need 1 <= start <= limit and step >= 1")
        self.start = start
        self.step = step
        self.limit = limit
        self.level = level
        self.steps: list[StepResult] = []
        self.stopped_by: str | None = None

    @property
    def current(self) -> int:
        return self.steps[-1].subscribers_per_room if self.steps else self.start

    def judge(self, result: StepResult) -> bool:
        reasons = []
        if result.p99_ms is None or result.received_pps <= 0:
            reasons.append("no media received")
        elif result.p99_ms > self.level.p99_ms:
            reasons.append(f"p99 latency {result.p99_ms:.1f} ms > {self.level.p99_ms:g} ms")
        if result.loss_pct is not None and result.loss_pct > self.level.loss_pct:
            reasons.append(f"loss {result.loss_pct:.2f}% > {self.level.loss_pct:g}%")
        result.reasons = reasons
        result.passed = not reasons
        return result.passed

    def record(self, result: StepResult) -> int | None:
        """Record one step; returns the next subscribers-per-room level, or None to stop."""
        self.judge(result)
        self.steps.append(result)
        if not result.passed:
            self.stopped_by = "service level"
            return None
        if result.loadgen_saturated:
            self.stopped_by = "load generator saturated"
            return None
        following = result.subscribers_per_room + self.step
        if following > self.limit:
            self.stopped_by = "limit"
            return None
        return following

    def best(self) -> StepResult | None:
        """The largest load that held (every step up to it passed)."""
        best = None
        for step in self.steps:
            if not step.passed:
                break
            best = step
        return best

    def to_json(self) -> dict[str, Any]:
        best = self.best()
        return {
            "service_level": asdict(self.level),
            "steps": [asdict(s) for s in self.steps],
            "max_subscribers_per_room": best.subscribers_per_room if best else None,
            "max_subscribers": best.subscribers if best else None,
            "max_forwarded_per_s": round(best.received_pps, 1) if best else None,
            "stopped_by": self.stopped_by,
            "lower_bound": self.stopped_by in ("load generator saturated", "limit"),
        }
