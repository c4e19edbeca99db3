"""Loss from transport-cc feedback (as libwebrtc's loss-based controller, version 1).

Feedback reports each packet received or lost. Counts are gathered for ``interval``
(1 s, as libwebrtc's feedback-only mode) and at least ``min_packets`` packets, then
judged as one fraction (a 50 ms feedback of 20 packets at 5 % random loss shows more
than 10 % one time in thirteen; a second's 150 packets almost never do):

* above ``loss_high`` (10 %) in two batches in a row, or above twice that in one: the
  link drops what it cannot carry, the rate becomes ``sent x (1 - loss / 2)`` (what
  the reports say was sent), at most once per ``decrease_interval`` (random loss of
  5 % shows 10 % in a second now and then, hardly ever twice in a row);
* from ``loss_low`` (2 %) to ``loss_high``: hold (no increase, no probing): random loss
  of a few percent is the link's, not congestion, and decreasing on it would only
  starve the receiver;
* below ``loss_low``: the rate may increase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .packet import PacketResult

INCREASE = "increase"
HOLD = "hold"
DECREASE = "decrease"


class LossCounts(NamedTuple):
    """What the loss rule reads of a feedback's packets: how many, how many lost, their
    bytes, the first one's send time (in sequence order) and the latest send time."""

    packets: int
    lost: int
    bytes: int
    first_send: float
    last_send: float


def count_loss(
    results: Sequence[PacketResult], spans: Sequence[tuple[float, float]] = ()
) -> LossCounts | None:
    """``results`` as counts, leaving out those sent within a span ``[a, b)`` (a probe
    cluster's, whose loss its verdict judges); None when none is left."""
    count = lost = size = 0
    first = last = 0.0
    for r in results:
        if any(a <= r.send_time < b for a, b in spans):
            continue
        if count == 0:
            first = last = r.send_time
        count += 1
        size += r.size
        lost += r.arrival is None
        last = max(last, r.send_time)
    if count == 0:
        return None
    return LossCounts(count, lost, size, first, last)


@dataclass(frozen=True, slots=True)
class LossVerdict:
    """One judged batch: its fraction lost, what to do, the rate to go to (``decrease``
    only), and when its first packet was sent."""

    loss: float
    action: str
    rate: float | None = None
    since: float = 0.0


class LossBased:
    def __init__(
        self,
        loss_low: float = 0.02,
        loss_high: float = 0.10,
        min_packets: int = 20,
        interval: float = 1.0,
        decrease_interval: float = 0.5,
    ) -> None:
        self.loss_low = loss_low
        self.loss_high = loss_high
        self.min_packets = min_packets
        self.interval = interval
        self.decrease_interval = decrease_interval
        self._last_verdict: float | None = None
        #: the last fraction judged (0..1)
        self.loss = 0.0
        self._lost = 0
        self._count = 0
        self._bytes = 0
        self._first_send: float | None = None
        self._last_send = 0.0
        self._last_decrease: float | None = None

    def update(self, results: list[PacketResult], now: float) -> LossVerdict | None:
        """A feedback's packets; returns a verdict when enough packets were gathered."""
        counts = count_loss(results)
        if counts is not None:
            self.add(*counts)
        return self.judge(now)

    def add(self, count: int, lost: int, size: int, first_send: float, last_send: float) -> None:
        """A feedback's packets as counts (:class:`LossCounts`): ``count`` of ``size``
        bytes, ``lost`` of them, the first sent at ``first_send`` and the latest at
        ``last_send``."""
        self._count += count
        self._bytes += size
        self._lost += lost
        if self._first_send is None:
            self._first_send = first_send
        self._last_send = max(self._last_send, last_send)

    def judge(self, now: float) -> LossVerdict | None:
        """A verdict once ``interval`` has passed and enough packets were gathered."""
        if self._last_verdict is None:
            self._last_verdict = now
        if (
            self._count < self.min_packets
            or self._first_send is None
            or now - self._last_verdict < self.interval
        ):
            return None
        self._last_verdict = now
        loss = self._lost / self._count
        since = self._first_send
        span = max(0.05, self._last_send - since)
        sent = self._bytes * 8 / span
        self._lost = self._count = self._bytes = 0
        self._first_send = None
        previous, self.loss = self.loss, loss
        if loss > self.loss_high and (previous > self.loss_high or loss > 2 * self.loss_high):
            last = self._last_decrease
            if last is not None and now - last < self.decrease_interval:
                return LossVerdict(loss, HOLD, since=since)
            self._last_decrease = now
            return LossVerdict(loss, DECREASE, sent * (1 - loss / 2), since)
        if loss >= self.loss_low:
            return LossVerdict(loss, HOLD, since=since)  # (one batch above loss_high holds too)
        return LossVerdict(loss, INCREASE, since=since)
