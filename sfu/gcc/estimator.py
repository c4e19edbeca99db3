"""``SendSideEstimator``: what a subscriber's link takes, from its transport-cc feedback.

It has the interface of ``sfu/bwe.py``'s ``BandwidthEstimator`` (the congestion
controller uses either), fed mainly by ``on_feedback``. Its parts:

* delay-based: send-time groups (``inter_arrival``), their delay trend against an
  adaptive threshold (``trendline``), AIMD rate control (``aimd``). An overuse counts
  only while the receiver is acknowledging less than was sent (``confirm`` x the send
  rate): a queue that builds on the path always shows there, a receiver's process that
  stalled and then read its backlog at once does not;
* loss-based (``loss_based``), over one-second batches of feedback;
* acknowledged rate (``acknowledged``): no decrease goes below ``acked_floor`` x what
  the receiver was measured to receive;
* probes (``probe``), judged by what arrived, from the larger of the estimate and the
  acknowledged rate.

``estimate(now)`` is None until the first congestion signal, then bit/s for all the
subscriber's media, lifted to None again above ``max_bitrate``.

What each reported packet goes through (stalls, acknowledged rate, queue delay,
send-time groups, loss counts) is the per-packet part (``feedback_path``), and each
send-time group goes through the trendline: the SFU passes their C twins
(``sfu.native.FeedbackPath``, ``sfu.native.Trendline``), tests may use either; the
decisions here are made once per feedback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..delivery_rate import Delivery
from .aimd import AimdRateControl
from .feedback_path import FeedbackBatch, PyFeedbackPath
from .loss_based import DECREASE, INCREASE, LossBased
from .packet import PacketResult
from .probe import Probe
from .probing import Probing
from .settings import GccSettings
from .trendline import NORMAL, OVERUSING, UNDERUSING, TrendlineDetector, TrendlineSettings

#: makes the per-packet part: ``PyFeedbackPath`` or ``sfu.native.FeedbackPath`` (its
#: C twin), called with ``standing_queue`` and ``stall_hold``
PathFactory = Callable[..., PyFeedbackPath]
#: makes the trendline: ``TrendlineDetector`` or ``sfu.native.Trendline``
TrendlineFactory = Callable[[TrendlineSettings], TrendlineDetector]


class SendSideEstimator:
    def __init__(
        self,
        settings: GccSettings | None = None,
        path: PathFactory = PyFeedbackPath,
        trendline: TrendlineFactory = TrendlineDetector,
    ) -> None:
        s = self.settings = settings or GccSettings()
        self.sent = 0.0
        #: (time, what, cap) of every change of the cap, newest last (bounded)
        self.events: list[tuple[float, str, float | None]] = []
        self.last_signal: float | None = None
        self.rtt = 0.1
        #: the per-packet part: stalls, acknowledged rate, queue delay, send-time groups
        self._path = path(standing_queue=s.standing_queue, stall_hold=s.stall_hold)
        self._trend = trendline(s.trendline)
        self._aimd = AimdRateControl(s.aimd)
        self._loss = LossBased(s.loss_low, s.loss_high)
        self._loss_hold_until = -1e9
        self._last_decrease = -1e9
        #: what the path carried at the last decrease (bit/s): the link, near enough
        self._carried_at_decrease: float | None = None
        self._last_loss_decrease = -1e9
        self._last_overflow = -1e9
        self._last_rr_decrease = -1e9
        self._capped_since: float | None = None
        self._probing = Probing(s)
        #: when the newest feedback that reported a packet lost came
        self._lost_at = -1e9

    # ------------------------------------------------------------ state

    @property
    def probe(self) -> Probe | None:
        """The probe cluster being sent or judged (``.start``, ``.rate``: its padding,
        ``.target``, ``.duration``, ``.end``), or None."""
        return self._probing.probe

    @property
    def failed_probes(self) -> int:
        """Probes failed since the last success."""
        return self._probing.failed

    @property
    def probes_ok(self) -> int:
        return self._probing.ok

    @property
    def ok_streak(self) -> int:
        """Successful probes since the last failure, decrease or hold."""
        return self._probing.streak

    @property
    def last_probe_result(self) -> str | None:
        """Why the last probe ended ("ok", "loss", "queue", "saturated", "silence"...)."""
        return self._probing.last_result

    @property
    def cap(self) -> float | None:
        return self._aimd.value

    @property
    def loss(self) -> float:
        """The fraction lost in the last second of feedback (0..1)."""
        return self._loss.loss

    @property
    def delay_state(self) -> str:
        return self._trend.state

    def acknowledged_rate(self, now: float) -> float | None:
        return self._path.acked_rate(now)

    def acked(self, now: float) -> Delivery | None:
        rate = self._path.acked_rate(now)
        if rate is None:
            return None
        sent = self._path.sent_rate(now)
        return Delivery(rate, self._loss.loss, rate / sent if sent else None)

    def link_keeps_up(self, now: float) -> bool:
        rate, sent = self._path.acked_rate(now), self._path.sent_rate(now)
        return (
            rate is not None
            and sent is not None
            and sent > 0
            and self._loss.loss <= self.settings.loss_low
            and self.delay_state != OVERUSING
            and rate >= self.settings.keep_up * sent
        )

    # ------------------------------------------------------------ feedback

    def on_feedback(self, results: Sequence[PacketResult], now: float) -> None:
        """One transport-cc feedback's packets, in sequence order (the main input). A
        packet reported again (a repeated or reordered feedback) counts once: only
        sequence numbers above the highest seen are read."""
        # a failed probe's own loss (and the queue it left) is the probe's, not the
        # link's: the path counts loss outside the probes' spans only
        batch: FeedbackBatch | None = self._path.update(results, now, self._probing.spans)
        if batch is None:
            return
        new, lost, newest, deltas, outside, _ = batch
        if lost:
            self._lost_at = now
        s = self.settings
        self.rtt = 0.9 * self.rtt + 0.1 * min(1.0, max(0.01, now - newest))
        self._probing.collect(new)
        if self._probing.probe is not None and not self._receiver_delay(now):
            queued = self._path.queue_delay(now)
            if queued is not None and queued >= s.probe_queue:
                self._end_probe(now, "queue")
        if deltas:
            self._trend.update_all(deltas)
        acked = self._carried(now)
        sent = self._path.sent_rate(now)
        if outside is not None:
            self._loss.add(*outside)
        verdict = self._loss.judge(now)
        if verdict is not None and verdict.action != INCREASE:
            self._loss_hold_until = now + 1.0
        if verdict is not None and verdict.action == DECREASE and verdict.rate is not None:
            # (unless the estimate came down while the batch was being sent: its loss is
            # that of the rate before)
            if self._last_decrease < verdict.since:
                self._decrease(verdict.rate, now, "loss", evidence=True)
            else:
                self._last_loss_decrease = now  # still evidence that packets are lost
        state = self.delay_state
        if state != OVERUSING and self._queued(now):
            # a queue already stands (a burst sent at once forms one send group, whose
            # delay the trendline sees only once all of it has crossed the bottleneck)
            state = OVERUSING
        if (
            state == OVERUSING
            and newest <= self._last_decrease
            and not self._path.stall_holding(now)
            and acked is not None
            and self._answered_too_high(acked)
        ):
            # the queue still reports packets sent before the last decrease, but what
            # the bottleneck delivers lately is far under the estimate that decrease
            # set (it used a rate measured before the link narrowed): answer again now,
            # not once packets sent after it have crossed the queue (0.5 s behind a
            # deep one, with the old layer still flooding it)
            self._decrease(
                max(s.beta * acked, self._probing.floor(now)), now, "delay", evidence=False
            )
        if state == OVERUSING and (self._path.stall_holding(now) or newest <= self._last_decrease):
            # the receiver's own delay (it stalled), or a queue of packets all sent
            # before the last decrease, which answered them: hold (as the loss rule)
            state = UNDERUSING
        if state == OVERUSING:
            self._end_probe(now, "overuse")
            confirmed = acked is None or sent is None or acked < s.confirm * sent
            if not confirmed:
                state = UNDERUSING  # hold: no increase, no decrease
        elif state == NORMAL and (now < self._loss_hold_until or self.probe is not None):
            # losing 2-10 %, or probing (what a probe's padding gets acknowledged says
            # nothing until the cluster is judged): hold
            state = UNDERUSING
        previous = self.cap
        if self._aimd.update(state, acked, sent, now, self.rtt):
            value = self._aimd.value
            self._aimd.value = previous  # _decrease applies the floor and the event
            if value is not None:
                # (not far under where a failed probe started: its queue was judged)
                value = max(value, self._probing.floor(now))
                self._decrease(value, now, "delay", evidence=False)
        self._judge_probe(now)
        self._lift(now)

    # ------------------------------------------------------------ other signals

    def on_sent(self, bitrate: float, now: float) -> None:
        """Bit/s the SFU sent this subscriber (media and padding), about once a second."""
        self.sent = bitrate
        self._judge_probe(now)

    def on_report(
        self,
        stream: int,
        now: float,
        *,
        highest: int,
        cumulative_lost: int,
        packets_sent: int,
        bytes_sent: int,
        not_sent: int = 0,
    ) -> None:
        """Receiver-report blocks: transport-cc feedback says more, they are ignored."""

    def on_remb(self, bitrate: float, now: float) -> bool:
        """REMB: a transport-cc receiver sends none; ignored (and may be passed on)."""
        return True

    def on_loss(self, fraction: float, now: float) -> None:
        """Receiver-report loss: holds probing; lowers the cap (as ``sfu/bwe.py``) only
        while transport-cc feedback is stale (the loss rule reads the feedback)."""
        s = self.settings
        if fraction >= s.loss_low:
            self.hold(now)
        if self._path.acked_fresh(now) or fraction <= s.loss_high:
            return
        if now - self._last_rr_decrease >= 0.9 and self.sent > s.min_bitrate:
            self._last_rr_decrease = now
            self._decrease(self.sent * (1 - fraction / 2), now, "loss", evidence=True)

    def on_rtx_report(self, stream: int, now: float, *, highest: int, cumulative_lost: int) -> None:
        """RTX receiver-report blocks: transport-cc feedback says more; ignored."""

    def on_padding(self, size: int) -> None:
        """A probe's padding packet went out: its feedback judges the cluster; ignored."""

    def hold(self, now: float) -> None:
        """Loss that may not lower the cap: no probing for ``hold`` seconds."""
        self.last_signal = now
        self._probing.streak = 0

    def on_overflow(self, now: float) -> bool:
        """The SFU's own queue or socket overflowed: the cap becomes
        ``overflow_backoff`` x sent, at most once per ``overflow_interval``."""
        s = self.settings
        if now - self._last_overflow < s.overflow_interval or self.sent <= s.min_bitrate:
            return False
        self._last_overflow = now
        self._decrease(self.sent * s.overflow_backoff, now, "overflow", evidence=True)
        return True

    def _receiver_delay(self, now: float) -> bool:
        """Whether the delay the feedback shows now may be the receiver's own (it
        stalled, or a gap in its arrivals is being judged)."""
        return self._path.stall_holding(now) or self._path.stall_suspect()

    def _carried(self, now: float) -> float | None:
        """What the path carries: the acknowledged rate, or, behind a standing queue,
        what arrived lately if that is less (the bottleneck drains its queue at its
        capacity; the longer window still holds the time before the link narrowed)."""
        acked = self._path.acked_rate(now)
        if acked is None or not self._queued(now):
            return acked
        recent = self._path.recent_rate(now, self.settings.recent_window)
        return acked if recent is None else min(acked, recent)

    def _queued(self, now: float) -> bool:
        """A queue stands on the path, or one is building with the path delivering
        clearly, but not far, less than is sent (``onset_queue``, ``onset_share``,
        ``onset_floor``)."""
        path = self._path
        if path.queue_standing(now):
            return True
        s = self.settings
        queued = path.queue_delay(now)
        if queued is None or queued < s.onset_queue or self._receiver_delay(now):
            return False
        recent, sent = path.recent_rate(now, s.onset_window), path.sent_rate(now)
        if recent is None or sent is None:
            return False
        return s.onset_floor * sent <= recent < s.onset_share * sent

    def _answered_too_high(self, carried: float) -> bool:
        """The estimate is over ``requeue`` x what the path carries behind a standing
        queue (``_carried``: what arrived lately)."""
        cap = self.cap
        return cap is not None and cap > self.settings.requeue * carried

    def queue_delay(self, now: float) -> float | None:
        """Seconds the newest packets queued on the path (None: no fresh feedback)."""
        return self._path.queue_delay(now)

    def _decrease(self, value: float, now: float, reason: str, *, evidence: bool) -> None:
        s = self.settings
        acked = self._carried(now)
        if acked is not None:
            value = max(value, s.acked_floor * acked)
        value = max(s.min_bitrate, value)
        self._last_decrease = now
        self._probing.streak = 0
        if evidence:
            self._last_loss_decrease = now
        self._end_probe(now, reason)
        cap = self.cap
        if cap is not None and value >= cap:
            return
        if cap is None:
            self._capped_since = now
        self._carried_at_decrease = acked
        self._aimd.set(value, now)
        self._event(now, reason)

    def _event(self, now: float, what: str) -> None:
        self.events.append((now, what, self.cap))
        del self.events[:-32]

    def _lift(self, now: float) -> None:
        cap = self.cap
        if cap is not None and cap > self.settings.max_bitrate:
            self._aimd.value = None
            self._capped_since = None
            self._event(now, "lifted")

    # ------------------------------------------------------------ probing

    def start_probe(self, now: float, wanted: bool, aim: float | None = None) -> float | None:
        """Start a probe cluster if one is due; returns its padding bit/s (the cluster's
        rate minus what is being sent), else None. ``wanted``: the allocation is held
        back by the estimate; ``aim``: what its next step needs (bit/s): a cluster that
        would stop a little short of it goes up to it."""
        s = self.settings
        self._judge_probe(now)
        cap = self.cap
        if cap is None or not wanted or not self._probing.due(now):
            return None
        if self.delay_state == OVERUSING or now < self._loss_hold_until:
            return None
        if now - max(self.last_signal or -1e9, self._last_decrease) < s.hold:
            return None
        # what is sent now: the SFU's once-a-second count, or the newer rate the feedback
        # shows (lower after a switch down, or when the count still holds a probe)
        sent = min(self.sent, self._path.sent_rate(now) or self.sent)
        link = self._carried_at_decrease
        probe = self._probing.start(now, cap, self._path.acked_rate(now), sent, link)
        self._event(now, "probe")
        return probe.rate

    def probe_rate(self, now: float) -> float:
        """Padding bit/s to send now (0 when no cluster is being sent)."""
        return self._probing.rate(now)

    def _judge_probe(self, now: float) -> None:
        result = self._probing.judge(now)
        if result is None:
            return
        cap = self.cap
        if result.ok and result.rate is not None and cap is not None and result.rate > cap:
            self._aimd.set(result.rate, now)
        self._event(now, "probe ok" if result.ok else f"probe failed: {result.reason}")
        self._lift(now)

    def _end_probe(self, now: float, reason: str) -> None:
        """The pending probe fails (an overuse, a decrease)."""
        if self._probing.probe is not None:
            self._probing.done(now, False, reason)
            self._event(now, f"probe failed: {reason}")

    # ------------------------------------------------------------ decisions

    def cut_hold(self, now: float) -> float:
        """Seconds without video after a layer that overflowed the link is cut: the
        queue on the path (what the newest feedback shows, lengthened by what was sent
        since over what the path carries), less ``cut_hold_margin``, at most
        ``max_cut_hold``, and at least ``cut_hold`` while packets are lost (a full
        bottleneck drops what arrives, the new layer's keyframe too)."""
        s = self.settings
        queued = self._path.queue_delay(now) or 0.0
        # what went out after the newest packet reported joins that queue, which grows
        # by what is sent over what the path carries: at the onset the old layer's
        # packets already on their way make it several times what the feedback shows
        carried, sent, newest = (
            self._carried(now),
            self._path.sent_rate(now),
            self._path.newest_send(),
        )
        if carried and sent and newest is not None and sent > carried:
            queued += (now - newest) * (sent - carried) / carried
        hold = min(s.max_cut_hold, max(0.0, queued - s.cut_hold_margin))
        return max(hold, s.cut_hold) if self.losing(now) else hold

    def losing(self, now: float, within: float = 0.3) -> bool:
        """Whether feedback within ``within`` s reported a packet lost: a bottleneck
        whose queue is full drops what arrives."""
        return now - self._lost_at <= within

    def congested(self, now: float, within: float = 5.0) -> bool:
        """Whether a congestion signal lowered the estimate within ``within`` s, or a cap
        stands: a link known to be limited is not sent what receivers cannot repair twice
        (audio sent twice on a full link feeds the very loss it is meant to repair)."""
        return now - self._last_decrease <= within or self.cap is not None

    def may_pause(self, now: float, lowest: float | None = None) -> bool:
        """Whether the cap may pause video: a loss or overflow decrease within
        ``pause_evidence`` s, or a cap that has stood for ``cap_persist`` s."""
        s = self.settings
        if now - self._last_loss_decrease <= s.pause_evidence:
            return True
        since = self._capped_since
        return since is not None and now - since >= s.cap_persist

    def estimate(self, now: float) -> float | None:
        """Bit/s for all the subscriber's media, or None while nothing limits it."""
        self._judge_probe(now)
        return self.cap
