"""The per-packet part of the send-side estimator, as one object (pure, ``now`` passed in).

Every packet a transport-cc feedback reports goes through the same few windows before
the estimator decides anything: the receiver's stalls (``stall``), the acknowledged and
sent rates (``acknowledged``), the queuing delay (``queue_delay``), the send-time groups
(``inter_arrival``), and the loss count of the packets outside probe clusters. A
feedback reports 10-50 packets; this is the estimator's cost per packet, which the SFU
pays for every packet it sends a transport-cc subscriber.

:class:`PyFeedbackPath` does it with the modules above; ``sfu/_feedback.c``'s
``FeedbackPath`` (``sfu.native.FeedbackPath``) is the same in C, held to this one by
``tests/unit/test_feedback_path.py`` (same outputs, same answers to every query, over
random feedback). The estimator (``estimator.py``) keeps the decisions, per feedback.

``update(results, now, spans)`` takes one feedback's packets (sequence order); only
those above the highest sequence number seen count (a repeated or reordered feedback
counts once). It returns None when none is new, else a :class:`FeedbackBatch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .acknowledged import AcknowledgedRate
from .inter_arrival import InterArrival
from .loss_based import LossCounts, count_loss
from .packet import PacketResult
from .queue_delay import QueueDelay
from .stall import StallDetector

__all__ = ["FeedbackBatch", "PyFeedbackPath"]


class FeedbackBatch(NamedTuple):
    #: the new packets (above the highest sequence number seen before)
    results: list[PacketResult]
    #: how many of them were reported lost
    lost: int
    #: the latest send time among them
    newest_send: float
    #: (send_delta, arrival_delta, arrival) of every send-time group they completed
    deltas: list[tuple[float, float, float]]
    #: the new packets sent outside every probe span, for the loss rule (None when
    #: every one was sent within one)
    outside: LossCounts | None
    #: whether they completed a receiver's stall (``StallDetector.update``)
    stalled: bool


class PyFeedbackPath:
    def __init__(self, standing_queue: float = 0.08, stall_hold: float = 1.0) -> None:
        #: the highest sequence number reported so far (-1: none)
        self.highest = -1
        self._stall = StallDetector(hold=stall_hold)
        self._acked = AcknowledgedRate()
        self._queue = QueueDelay(standing_queue)
        self._inter = InterArrival()

    def update(
        self,
        results: Sequence[PacketResult],
        now: float,
        spans: Sequence[tuple[float, float]] = (),
    ) -> FeedbackBatch | None:
        """One feedback's packets, received at ``now``; ``spans``: the probe clusters'
        send-time spans ``[a, b)`` whose packets the loss rule does not count."""
        highest = self.highest
        new = [r for r in results if r.seq > highest]
        if not new:
            return None
        self.highest = max(r.seq for r in new)
        stalled = self._stall.update(new, now)
        self._acked.update(new, now)
        self._queue.update(new, now)
        deltas: list[tuple[float, float, float]] = []
        lost = 0
        for r in new:
            if r.arrival is None:
                lost += 1
                continue
            delta = self._inter.add(r.send_time, r.arrival, r.size)
            if delta is not None:
                deltas.append((delta.send_delta, delta.arrival_delta, delta.arrival))
        newest = max(r.send_time for r in new)
        return FeedbackBatch(new, lost, newest, deltas, count_loss(new, spans), stalled)

    # ------------------------------------------------------------ what was received

    def acked_rate(self, now: float) -> float | None:
        return self._acked.rate(now)

    def sent_rate(self, now: float) -> float | None:
        return self._acked.sent_rate(now)

    def recent_rate(self, now: float, window: float) -> float | None:
        return self._acked.recent_rate(now, window)

    def acked_fresh(self, now: float) -> bool:
        return self._acked.fresh(now)

    def newest_send(self) -> float | None:
        return self._acked.newest_send()

    # ------------------------------------------------------------ queue and stalls

    def queue_delay(self, now: float) -> float | None:
        return self._queue.delay(now)

    def queue_standing(self, now: float) -> bool:
        return self._queue.standing(now)

    def stall_holding(self, now: float) -> bool:
        return self._stall.holding(now)

    def stall_suspect(self) -> bool:
        return self._stall.suspect

    @property
    def stalls(self) -> int:
        return self._stall.stalls

    @property
    def group_resets(self) -> int:
        return self._inter.resets
