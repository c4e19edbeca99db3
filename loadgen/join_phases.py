"""Per-phase join timelines (issue 18, *Join*): when each step of a join happened.

A client notes the first time each phase happens (``mark(phase, now)``); the timeline
reports milliseconds since the websocket started opening (``start``). Phases are named
``<connection>.<step>`` for the two peer connections (``publish.``, ``subscribe.``) and
plainly for the signaling ones. Pure logic: time is passed in.

The reference order (:data:`ORDER`) is the order the steps must happen in on one
connection; :func:`order_problems` lists the pairs that broke it (the tests' check, and
the benchmark's sanity check).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from statistics import median

#: Signaling phases, then each connection's, in the order they must happen.
SIGNALING = ("ws_open", "joined")
PUBLISH = (
    "publish.offer_sent",
    "publish.answer_received",
    "publish.ice_connected",
    "publish.dtls_connected",
)
SUBSCRIBE = (
    "subscribe.offer_received",
    "subscribe.answer_sent",
    "subscribe.ice_connected",
    "subscribe.dtls_connected",
    "subscribe.first_rtp",
    "subscribe.first_keyframe",
    "subscribe.first_frame",
)
#: The chains whose phases must be non-decreasing in time (each starts after ``joined``).
#: ICE may connect before the answer is sent or received (the answerer's checks are
#: answered as soon as its answer is applied locally, before it reaches the other side),
#: so ICE and the answer are two branches that meet at DTLS (which needs both).
CHAINS: tuple[tuple[str, ...], ...] = (
    SIGNALING + (PUBLISH[0], PUBLISH[2], PUBLISH[3]),
    SIGNALING + (PUBLISH[0], PUBLISH[1], PUBLISH[3]),
    SIGNALING + (SUBSCRIBE[0], *SUBSCRIBE[2:]),
    SIGNALING + SUBSCRIBE[:2] + (SUBSCRIBE[3],),
)
ORDER: tuple[str, ...] = SIGNALING + PUBLISH + SUBSCRIBE
#: The phase that ends a join (websocket open -> first remote video frame decoded).
END = "subscribe.first_frame"


class JoinTimeline:
    """The first time of each phase of one join, relative to ``start``."""

    def __init__(self, start: float) -> None:
        self.start = start
        self._at: dict[str, float] = {}

    def mark(self, phase: str, now: float) -> None:
        """Note ``phase`` at ``now`` unless it was noted already (first time wins)."""
        if phase not in self._at:
            self._at[phase] = now

    def has(self, phase: str) -> bool:
        return phase in self._at

    def ms(self, phase: str) -> float | None:
        at = self._at.get(phase)
        return None if at is None else round((at - self.start) * 1000.0, 1)

    def to_json(self) -> dict[str, float]:
        """Milliseconds since ``start`` of each phase noted, in :data:`ORDER` (others after)."""
        known = [p for p in ORDER if p in self._at]
        extra = sorted(p for p in self._at if p not in ORDER)
        out: dict[str, float] = {}
        for phase in (*known, *extra):
            value = self.ms(phase)
            assert value is not None
            out[phase] = value
        return out

    @property
    def total_ms(self) -> float | None:
        """Websocket opening -> first remote video frame (None: none yet)."""
        return self.ms(END)


def order_problems(phases: Mapping[str, float]) -> list[str]:
    """Pairs of phases of one chain (:data:`CHAINS`) that happened in the wrong order
    (empty: consistent). Only phases present are compared; a negative time is a
    problem too."""
    problems = [f"{p} < 0" for p, v in phases.items() if v < 0]
    for chain in CHAINS:
        present = [p for p in chain if p in phases]
        for earlier, later in zip(present, present[1:], strict=False):
            if phases[later] < phases[earlier]:
                problem = f"{later} ({phases[later]}) before {earlier} ({phases[earlier]})"
                if problem not in problems:
                    problems.append(problem)
    return problems


def _connection(phase: str) -> str:
    return phase.split(".", 1)[0] if "." in phase else ""


def durations(phases: Mapping[str, float]) -> dict[str, float]:
    """Time spent reaching each phase (ms): from the latest phase of the signaling or of
    its own connection that happened before it (at the same time: listed before it in
    :data:`ORDER`); from the start for the first."""
    out: dict[str, float] = {}
    rank = {p: i for i, p in enumerate(ORDER)}
    for phase in [p for p in ORDER if p in phases]:
        at = phases[phase]
        before = [
            phases[p]
            for p in ORDER
            if p in phases
            and p != phase
            and _connection(p) in ("", _connection(phase))
            and (phases[p] < at or (phases[p] == at and rank[p] < rank[phase]))
        ]
        out[phase] = round(at - max(before, default=0.0), 1)
    return out


def nearest_rank(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def phase_medians(timelines: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The median time of each phase over the joins that reached it, in :data:`ORDER`."""
    values: dict[str, list[float]] = {}
    for phases in timelines:
        for phase, value in phases.items():
            values.setdefault(phase, []).append(value)
    ordered = [p for p in ORDER if p in values] + sorted(p for p in values if p not in ORDER)
    return {p: round(median(values[p]), 1) for p in ordered}
