"""Sending one subscriber's bandwidth probes: padding in slices of ``PROBE_TICK`` while a
probe lasts, then a look at its result (``sfu/congestion.py`` decides; this sends).
"""

from __future__ import annotations

from collections.abc import Callable

from .congestion import PROBE_TICK, CongestionController
from .egress import Egress
from .forwarder import Forwarder
from .ports import Clock, Timer


class ProbeSender:
    """``carrier()`` names the forwarder whose RTX stream carries the padding (None:
    none can); ``before_probe(now)`` runs before a probe may start (the allocation is
    redone: a probe that just ended may have raised the estimate)."""

    def __init__(
        self,
        clock: Clock,
        congestion: CongestionController,
        egress: Egress,
        counters: dict[str, int],
        carrier: Callable[[], Forwarder | None],
        before_probe: Callable[[float], None],
    ) -> None:
        self._clock = clock
        self._congestion = congestion
        self._egress = egress
        self._counters = counters
        self._carrier = carrier
        self._before_probe = before_probe
        self._timer: Timer | None = None
        #: when the last slice of padding went out (None: the probe's first is next)
        self._last_slice: float | None = None
        self.closed = False

    def maybe_probe(self) -> None:
        """Start a bandwidth probe when the estimator wants one."""
        if self.closed or self._timer is not None:
            return
        now = self._clock.time()
        self._before_probe(now)
        if self._congestion.start_probe(now) is None:
            return
        self._counters["probes"] += 1
        self._last_slice = None
        self._tick()

    def _tick(self) -> None:
        """Send one slice of the probe's padding; re-arm until the probe is over."""
        self._timer = None
        if self.closed:
            return
        now = self._clock.time()
        last, self._last_slice = self._last_slice, now
        # with transport-cc a late slice makes up for its delay (the cluster is judged
        # by its rate); a REMB probe keeps its slices as they come, as before
        late = last is not None and self._congestion.transport_cc
        step = self._congestion.probe_step(now, now - last if late and last else PROBE_TICK)
        if step.padding <= 0:
            if step.result_at is not None:
                self._timer = self._clock.call_at(step.result_at, self._result)
            return
        carrier = self._carrier()
        if carrier is not None:
            budget = step.padding
            while budget > 0:
                packet = carrier.padding(255, now)
                if packet is None or not self._egress.send_rtp(packet):
                    break
                self._counters["padding_packets"] += 1
                self._congestion.padding_sent(len(packet))
                budget -= len(packet)
        self._timer = self._clock.call_later(PROBE_TICK, self._tick)

    def _result(self) -> None:
        self._timer = None
        self.maybe_probe()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
