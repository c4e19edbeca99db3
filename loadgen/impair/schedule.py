"""Impaired links in ``parley load``: the schedule of link changes and what the
subscribers went through. Pure: no clock, no sockets (the links themselves are
``loadgen/impair/link.py``; ``loadgen/load/run.py`` sets them up and applies the schedule).

A *link state* is a rate limit in kbit/s (None: unlimited) and a random loss in percent.
A schedule is ``"SECONDS:STATE,SECONDS:STATE,..."`` with STATE ``none`` (no limit, no
loss), ``300`` (300 kbit/s), ``5%`` (5 % loss) or ``300+5%``; seconds count from the
moment the last subscriber started (the zero of ``--duration``).

:func:`analyse_subscriber` cuts a run into *phases* (from one link change to the next)
and measures, per phase, how the server's forwarding (its ``layer`` messages) reacted:
time to switch down after a change for the worse, time to get back to the top layer
after a change for the better (for good: on top from then to the phase's end), layer
switches, audio and video loss and freezes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Loss in the first seconds of a phase is the reaction, not the steady state.
SETTLE_S = 3.0
#: Layer ranks: paused below everything, single-layer video as q.
RANKS = {"q": 1, "h": 2, "f": 3}


@dataclass(frozen=True, slots=True)
class LinkState:
    rate_kbit: int | None = None
    loss_pct: float = 0.0

    def worse_than(self, other: LinkState) -> bool:
        rate_down = self.rate_kbit is not None and (
            other.rate_kbit is None or self.rate_kbit < other.rate_kbit
        )
        return rate_down or self.loss_pct > other.loss_pct

    def better_than(self, other: LinkState) -> bool:
        return other.worse_than(self)

    def to_json(self) -> dict[str, Any]:
        return {"rate_kbit": self.rate_kbit, "loss_pct": self.loss_pct}

    def describe(self) -> str:
        parts = []
        if self.rate_kbit is not None:
            parts.append(f"{self.rate_kbit} kbit/s")
        if self.loss_pct:
            parts.append(f"{self.loss_pct:g} % loss")
        return ", ".join(parts) or "unimpaired"


def parse_state(text: str) -> LinkState:
    """``none``, ``300``, ``5%``, ``300+5%`` -> a link state (ValueError otherwise)."""
    text = text.strip().lower()
    if text in ("none", "off", ""):
        return LinkState()
    rate: int | None = None
    loss = 0.0
    for part in text.split("+"):
        part = part.strip()
        if part.endswith("%"):
            loss = float(part[:-1])
            if not 0.0 <= loss < 100.0:
                raise ValueError(f"loss must be within [0, 100): {part}")
        else:
            rate = int(part)
            if rate <= 0:
                raise ValueError(f"rate must be positive: {part}")
    return LinkState(rate, loss)


def parse_schedule(text: str) -> list[tuple[float, LinkState]]:
    """``"8:300,20:none"`` -> ``[(8.0, LinkState(300)), (20.0, LinkState())]``, in order."""
    out: list[tuple[float, LinkState]] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        when, sep, state = entry.partition(":")
        if not sep:
            raise ValueError(f"expected SECONDS:STATE, got {entry!r}")
        seconds = float(when)
        if seconds < 0:
            raise ValueError(f"negative time in {entry!r}")
        out.append((seconds, parse_state(state)))
    return sorted(out, key=lambda item: item[0])


# ------------------------------------------------------------------ analysis


def _rank(rid: str | None, paused: bool) -> int:
    if paused:
        return 0
    return RANKS.get(rid or "", 1)


def _name(rid: str | None, paused: bool) -> str:
    return "paused" if paused else (rid or "video")


def _level_at(events: Sequence[tuple[float, str | None, bool]], t: float) -> int | None:
    level = None
    for when, rid, paused in events:
        if when > t:
            break
        level = _rank(rid, paused)
    return level


def _row_at(timeline: Sequence[Sequence[float]], t: float) -> Sequence[float] | None:
    """The first timeline row at or after ``t`` (None when there is none)."""
    return next((row for row in timeline if row[0] >= t - 1e-6), None)


def _row_before(timeline: Sequence[Sequence[float]], t: float) -> Sequence[float] | None:
    """The last timeline row at or before ``t``."""
    rows = [row for row in timeline if row[0] <= t + 1e-6]
    return rows[-1] if rows else None


def _pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 3) if whole > 0 else None


def _window(timeline: Sequence[Sequence[float]], start: float, end: float) -> dict[str, Any]:
    """Loss and freezes between the timeline rows closest inside ``[start, end]``."""
    first = _row_at(timeline, start)
    last = _row_before(timeline, end)
    if first is None or last is None or last[0] <= first[0]:
        return {
            "audio_loss_pct": None,
            "video_loss_pct": None,
            "video_loss_before_repair_pct": None,
        }
    d = [b - a for a, b in zip(first, last, strict=True)]
    return {
        "audio_loss_pct": _pct(d[2], d[1]),
        "video_loss_pct": _pct(d[4], d[3]),
        "video_loss_before_repair_pct": _pct(d[4] + d[5], d[3]),
    }


def _freezes(timeline: Sequence[Sequence[float]], start: float, end: float) -> dict[str, Any]:
    first = _row_before(timeline, start) or _row_at(timeline, start)
    last = _row_before(timeline, end)
    if first is None or last is None or last[0] < first[0]:
        return {"count": None, "total_ms": None}
    return {
        "count": int(last[6] - first[6]),
        "total_ms": round(1000.0 * (last[7] - first[7]), 1),
    }


def analyse_subscriber(
    changes: Sequence[tuple[float, LinkState]],
    layers: Sequence[Sequence[Any]],
    timeline: Sequence[Sequence[float]],
    t0: float,
    end: float,
) -> dict[str, Any]:
    """What one subscriber went through. ``changes`` are the link's states with the time
    each began (the first: the state at the start); ``layers`` the server's ``layer``
    messages ``(t, track, rid, paused)``; ``timeline`` the subscriber's per-second rows
    (see ``LoadSubscriber.timeline``). Times are ``time.monotonic()`` seconds; the
    result's are seconds from ``t0``."""
    by_track: dict[str, list[tuple[float, str | None, bool]]] = {}
    for t, track, rid, paused in layers:
        events = by_track.setdefault(str(track), [])
        if not events or events[-1][1:] != (rid, paused):
            events.append((float(t), rid, bool(paused)))
    first_worse = next(
        (i for i in range(1, len(changes)) if changes[i][1].worse_than(changes[i - 1][1])), None
    )
    # the top layer: the best one each track had before things got worse
    tops: dict[str, int] = {}
    for track, events in by_track.items():
        horizon = changes[first_worse][0] if first_worse is not None else end
        seen = [_rank(r, p) for t, r, p in events if t <= horizon] or [
            _rank(r, p) for _, r, p in events
        ]
        tops[track] = max(seen)
    phases = []
    for i, (start, state) in enumerate(changes):
        stop = changes[i + 1][0] if i + 1 < len(changes) else end
        previous = changes[i - 1][1] if i else None
        worse = previous is not None and state.worse_than(previous)
        better = previous is not None and state.better_than(previous)
        downs: list[float | None] = []
        ups: list[float | None] = []
        switches = 0
        for track, events in by_track.items():
            inside = [e for e in events if start < e[0] <= stop]
            switches += len(inside)
            level = _level_at(events, start)
            if worse and level is not None:
                downs.append(next((t - start for t, r, p in inside if _rank(r, p) < level), None))
            if better:
                # the return that lasted: on top at the phase's end, since when
                if _level_at(events, stop) != tops[track]:
                    ups.append(None)
                else:
                    reached = [t for t, r, p in inside if _rank(r, p) == tops[track]]
                    ups.append(reached[-1] - start if reached else 0.0)
        phase: dict[str, Any] = {
            "t_s": round(start - t0, 2),
            "end_s": round(stop - t0, 2),
            **state.to_json(),
            "change": "worse" if worse else "better" if better else None,
            "switch_down_s": _round(_slowest(downs)) if worse else None,
            "back_to_top_s": _round(_slowest(ups)) if better else None,
            "layer_switches": switches,
            **_window(timeline, start + SETTLE_S, stop),
            "freezes": _freezes(timeline, start, stop),
        }
        phase["_back"] = _slowest(ups) if better else None  # unrounded, for the summary
        phases.append(phase)
    summary: dict[str, Any] = {
        "switch_down_s": None,
        "back_to_top_s": None,
        "layer_switches_between": None,
        "audio_loss_pct_limited": None,
        "video_loss_pct_limited": None,
        "video_loss_before_repair_pct_limited": None,
    }
    if first_worse is not None:
        limited = phases[first_worse]
        summary["switch_down_s"] = limited["switch_down_s"]
        summary["audio_loss_pct_limited"] = limited["audio_loss_pct"]
        summary["video_loss_pct_limited"] = limited["video_loss_pct"]
        summary["video_loss_before_repair_pct_limited"] = limited["video_loss_before_repair_pct"]
        lift = next(
            (
                j
                for j in range(first_worse + 1, len(changes))
                if changes[j][1].better_than(changes[j - 1][1])
            ),
            None,
        )
        if lift is not None:
            back = phases[lift]["_back"]
            summary["back_to_top_s"] = _round(back)
            until = changes[lift][0] + (back if back is not None else end - changes[lift][0])
            summary["layer_switches_between"] = sum(
                1
                for events in by_track.values()
                for t, _, _ in events
                if changes[first_worse][0] < t <= until
            )
    for phase in phases:
        del phase["_back"]
    freezes = _freezes(timeline, timeline[0][0] if timeline else t0, end)
    return {
        **summary,
        "freezes": freezes,
        "top_layer": {
            track: next(k for k, v in {"paused": 0, "q": 1, "h": 2, "f": 3}.items() if v == top)
            for track, top in tops.items()
        },
        "layer_changes": [
            [round(t - t0, 2), track, _name(rid, paused)]
            for track, events in by_track.items()
            for t, rid, paused in events
        ],
        "phases": phases,
    }


def _slowest(values: list[float | None]) -> float | None:
    """The slowest track's time (None when some track never got there, or no track)."""
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
