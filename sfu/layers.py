"""Simulcast layer selection (pure: no I/O, time passed in).

Per subscriber the SFU decides, for every remote video track, which simulcast layer
to forward. Three inputs:

* the subscriber's request for that track (a maximum size, or paused);
* which layers the publisher is actually sending, their sizes and bitrates;
* the subscriber's bandwidth estimate (REMB), shared by all its video tracks.

:func:`allocate` shares the estimate among a subscriber's tracks; a
:class:`LayerSelector` per track turns the result into a target layer with
hysteresis: down at once, up only after the higher layer has fitted for a while, and
that while grows each time bandwidth pushed the track down again, so layers do not
flap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: A higher layer must fit the estimate with this much headroom to be chosen.
UP_MARGIN = 1.15
#: A layer that sent nothing for this long (s) is not offered by the publisher now.
ACTIVE_TIMEOUT = 1.5


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One simulcast layer as the SFU receives it."""

    #: position in the track's layer list (the publisher's order)
    index: int
    width: int  # 0 until a keyframe told us
    height: int
    #: bits per second over the last second or so (0: not measured yet)
    bitrate: float
    active: bool


def expected_bitrate(info: LayerInfo, position: int) -> float:
    """The layer's measured bitrate, or before it is measured a typical one for its
    height (or, height unknown too, for its ``position`` from the lowest): an unmeasured
    layer must not look free to the allocation."""
    if info.bitrate > 0:
        return info.bitrate
    height = info.height
    if height <= 0:
        return _NOMINAL[min(position, len(_NOMINAL) - 1)][1]
    return next((rate for top, rate in _NOMINAL if height <= top), _NOMINAL[-1][1])


#: (up to this height, typical bit/s) of VP8 simulcast layers (Chromium's defaults)
_NOMINAL = ((180, 150_000.0), (360, 500_000.0), (540, 1_000_000.0), (10_000, 1_800_000.0))


#: No temporal level is offered below this frame rate, except the base temporal layer
#: of the lowest spatial layer (the last step before pausing).
MIN_FPS = 10.0


@dataclass(frozen=True, slots=True)
class Level:
    """One step the allocation may choose for a track: a spatial layer (``index`` in
    the track's layer list) with its temporal layers up to ``tid`` (-1: all of them)."""

    index: int
    tid: int
    bitrate: float
    #: under ``MIN_FPS``: only as the last step before pausing
    last_resort: bool = False

    @property
    def key(self) -> int:
        """A number naming this step (``LayerSelector`` works on these)."""
        return self.index * 4 + (3 if self.tid < 0 else self.tid)


def key_layer(key: int) -> tuple[int, int | None]:
    """(spatial index, highest TID or None for all) of a ``Level.key``."""
    tid = key % 4
    return key // 4, None if tid == 3 else tid


def levels(
    layers: Sequence[LayerInfo],
    temporal: Sequence[Sequence[tuple[float, float]]],
    min_fps: float = MIN_FPS,
) -> list[Level]:
    """The steps of a track, by bitrate: each of ``layers`` (lowest first, as from
    :func:`allowed`) whole, and with fewer temporal layers where its publisher sends
    them (``temporal[i]``: bit/s and frames/s up to each TID, ``Source.temporal``), at
    the layer's bitrate scaled by the share those TIDs carry. A temporal step under
    ``min_fps`` is left out, except the base of the lowest layer: dropping temporal
    layers of a spatial layer comes before dropping to the layer below only while the
    picture stays fluid, and before pausing in any case."""
    steps: list[Level] = []
    for position, (info, rates) in enumerate(zip(layers, temporal, strict=True)):
        full = expected_bitrate(info, position)
        if len(rates) > 1 and rates[-1][0] > 0:
            for tid, (bits, fps) in enumerate(rates[:-1]):
                if fps >= min_fps or (position == 0 and tid == 0):
                    bitrate = full * bits / rates[-1][0]
                    steps.append(Level(info.index, tid, bitrate, fps < min_fps))
        steps.append(Level(info.index, -1, full))
    return sorted(steps, key=lambda step: step.bitrate)


#: A last-resort step (the lowest layer's base temporal layer, under ``MIN_FPS``) is
#: taken only while the budget is under this share of the lowest layer whole: within
#: 5 % of it, the pacer spreads the excess (and the layer's measured rate wavers by that
#: much), while 7.5 fps is a picture that no longer moves smoothly. No more: a lowest
#: layer sent over what the link carries fills its queue and ends paused.
LAST_RESORT_FIT = 0.95


def past_last_resort(
    steps: Sequence[Level], level: int, budget: float | None, others: float
) -> int:
    """``level`` raised past a last-resort step while ``budget`` (with ``others`` bit/s
    allocated to other tracks) is within ``LAST_RESORT_FIT`` of the step above it."""
    if 0 <= level < len(steps) - 1 and steps[level].last_resort and budget is not None:
        if budget >= LAST_RESORT_FIT * (others + steps[level + 1].bitrate):
            return level + 1
    return level


def floor_level(steps: Sequence[Level], level: int) -> int:
    """``level`` raised past a last-resort step: while the estimator may not pause
    video (no loss evidence, ``BandwidthEstimator.may_pause``) the lowest layer is kept
    whole, at its full frame rate, as it was before temporal steps."""
    while 0 <= level < len(steps) - 1 and steps[level].last_resort:
        level += 1
    return level


@dataclass(frozen=True, slots=True)
class LayerRequest:
    """What a subscriber asked for one track (``set_layer``)."""

    max_width: int | None = None
    max_height: int | None = None
    paused: bool = False


def ordered(layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """Active layers from lowest to highest.

    By size when every active layer's size is known, else in the publisher's order
    (browsers list simulcast layers from the smallest, as the bot does).
    """
    active = [layer for layer in layers if layer.active]
    if active and all(layer.height for layer in active):
        return sorted(active, key=lambda layer: (layer.height, layer.width, layer.index))
    return sorted(active, key=lambda layer: layer.index)


def allowed(layers: Sequence[LayerInfo], request: LayerRequest) -> list[LayerInfo]:
    """The active layers the request allows, lowest first; never empty unless no layer
    is active or the track is paused: when even the lowest is larger than the request,
    the lowest is allowed (a small picture beats none)."""
    if request.paused:
        return []
    candidates = ordered(layers)
    if not candidates:
        return []
    fits = [
        layer
        for layer in candidates
        if (request.max_height is None or layer.height <= request.max_height)
        and (request.max_width is None or layer.width <= request.max_width)
    ]
    if request.max_height is None and request.max_width is None:
        fits = candidates
    return fits or candidates[:1]


def allocate(
    budget: float | None,
    demands: Sequence[Sequence[float]],
    current: Sequence[int | None],
    margin: float = UP_MARGIN,
    priorities: Sequence[float] | None = None,
    floor: bool = False,
) -> list[int]:
    """Share ``budget`` (bit/s, None: unlimited) among tracks; return a level per track.

    ``demands[i]`` lists the bitrates of the layers track ``i`` may receive, lowest
    first (its :func:`allowed` layers); the result indexes that list, -1 when the
    track gets nothing (an empty demand, or even its lowest layer does not fit: its
    video is paused). Tracks get their lowest layer in priority order while it fits;
    then they are raised one level at a time while the budget lasts: those of the
    highest ``priorities`` first (round robin among equals), then the next group.
    Keeping a track at the level it is on (``current``) needs the layer's bitrate;
    going above it (or resuming) needs ``margin`` times that. With ``floor`` every
    track keeps at least its lowest layer, whatever the budget.
    """
    if budget is None:
        return [len(demand) - 1 for demand in demands]
    levels = [-1] * len(demands)
    remaining = budget
    ranks = list(priorities) if priorities is not None else [0.0] * len(demands)
    groups = [
        [i for i in range(len(demands)) if ranks[i] == rank]
        for rank in sorted(set(ranks), reverse=True)
    ]

    def held(i: int, level: int) -> bool:
        now_at = current[i] if i < len(current) else None
        return now_at is not None and level <= now_at

    for group in groups:  # the lowest layers first, by priority
        for i in group:
            demand = demands[i]
            if demand and (floor or demand[0] * (1.0 if held(i, 0) else margin) <= remaining):
                levels[i] = 0
                remaining -= demand[0]
    for group in groups:  # then one level at a time, round robin within a priority
        raised = True
        while raised:
            raised = False
            for i in group:
                demand = demands[i]
                nxt = levels[i] + 1
                if levels[i] < 0 or nxt >= len(demand):
                    continue
                cost = demand[nxt] - demand[levels[i]]
                needed = cost if held(i, nxt) else demand[nxt] * margin - demand[levels[i]]
                if needed <= remaining:
                    levels[i] = nxt
                    remaining -= cost
                    raised = True
    return levels


def priority(request: LayerRequest, is_speaker: bool) -> float:
    """Who gets bandwidth first: the active speaker, then larger requested sizes."""
    w = request.max_width if request.max_width is not None else 7680
    h = request.max_height if request.max_height is not None else 4320
    return (1e9 if is_speaker else 0.0) + float(w * h)


class LayerSelector:
    """Hysteresis for one forwarder's layer choice.

    ``decide(proposed, ceiling, current, rank, now)`` takes the layer the allocation
    proposes and the highest layer the request alone would allow (``ceiling``), both as
    layer indexes in the track's list, and returns the layer to aim for. Going down is
    immediate. Going up is immediate unless bandwidth capped this track within the last
    ``reset_after`` seconds; then the track climbs one layer at a time, each step only
    after the higher proposal has held for ``up_delay``. A bandwidth-caused downswitch
    within ``fail_window`` seconds of a step up (the step failed) doubles ``up_delay``
    (up to ``max_up_delay``); a long calm resets it.
    """

    def __init__(
        self,
        up_delay: float = 1.0,
        max_up_delay: float = 30.0,
        reset_after: float = 60.0,
        fail_window: float = 10.0,
    ) -> None:
        self.base_up_delay = up_delay
        self.up_delay = up_delay
        self.max_up_delay = max_up_delay
        self.reset_after = reset_after
        self.fail_window = fail_window
        self.last_bandwidth_down: float | None = None
        #: the last time bandwidth, not the request, capped the proposal
        self.last_limited: float | None = None
        self.last_step_up: float | None = None
        self._up_since: float | None = None

    def decide(
        self,
        proposed: int | None,
        ceiling: int | None,
        current: int | None,
        rank: dict[int, int],
        now: float,
    ) -> int | None:
        """``rank`` maps a layer index to its position, lowest first (from ``allowed``).

        None stands for "nothing" (paused) and ranks below every layer. ``ceiling`` is
        what the request alone allows (None: the request itself is a pause).
        """
        if current is not None and current not in rank:
            self._up_since = None
            return proposed  # the layer being forwarded stopped: move at once
        p = -1 if proposed is None else rank.get(proposed, -1)
        c = -1 if current is None else rank[current]
        limited = ceiling is not None and rank.get(ceiling, -1) > p
        if limited:
            self.last_limited = now
        if p < c:
            self._up_since = None
            if limited:
                self._bandwidth_down(now)
            return proposed
        if p == c:
            self._up_since = None
            return current
        recovering = self.last_limited is not None and (now - self.last_limited < self.reset_after)
        if not recovering:
            self._up_since = None
            return proposed
        if self._up_since is None:
            self._up_since = now
        if now - self._up_since < self.up_delay:
            return current
        self._up_since = None
        self.last_step_up = now
        by_rank = {pos: index for index, pos in rank.items()}
        return by_rank.get(c + 1, proposed)

    def relax(self) -> None:
        """The link has shown it takes more (a run of successful probes): a step that
        failed on it earlier says nothing now, so climb at the base pace again."""
        self.up_delay = self.base_up_delay

    def _bandwidth_down(self, now: float) -> None:
        last_up = self.last_step_up
        last_down = self.last_bandwidth_down
        if last_up is not None and now - last_up < self.fail_window:
            self.up_delay = min(self.max_up_delay, self.up_delay * 2)
            self.last_step_up = None
        elif last_down is None or now - last_down >= self.reset_after:
            self.up_delay = self.base_up_delay
        self.last_bandwidth_down = now
