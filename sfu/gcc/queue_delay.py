"""The queuing delay a subscriber's path holds now, from transport-cc feedback.

A packet's one-way delay is its arrival (the receiver's clock) less its send time (the
SFU's clock): the clocks' offset is unknown but constant, so the lowest delay seen over
``baseline`` seconds stands for an empty path, and what the newest packets take above it
is queuing. ``standing(now)`` says whether a queue of at least ``threshold`` seconds
stands: the packets that arrived within the newest ``recent`` seconds (of arrival time)
all waited that long (the lowest of them, so jitter alone does not read as a queue).
Arrival time, not send time: a frame sent in one burst reaches the far side of a
narrow link over a long time, and only its last packets show the queue it built. While a bottleneck's queue stands, its
output runs at the bottleneck's capacity, so what arrived lately measures the link
(``AcknowledgedRate.recent_rate``).
"""

from __future__ import annotations

from collections import deque

from .packet import PacketResult
from .receiver_clock import ReceiverClock


class QueueDelay:
    def __init__(
        self,
        threshold: float = 0.08,
        recent: float = 0.1,
        baseline: float = 10.0,
        stale: float = 1.0,
        reset_gap: float = 5.0,
    ) -> None:
        self.threshold = threshold
        self.recent = recent
        self.baseline = baseline
        #: feedback older than ``stale`` s (SFU clock): nothing stands any more; an
        #: arrival ``reset_gap`` s before the newest one: the receiver's clock started over
        self._clock = ReceiverClock(stale, reset_gap)
        #: (arrival, one-way delay) of received packets, as reported
        self._delays: deque[tuple[float, float]] = deque()
        #: (send_time, delay) candidates for the baseline's minimum (monotonic deque)
        self._minimum: deque[tuple[float, float]] = deque()

    def update(self, results: list[PacketResult], now: float) -> None:
        for r in results:
            if r.arrival is None:
                continue
            if self._clock.arrived(r.arrival):
                self._delays.clear()
                self._minimum.clear()
            delay = r.arrival - r.send_time
            self._delays.append((r.arrival, delay))
            minimum = self._minimum
            while minimum and minimum[-1][1] >= delay:
                minimum.pop()
            minimum.append((r.send_time, delay))
        if results:
            self._clock.feedback(now)
        newest = self._clock.newest_arrival
        while self._delays and self._delays[0][0] < newest - self.recent:
            self._delays.popleft()
        if self._minimum:
            newest_send = self._minimum[-1][0]
            while self._minimum and self._minimum[0][0] < newest_send - self.baseline:
                self._minimum.popleft()

    def delay(self, now: float) -> float | None:
        """Seconds the newest packets queued (the least of them), or None without fresh
        feedback."""
        if not self._delays or not self._minimum or not self._clock.fresh(now):
            return None
        return min(d for _, d in self._delays) - self._minimum[0][1]

    def standing(self, now: float) -> bool:
        delay = self.delay(now)
        return delay is not None and delay >= self.threshold
