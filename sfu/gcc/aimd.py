"""Delay-based rate control: additive/multiplicative increase, multiplicative decrease
(as libwebrtc's ``AimdRateControl``).

The detector's state drives a small state machine: **overusing** decreases the rate to
``beta`` (0.9) x the acknowledged rate, the rate the path was measured to carry, so a
decrease lands just under the bottleneck however far above it the SFU was sending;
**normal** increases it; **underusing** holds it (a queue drains: the rate that filled
it is about right). After a decrease the controller holds until the detector says
normal again.

The increase is multiplicative (``1.08`` per second) far from the last known link
capacity, and additive near it (about one packet per response time, ``rtt + 100 ms``):
the capacity is the acknowledged rate at each overuse, averaged, with its deviation;
a rate outside ``capacity +- 3 deviations`` forgets it. While increasing, the rate
never exceeds ``1.5 x acknowledged + 10 kbit/s``: what the receiver does not yet get
is no evidence that the path takes it. A second decrease waits ``min_decrease_interval``
(the queue the first one drains takes about a round trip to show), unless the
acknowledged rate is under half the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .trendline import NORMAL, OVERUSING, UNDERUSING


@dataclass(frozen=True, slots=True)
class AimdSettings:
    beta: float = 0.9
    multiplicative: float = 1.08
    max_acked_factor: float = 1.5
    max_acked_offset: float = 10_000.0
    min_decrease_interval: float = 0.2
    min_bitrate: float = 30_000.0
    packet_bits: float = 1200 * 8
    fps: float = 30.0
    min_additive: float = 4_000.0


class _LinkCapacity:
    """The acknowledged rate at overuse, averaged (kbit/s inside, as libwebrtc)."""

    def __init__(self) -> None:
        self.estimate: float | None = None
        self._deviation = 0.4

    def update(self, sample: float, alpha: float = 0.05) -> None:
        kbps = sample / 1000.0
        estimate = self.estimate
        estimate = kbps if estimate is None else (1 - alpha) * estimate + alpha * kbps
        error = estimate - kbps
        deviation = (1 - alpha) * self._deviation + alpha * error * error / max(estimate, 1.0)
        self._deviation = min(2.5, max(0.4, deviation))
        self.estimate = estimate

    def upper(self) -> float:
        if self.estimate is None:
            return math.inf
        return (self.estimate + 3 * math.sqrt(self.estimate * self._deviation)) * 1000.0

    def reset(self) -> None:
        self.estimate = None


class AimdRateControl:
    def __init__(self, settings: AimdSettings | None = None) -> None:
        self.settings = settings or AimdSettings()
        #: bit/s, or None before the first overuse (nothing limits the rate)
        self.value: float | None = None
        self.capacity = _LinkCapacity()
        self._state = "hold"
        self._last_update: float | None = None
        self._last_decrease: float | None = None

    def set(self, value: float, now: float) -> None:
        """The rate set from outside (a probe's result, a loss-based decrease)."""
        self.value = max(self.settings.min_bitrate, value)
        self._last_update = now

    def update(
        self, detector: str, acked: float | None, sent: float | None, now: float, rtt: float
    ) -> bool:
        """One detector state; returns True when the rate was decreased."""
        if detector == OVERUSING:
            self._state = "decrease"
        elif detector == UNDERUSING:
            self._state = "hold"
        elif detector == NORMAL and self._state == "hold":
            self._state = "increase"
        decreased = False
        if self._state == "increase":
            self._increase(acked, now, rtt)
        elif self._state == "decrease":
            decreased = self._decrease(acked, sent, now, rtt)
        self._last_update = now
        return decreased

    def _increase(self, acked: float | None, now: float, rtt: float) -> None:
        s = self.settings
        value = self.value
        last = self._last_update
        if value is None or last is None:
            return
        if acked is not None and acked > self.capacity.upper():
            self.capacity.reset()  # the link carries more than it did: forget it
        dt = max(0.0, min(now - last, 1.0))
        if self.capacity.estimate is not None:
            new = value + self._additive_rate(value, rtt) * dt
        else:
            new = value * s.multiplicative**dt
        if acked is not None:
            bound = s.max_acked_factor * acked + s.max_acked_offset
            new = min(new, max(value, bound))
        self.value = new

    def _additive_rate(self, value: float, rtt: float) -> float:
        s = self.settings
        frame_bits = value / s.fps
        packets = max(1.0, math.ceil(frame_bits / s.packet_bits))
        response = rtt + 0.1
        return max(s.min_additive, frame_bits / packets / response)

    def _decrease(self, acked: float | None, sent: float | None, now: float, rtt: float) -> bool:
        s = self.settings
        value = self.value
        reference = acked if acked is not None else sent
        if reference is None:
            return False
        last = self._last_decrease
        wait = min(max(rtt, s.min_decrease_interval), 0.5)
        further = value is not None and reference < 0.5 * value
        if last is not None and now - last < wait and not further:
            return False
        target = s.beta * reference
        if value is not None and target > value and self.capacity.estimate is not None:
            target = s.beta * self.capacity.estimate * 1000.0
        if acked is not None:
            self.capacity.update(acked)
        self._state = "hold"
        self._last_decrease = now
        if value is not None and target >= value:
            return False
        self.value = max(s.min_bitrate, target)
        return True
