"""A small simulator of one subscriber's path for the send-side estimator's tests.

The SFU sends video frames (``fps``, 30 unless told, 1200-byte packets, a frame leaves
as a burst) of the highest layer the estimate allows, and a probe's padding (in 20 ms
slices of 280-byte packets, as ``sfu/congestion.py``'s ``PROBE_TICK``); a probe may
start once a second, or when the controller looks at the previous one's result
(``probe_duration + settle`` after its start). The path is a token-bucket bottleneck
like ``tc tbf`` (``rate`` bit/s, ``burst`` bytes, packets that would wait
more than ``queue_limit`` s dropped) or unlimited, then ``delay`` s, then random loss.
The receiver's process wakes every 5-20 ms (sometimes stalling ``stall`` s) and
time-stamps everything that came meanwhile; every 50-100 ms it sends transport-cc
feedback (lost: a gap below the newest packet received), which reaches the SFU
``delay`` s later. The receiver's clock is 1000 s ahead of the SFU's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sfu.gcc.estimator import PathFactory, SendSideEstimator, TrendlineFactory
from sfu.gcc.feedback_path import PyFeedbackPath
from sfu.gcc.packet import PacketResult
from sfu.gcc.trendline import TrendlineDetector

LAYERS = (150_000.0, 500_000.0, 1_700_000.0)
RECEIVER_CLOCK = 1000.0


@dataclass
class Link:
    """The bottleneck at a moment: ``rate`` None is unlimited."""

    rate: float | None = None
    burst: int = 15_000
    queue_limit: float = 0.15
    loss: float = 0.0


@dataclass
class Receiver:
    jitter: tuple[float, float] = (0.005, 0.005)
    #: chance per wake-up of a stall, and its length range
    stall_chance: float = 0.0
    stall: tuple[float, float] = (0.1, 0.3)


@dataclass
class Trace:
    times: list[float] = field(default_factory=list)
    estimates: list[float | None] = field(default_factory=list)
    acked: list[float | None] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    states: list[str] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[int]:
        return [i for i, t in enumerate(self.times) if start <= t < end]


class Simulation:
    def __init__(
        self,
        link: Callable[[float], Link],
        receiver: Receiver | None = None,
        seed: int = 1,
        delay: float = 0.02,
        layers: tuple[float, ...] = LAYERS,
        path: PathFactory = PyFeedbackPath,
        trendline: TrendlineFactory = TrendlineDetector,
        fps: float = 30.0,
    ) -> None:
        self.link = link
        self.fps = fps
        self.receiver = receiver or Receiver()
        self.rng = random.Random(seed)
        self.delay = delay
        self.layers = layers
        self.bwe = SendSideEstimator(path=path, trendline=trendline)
        self.trace = Trace()
        self._seq = 0
        self._tokens = 15_000.0
        self._token_time = 0.0
        self._last_departure = 0.0
        #: (seq, send_time, size, arrival at the receiver's socket) of what was not dropped
        self._in_flight: list[tuple[int, float, int, float]] = []
        #: received by the process (seq -> stamped arrival), not yet fed back
        self._stamped: dict[int, float] = {}
        self._sent_info: dict[int, tuple[float, int]] = {}
        self._next_report_seq = 0
        #: feedback on its way back: (arrival at the SFU, results)
        self._feedback: list[tuple[float, list[PacketResult]]] = []
        self._sent_bytes = 0
        self.packets_sent = 0
        self.padding_sent = 0

    # ------------------------------------------------------------ the path

    def _send(self, now: float, size: int) -> None:
        seq = self._seq
        self._seq += 1
        self._sent_bytes += size
        self.packets_sent += 1
        self._sent_info[seq] = (now, size)
        link = self.link(now)
        departure: float | None = now
        if link.rate is not None:
            start = max(now, self._last_departure)
            tokens = min(link.burst, self._tokens + (start - self._token_time) * link.rate / 8)
            depart = start if tokens >= size else start + (size - tokens) * 8 / link.rate
            if depart - now > link.queue_limit:
                departure = None
            else:
                self._tokens = tokens - size if tokens >= size else 0.0
                self._token_time = depart
                self._last_departure = depart
                departure = depart
        if departure is not None and self.rng.random() < link.loss:
            departure = None
        if departure is not None:
            self._in_flight.append((seq, now, size, departure + self.delay))

    def _wake(self, now: float) -> None:
        """The receiver's process reads its socket: everything that came is stamped."""
        keep = []
        for item in self._in_flight:
            if item[3] <= now:
                self._stamped[item[0]] = now + RECEIVER_CLOCK
            else:
                keep.append(item)
        self._in_flight = keep

    def _report(self, now: float) -> None:
        if not self._stamped:
            return
        highest = max(self._stamped)
        results = []
        for seq in range(self._next_report_seq, highest + 1):
            send_time, size = self._sent_info.pop(seq)
            results.append(PacketResult(seq, send_time, size, self._stamped.pop(seq, None)))
        self._next_report_seq = highest + 1
        self._feedback.append((now + self.delay, results))

    # ------------------------------------------------------------ the run

    def run(self, start: float, end: float) -> Trace:
        rng = self.rng
        step = 0.001
        steps = round((end - start) / step)
        next_frame = next_slice = next_sent = next_probe = start
        next_wake = start + 0.005
        next_report = start + 0.05
        sent_mark = self._sent_bytes
        for i in range(steps):
            now = start + i * step
            bwe = self.bwe
            if now >= next_frame:
                next_frame += 1 / self.fps
                budget = bwe.estimate(now)
                rates = [r for r in self.layers if budget is None or r <= budget]
                rate = rates[-1] if rates else self.layers[0]
                frame = rate / self.fps / 8
                for _ in range(max(1, math.ceil(frame / 1200))):
                    self._send(now, min(1200, max(100, int(frame))))
                    frame -= 1200
            if now >= next_slice:
                next_slice += 0.02
                budget = bwe.estimate(now)
                wanted = budget is not None and budget < 1.5 * self.layers[-1]
                padding = bwe.probe_rate(now)
                # as sfu/subscribe_side.py: a probe may start once a second, and when
                # the previous one's result is looked at
                if padding <= 0 and now >= next_probe:
                    next_probe = now + 1.0
                    if bwe.start_probe(now, wanted) is not None:
                        padding = bwe.probe_rate(now)
                        st = bwe.settings
                        next_probe = now + st.probe_duration + st.settle + 0.01
                count = math.ceil(padding * 0.02 / 8 / 280)
                for _ in range(count):
                    self._send(now, 280)
                self.padding_sent += count
            if now >= next_wake:
                r = self.receiver
                pause = rng.uniform(*r.jitter)
                if rng.random() < r.stall_chance:
                    pause = rng.uniform(*r.stall)
                next_wake = now + pause
                self._wake(now)
                if now >= next_report:
                    next_report = now + rng.uniform(0.05, 0.1)
                    self._report(now)
            while self._feedback and self._feedback[0][0] <= now:
                _, results = self._feedback.pop(0)
                bwe.on_feedback(results, now)
            if now >= next_sent:
                next_sent += 1.0
                if now > start:
                    bwe.on_sent((self._sent_bytes - sent_mark) * 8 / 1.0, now)
                sent_mark = self._sent_bytes
            if i % 50 == 0:
                t = self.trace
                t.times.append(now)
                t.estimates.append(bwe.estimate(now))
                t.acked.append(bwe.acknowledged_rate(now))
                t.sent.append(bwe.sent)
                t.states.append(bwe.delay_state)
        return self.trace
