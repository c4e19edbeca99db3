"""The acknowledged bitrate: what the receiver's transport-cc feedback shows it received.

Bytes of the packets that arrived within the last ``window`` seconds of arrival time
(the receiver's clock), over that window: a rate the path actually carried, which a
bottleneck holds at its capacity while the SFU sends more. ``sent_rate`` is the same
over send time for every packet the feedback reports (received or lost): the two
compared say whether the path keeps up. A window of 0.5 s follows a link that narrows
within half a second and averages a receiver's 100-300 ms stall (its packets arrive
late and bunched, but they arrive).
"""

from __future__ import annotations

from collections import deque

from .packet import PacketResult
from .receiver_clock import ReceiverClock


class AcknowledgedRate:
    def __init__(self, window: float = 0.5, stale: float = 2.0, reset_gap: float = 5.0) -> None:
        self.window = window
        #: feedback older than ``stale`` s measures nothing; an arrival ``reset_gap`` s
        #: before the newest one: the receiver's clock started over (forgotten before)
        self._clock = ReceiverClock(stale, reset_gap)
        #: (arrival, size) of received packets, arrival order as reported
        self._arrived: deque[tuple[float, int]] = deque()
        #: (send_time, size) of every reported packet
        self._sent: deque[tuple[float, int]] = deque()
        self._arrived_bytes = 0
        self._sent_bytes = 0
        self._first_arrival: float | None = None
        self._first_send: float | None = None

    def update(self, results: list[PacketResult], now: float) -> None:
        for r in results:
            self._sent.append((r.send_time, r.size))
            self._sent_bytes += r.size
            if self._first_send is None:
                self._first_send = r.send_time
            if r.arrival is not None:
                if self._clock.arrived(r.arrival):
                    self._arrived.clear()  # the receiver's clock started over
                    self._arrived_bytes = 0
                    self._first_arrival = None
                self._arrived.append((r.arrival, r.size))
                self._arrived_bytes += r.size
                if self._first_arrival is None:
                    self._first_arrival = r.arrival
        if results:
            self._clock.feedback(now)
        self._trim()

    def _trim(self) -> None:
        if self._arrived:
            newest = self._clock.newest_arrival
            while self._arrived and self._arrived[0][0] < newest - self.window:
                self._arrived_bytes -= self._arrived.popleft()[1]
        if self._sent:
            newest_send = self._sent[-1][0]
            while self._sent and self._sent[0][0] < newest_send - self.window:
                self._sent_bytes -= self._sent.popleft()[1]

    def _span(self, first: float | None, newest: float) -> float:
        # before a whole window has passed, the rate is over what there is (at least
        # 100 ms, so that the first few packets do not read as a huge rate)
        if first is None:
            return self.window
        return max(0.1, min(self.window, newest - first))

    def fresh(self, now: float) -> bool:
        return self._clock.fresh(now)

    def newest_send(self) -> float | None:
        """The send time of the newest packet the feedback reported (received or lost)."""
        return self._sent[-1][0] if self._sent else None

    def rate(self, now: float) -> float | None:
        """Acknowledged bit/s, or None before any packet arrived or while feedback is
        stale."""
        if not self._arrived or not self.fresh(now):
            return None
        newest = self._clock.newest_arrival
        return self._arrived_bytes * 8 / self._span(self._first_arrival, newest)

    def recent_rate(self, now: float, window: float = 0.2) -> float | None:
        """Bit/s of what arrived within the newest ``window`` seconds of arrival time
        (at least 80 ms of arrivals and 4 packets, else None): behind a standing queue,
        the bottleneck's capacity, before the longer window has let go of what the link
        carried before it narrowed."""
        if not self._arrived or not self.fresh(now):
            return None
        newest = self._clock.newest_arrival
        total = count = first_size = 0
        first = newest
        for arrival, size in reversed(self._arrived):
            if arrival < newest - window:
                break
            total += size
            count += 1
            first, first_size = arrival, size
        if count < 4 or newest - first < 0.08:
            return None
        # the first packet's bytes arrived at ``first``: the span carried the others
        return (total - first_size) * 8 / (newest - first)

    def sent_rate(self, now: float) -> float | None:
        """Bit/s of the packets the feedback reports, over their send times."""
        if not self._sent or not self.fresh(now):
            return None
        newest = self._sent[-1][0]
        return self._sent_bytes * 8 / self._span(self._first_send, newest)
