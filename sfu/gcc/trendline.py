"""Delay trend and the overuse detector (as libwebrtc's ``TrendlineEstimator``).

Each group delta adds ``arrival_delta - send_delta`` to an accumulated delay, which is
smoothed (``smoothing``) and kept with its arrival time over the last ``window``
groups; the slope of a least-squares line through them is the *trend*: how fast the
path's queue grows (ms per ms). Scaled by ``gain`` and by how many deltas back it (at
most ``min_deltas``), it is compared with an adaptive threshold:

* above it for more than ``overuse_time`` (10 ms of send time) and in at least two
  deltas in a row, and not falling: **overusing** (a queue builds);
* below minus the threshold: **underusing** (a queue drains);
* otherwise **normal**.

The threshold follows the modified trend, slowly up (``k_up``) and faster down
(``k_down``), ignoring values far outside it (more than ``max_adapt_offset`` ms
away): jitter that keeps coming raises it, so a noisy receiver's arrival times do not
read as a queue, while a real queue's sudden rise still crosses it. Units are
milliseconds inside, as in the draft. ``sfu._native.Trendline`` (``sfu/_feedback.c``) is
the same in C, held to this one by ``tests/unit/test_feedback_path.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

NORMAL = "normal"
OVERUSING = "overusing"
UNDERUSING = "underusing"


@dataclass(frozen=True, slots=True)
class TrendlineSettings:
    window: int = 20
    smoothing: float = 0.9
    gain: float = 4.0
    min_deltas: int = 60
    initial_threshold: float = 12.5
    k_up: float = 0.0087
    k_down: float = 0.039
    min_threshold: float = 6.0
    max_threshold: float = 600.0
    max_adapt_offset: float = 15.0
    #: ms of overuse (in send time) before it is reported
    overuse_time: float = 10.0


def _slope(points: deque[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``points`` (per packet group: plain loops, about
    2x faster than the same sums over generators)."""
    n = len(points)
    sum_x = sum_y = 0.0
    for x, y in points:
        sum_x += x
        sum_y += y
    mean_x, mean_y = sum_x / n, sum_y / n
    numerator = denominator = 0.0
    for x, y in points:
        dx = x - mean_x
        numerator += dx * (y - mean_y)
        denominator += dx * dx
    return numerator / denominator if denominator else None


class TrendlineDetector:
    def __init__(self, settings: TrendlineSettings | None = None) -> None:
        self.settings = settings or TrendlineSettings()
        self.state = NORMAL
        self.threshold = self.settings.initial_threshold
        self.trend = 0.0
        #: the trend scaled by gain and sample count, as compared with the threshold
        self.modified_trend = 0.0
        self._deltas = 0
        self._first_arrival: float | None = None
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._history: deque[tuple[float, float]] = deque()
        self._time_over: float = -1.0
        self._over_count = 0
        self._previous_trend = 0.0
        self._last_threshold_update: float | None = None

    def update(self, send_delta: float, arrival_delta: float, arrival: float) -> str:
        """One group delta (s, as ``GroupDelta``); returns the detector's state."""
        s = self.settings
        delta_ms = (arrival_delta - send_delta) * 1000.0
        arrival_ms = arrival * 1000.0
        self._deltas = min(self._deltas + 1, 1000)
        if self._first_arrival is None:
            self._first_arrival = arrival_ms
        self._accumulated += delta_ms
        self._smoothed = s.smoothing * self._smoothed + (1 - s.smoothing) * self._accumulated
        self._history.append((arrival_ms - self._first_arrival, self._smoothed))
        if len(self._history) > s.window:
            self._history.popleft()
        trend = self._previous_trend
        if len(self._history) == s.window:
            slope = _slope(self._history)
            if slope is not None:
                trend = slope
        self.trend = trend
        self._detect(trend, send_delta * 1000.0, arrival_ms)
        return self.state

    def update_all(self, deltas: Sequence[tuple[float, float, float]]) -> str:
        """``update`` for each ``(send_delta, arrival_delta, arrival)``; the last state."""
        for send_delta, arrival_delta, arrival in deltas:
            self.update(send_delta, arrival_delta, arrival)
        return self.state

    def _detect(self, trend: float, send_delta_ms: float, now_ms: float) -> None:
        s = self.settings
        if self._deltas < 2:
            self.state = NORMAL
            return
        modified = min(self._deltas, s.min_deltas) * trend * s.gain
        self.modified_trend = modified
        if modified > self.threshold:
            if self._time_over == -1.0:
                self._time_over = send_delta_ms / 2  # the overuse began halfway
            else:
                self._time_over += send_delta_ms
            self._over_count += 1
            if self._time_over > s.overuse_time and self._over_count > 1:
                if trend >= self._previous_trend:
                    self._time_over = 0.0
                    self._over_count = 0
                    self.state = OVERUSING
        elif modified < -self.threshold:
            self._time_over = -1.0
            self._over_count = 0
            self.state = UNDERUSING
        else:
            self._time_over = -1.0
            self._over_count = 0
            self.state = NORMAL
        self._previous_trend = trend
        self._update_threshold(modified, now_ms)

    def _update_threshold(self, modified: float, now_ms: float) -> None:
        s = self.settings
        last = self._last_threshold_update
        if last is None:
            last = now_ms
        if abs(modified) > self.threshold + s.max_adapt_offset:
            # a spike (a sudden queue, a stall): not what the noise level is
            self._last_threshold_update = now_ms
            return
        k = s.k_down if abs(modified) < self.threshold else s.k_up
        elapsed = min(now_ms - last, 100.0)
        self.threshold += k * (abs(modified) - self.threshold) * elapsed
        self.threshold = min(s.max_threshold, max(s.min_threshold, self.threshold))
        self._last_threshold_update = now_ms
