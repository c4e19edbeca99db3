"""The receiver's side of transport-cc feedback as seen over time (pure, ``now`` passed
in): the newest arrival time reported (the receiver's clock, which may start over) and
when feedback last came (the SFU's clock), for the windows that are measured over them
(``AcknowledgedRate``, ``QueueDelay``).
"""

from __future__ import annotations


class ReceiverClock:
    def __init__(self, stale: float, reset_gap: float = 5.0) -> None:
        #: seconds (SFU clock) after the newest feedback when it is no longer fresh
        self.stale = stale
        #: an arrival this far (s) before the newest one: the receiver's clock started over
        self.reset_gap = reset_gap
        self.newest_arrival = float("-inf")
        self._last_feedback: float | None = None

    def arrived(self, arrival: float) -> bool:
        """One reported arrival; returns True when the receiver's clock started over
        (what was measured over its arrivals before is to be forgotten)."""
        reset = arrival < self.newest_arrival - self.reset_gap
        if reset:
            self.newest_arrival = arrival
        else:
            self.newest_arrival = max(self.newest_arrival, arrival)
        return reset

    def feedback(self, now: float) -> None:
        """A feedback message with reported packets came."""
        self._last_feedback = now

    def fresh(self, now: float) -> bool:
        last = self._last_feedback
        return last is not None and now - last <= self.stale
