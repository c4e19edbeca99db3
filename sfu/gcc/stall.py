"""A receiver's process that stalled, as its transport-cc feedback shows it.

A receiver stopped for a while (its process starved, SIGSTOPped, a garbage collection)
time-stamps nothing meanwhile; when it runs again it reads the packets the kernel kept
and stamps them in a rush. The feedback then shows a gap of at least ``gap`` seconds in
arrivals followed by a bunch: the packets stamped within ``gap / 2`` after it were sent
over at least ``min_send_span`` seconds and more than ``compression`` times the span
they arrived in. A bottleneck never does that: its queue spreads arrivals out at its
rate, it does not hold packets back and release them together. Their one-way delays
(up to the stall's length) are the receiver's, not a queue on the path.

A receiver on a busy core may read its backlog no faster than it was sent, so there
may be no bunch. The gap says it still: a packet whose one-way delay exceeds that of
the packet before the gap by ``held`` (half) of the gap or more was sent during the gap
and arrived only after it. A first-in first-out bottleneck cannot do that either: its
output stops only when its queue is empty, and then the next packet crosses it at
once (an idle sender leaves gaps too, but then the next packet's delay has not grown).

The gap and the bunch may come in different feedback packets: the newest arrival is
kept between calls, and ``suspect`` says that a gap was seen and what follows it is not
judged yet (the first packets stamped after a stall look as late as a queue would make
them). ``holding(now)``: whether delay is the receiver's, not the path's: for ``hold``
seconds after a stall's bunch, and for at most ``judging`` seconds while the packets
after a gap are being judged.
"""

from __future__ import annotations

from .packet import PacketResult


class StallDetector:
    def __init__(
        self,
        gap: float = 0.08,
        compression: float = 2.0,
        min_packets: int = 3,
        min_send_span: float = 0.05,
        hold: float = 1.0,
        judging: float = 0.3,
        held: float = 0.5,
    ) -> None:
        self.gap = gap
        self.compression = compression
        self.min_packets = min_packets
        self.min_send_span = min_send_span
        self.hold = hold
        self.judging = judging
        #: a packet after a gap whose delay exceeds the one before the gap by this
        #: share of the gap was sent during it and held (``held`` in the module doc)
        self.held = held
        #: until when delay is not read as the path's (SFU clock): after a stall's
        #: bunch, and while the packets after a gap are judged (apart: a judgement of
        #: "no stall" ends the latter, never an earlier stall's hold)
        self._stall_until = -1e9
        self._judging_until = -1e9
        self._last_arrival: float | None = None
        #: the one-way delay (arrival - send) of the packet that arrived last
        self._last_delay = 0.0
        #: (send_time, arrival) of a bunch being gathered after a gap
        self._bunch: list[tuple[float, float]] = []
        self.stalls = 0

    @property
    def suspect(self) -> bool:
        """A gap was seen and the packets after it are not judged yet."""
        return bool(self._bunch)

    def holding(self, now: float) -> bool:
        """Whether the delay the feedback shows now is the receiver's own."""
        return now < max(self._stall_until, self._judging_until)

    def update(self, results: list[PacketResult], now: float) -> bool:
        """``results``: one feedback's packets in sequence order, received at ``now``;
        returns whether they complete a stall's bunch."""
        suspect = self.suspect
        found = self._scan(results)
        if found:
            self._stall_until = now + self.hold
            self._judging_until = -1e9
        elif self.suspect and not suspect:
            self._judging_until = now + self.judging  # a gap: being judged
        elif suspect and not self.suspect:
            self._judging_until = -1e9  # judged: no stall
        return found

    def _scan(self, results: list[PacketResult]) -> bool:
        found = False
        for r in results:
            arrival = r.arrival
            if arrival is None:
                continue
            last = self._last_arrival
            delay = arrival - r.send_time
            if last is not None and arrival - last >= self.gap:
                self._bunch = [(r.send_time, arrival)]
                if delay - self._last_delay >= self.held * (arrival - last):
                    # sent during the gap, arrived after it: held, not queued
                    self.stalls += 1
                    self._bunch = []
                    found = True
            elif self._bunch and arrival - self._bunch[0][1] <= self.gap / 2:
                self._bunch.append((r.send_time, arrival))
                found = self._judge() or found
            else:
                self._bunch = []
            if last is None or arrival >= last:
                self._last_arrival, self._last_delay = arrival, delay
        return found

    def _judge(self) -> bool:
        bunch = self._bunch
        if len(bunch) < self.min_packets:
            return False
        sends = [s for s, _ in bunch]
        send_span = max(sends) - min(sends)
        arrival_span = bunch[-1][1] - bunch[0][1]
        if send_span >= self.min_send_span and send_span > self.compression * arrival_span:
            self.stalls += 1
            self._bunch = []
            return True
        return False
