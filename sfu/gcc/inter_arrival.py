"""Inter-group delay variation (as libwebrtc's ``InterArrivalDelta``).

Packets are grouped by send time: a group holds the packets sent within
``group_length`` (5 ms) of its first one, the way a video frame leaves in a burst.
Packets that arrive bunched after the group (within ``burst_delta`` of the previous
arrival, earlier than their send spacing says, the whole burst within ``max_burst``)
join it too: a receiver whose process stalled hands over everything it queued at once,
and that burst is one group, not a run of negative delays. For every completed group
the deltas to the one before are reported: send time (last packet to last packet),
arrival time, size. A positive ``arrival_delta - send_delta`` means the path queued
more between the two groups.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GroupDelta:
    """Between two consecutive send-time groups: ``send_delta`` and ``arrival_delta``
    (s), ``size_delta`` (bytes), and ``arrival`` (s, receiver clock), when the newer
    group's last packet arrived."""

    send_delta: float
    arrival_delta: float
    size_delta: int
    arrival: float


@dataclass(slots=True)
class _Group:
    first_send: float
    last_send: float
    first_arrival: float
    last_arrival: float
    size: int


class InterArrival:
    def __init__(
        self,
        group_length: float = 0.005,
        burst_delta: float = 0.005,
        max_burst: float = 0.1,
        reset_gap: float = 3.0,
    ) -> None:
        self.group_length = group_length
        self.burst_delta = burst_delta
        self.max_burst = max_burst
        #: an arrival gap this long (s) between groups starts over (a receiver that went
        #: away, a clock jump)
        self.reset_gap = reset_gap
        self._current: _Group | None = None
        self._previous: _Group | None = None
        #: deltas dropped because arrivals went backwards (reordering) or jumped
        self.resets = 0

    def add(self, send_time: float, arrival: float, size: int) -> GroupDelta | None:
        """One received packet (in transport-wide sequence order); returns the deltas
        when it completes a group (it then starts the next one)."""
        current = self._current
        if current is None:
            self._current = _Group(send_time, send_time, arrival, arrival, size)
            return None
        if send_time < current.first_send:
            return None  # sent before the group it would join: reordered, ignored
        if not self._new_group(current, send_time, arrival):
            current.last_send = max(current.last_send, send_time)
            current.last_arrival = max(current.last_arrival, arrival)
            current.size += size
            return None
        delta = None
        previous = self._previous
        if previous is not None:
            send_delta = current.last_send - previous.last_send
            arrival_delta = current.last_arrival - previous.last_arrival
            if arrival_delta < 0 or arrival_delta > self.reset_gap:
                self.resets += 1
                self._previous = None
            else:
                delta = GroupDelta(
                    send_delta, arrival_delta, current.size - previous.size, current.last_arrival
                )
        if delta is not None or previous is None:
            self._previous = current
        self._current = _Group(send_time, send_time, arrival, arrival, size)
        return delta

    def _new_group(self, current: _Group, send_time: float, arrival: float) -> bool:
        if self._in_burst(current, send_time, arrival):
            return False
        return send_time - current.first_send > self.group_length

    def _in_burst(self, current: _Group, send_time: float, arrival: float) -> bool:
        arrival_delta = arrival - current.last_arrival
        send_delta = send_time - current.last_send
        if send_delta == 0:
            return True
        propagation = arrival_delta - send_delta
        return (
            propagation < 0
            and arrival_delta <= self.burst_delta
            and arrival - current.first_arrival < self.max_burst
        )
