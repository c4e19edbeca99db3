"""Per-subscriber bandwidth estimation for layer allocation (pure, time passed in).

What a subscriber can take is judged from what its receiver reports, on the SFU's
sending leg:

* **REMB** (the receiver's delay-based estimate). A receiver derives it from what it
  receives: about 1x at first, growing about 8 %/s up to 1.5x while all is well, and
  cut to 0.85x when queues build up on the path (overuse). So REMB is read as a
  congestion *signal*: a REMB that drops (by more than ``remb_drop``) to below
  ``remb_limiting`` x what is sent caps the estimate at that REMB. A REMB far below
  what is sent right after a switch up, with no drop, only means it has not caught up.
* **Loss** in receiver reports (RFC 3550 fraction lost, for the video SSRCs), as in
  libwebrtc's loss-based controller: above ``loss_high`` (10 %) the cap becomes
  ``sent x (1 - loss / 2)``; between ``loss_low`` and ``loss_high`` it holds; below
  ``loss_low`` (2 %) it may grow.
* **Recovery**: once no signal has capped the estimate for ``hold`` seconds, the cap
  grows by ``growth`` per second (25 %: from 250 kbit/s to 2 Mbit/s in about 9 s); above
  ``max_bitrate`` it is lifted entirely. The layer allocator turns a growing cap into one layer up at a
  time, and the layer selector's hysteresis backs off when a step up fails, so the
  steps up are the probes.

``estimate(now)`` is the cap in bit/s for the subscriber's video, or None when nothing
says the link is limited.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BweSettings:
    remb_drop: float = 0.05
    remb_limiting: float = 0.9
    loss_low: float = 0.02
    loss_high: float = 0.10
    #: seconds without a congestion signal before the cap starts growing
    hold: float = 2.0
    #: growth of the cap per second of calm (1.25: +25 %/s)
    growth: float = 1.25
    min_bitrate: float = 30_000.0
    max_bitrate: float = 50_000_000.0
    #: at most one loss-based decrease per this many seconds (about one RR interval)
    decrease_interval: float = 0.9


class BandwidthEstimator:
    def __init__(self, settings: BweSettings | None = None) -> None:
        self.settings = settings or BweSettings()
        self.cap: float | None = None
        self.sent = 0.0
        self.remb: float | None = None
        self.loss = 0.0
        self.last_signal: float | None = None
        self._last_decrease = -1e9
        self._last_update: float | None = None
        #: (time, reason, cap) of every decrease, newest last (bounded)
        self.events: list[tuple[float, str, float]] = []

    def on_sent(self, bitrate: float, now: float) -> None:
        """What the SFU sent this subscriber's video, bit/s (about once a second)."""
        self.sent = bitrate
        self._grow(now)

    def on_remb(self, bitrate: float, now: float) -> None:
        s = self.settings
        previous = self.remb
        self.remb = bitrate
        if (
            previous is not None
            and bitrate < (1 - s.remb_drop) * previous
            and bitrate < s.remb_limiting * self.sent
        ):
            self._decrease(bitrate, now, "remb")

    def on_loss(self, fraction: float, now: float) -> None:
        """Fraction lost (0..1) from a receiver report block of a video stream."""
        s = self.settings
        self.loss = fraction
        if fraction > s.loss_high:
            if now - self._last_decrease >= s.decrease_interval and self.sent > 0:
                self._decrease(self.sent * (1 - fraction / 2), now, "loss")
        elif fraction >= s.loss_low:
            self.last_signal = now  # hold: no growth while losing a little

    def _decrease(self, value: float, now: float, reason: str) -> None:
        s = self.settings
        value = max(s.min_bitrate, value)
        self.cap = value if self.cap is None else min(self.cap, value)
        self.last_signal = now
        self._last_decrease = now
        self._last_update = now
        self.events.append((now, reason, self.cap))
        del self.events[:-32]

    def _grow(self, now: float) -> None:
        s = self.settings
        last = self._last_update
        self._last_update = now
        if self.cap is None or last is None or self.last_signal is None:
            return
        if now - self.last_signal < s.hold:
            return
        self.cap *= s.growth ** max(0.0, now - max(last, self.last_signal + s.hold))
        if self.cap > s.max_bitrate:
            self.cap = None

    def estimate(self, now: float) -> float | None:
        self._grow(now)
        return self.cap
