"""Per-subscriber bandwidth estimation for layer allocation (pure, time passed in).

What a subscriber can take is judged from what its receiver reports on the SFU's
sending leg, and confirmed by probing:

* **REMB** (the receiver's delay-based estimate). A receiver derives it from what it
  receives: about 1x at first, growing about 8 %/s up to 1.5x while all is well, and
  cut to 0.85x when queues build up on the path (overuse). So REMB is read as a
  congestion *signal*: a REMB that drops (by more than ``remb_drop``) to below
  ``remb_limiting`` x what is sent, and drops again at least ``remb_confirm`` seconds
  later, caps the estimate at that REMB; any drop during a
  probe fails the probe. A REMB far below what is sent right after a switch up, with
  no drop, only means it has not caught up.
* **The acknowledged rate** (``sfu/delivery_rate.py``: what the receiver's own
  receiver reports show it got, in bit/s, the fraction its link lost, and the share of
  what was sent that it acknowledged) decides whether a REMB drop is believed, as
  libwebrtc's ``goog_cc`` bounds its delay-based decrease by the acknowledged bitrate.
  While the link **keeps up** (at most ``loss_low`` lost, at least ``keep_up`` of what
  was sent acknowledged over the last seconds: no queue is building), a REMB drop is
  not believed: it neither caps, nor confirms a drop, nor fails a probe, and a REMB
  below ``acked_trust`` x the acknowledged rate is not passed on to publishers. (An
  aiortc receiver's estimate, fed by arrival times taken in a busy process, falls to
  30 kbit/s while it receives 1 Mbit/s without loss; a receiver whose process stalls
  reports one too.) When the link does not keep up, a REMB drop caps as below, but
  never under ``acked_trust`` x the acknowledged rate: on a link that really carries
  less, that rate falls with it. And while the link keeps up, a cap below
  ``acked_trust`` x the acknowledged rate rises to it. Before anything is measured (no
  receiver reports yet), REMB is read as below; once the reports have been measured, a
  REMB that comes while they have stopped (stale: the receiver's process is starved)
  is not believed either.
* **Loss** in receiver reports (RFC 3550 fraction lost, for the video SSRCs), as in
  libwebrtc's loss-based controller: above ``loss_high`` (10 %) in two reports in a
  row, or above twice that in one, the cap becomes ``sent x (1 - loss / 2)``; between
  ``loss_low`` and ``loss_high`` it holds.
* **Queue overflow** (``sfu/pacer.py``): the pacer's queue over budget, or the
  socket refusing a packet, means the link takes less than is sent: the cap becomes
  ``overflow_backoff`` x what is sent (at most once per ``decrease_interval``).
* **Probing.** A capped subscriber whose allocation wants more is probed once the link
  has been calm for ``hold`` seconds (doubled after each failed probe, up to 4x): the
  SFU sends padding on top of the media for ``probe_duration`` seconds so that the link
  carries the cap plus ``probe_step`` x the cap (halved after each failed probe; the
  step at least ``min_probe``, at most ``max_probe``). The probe succeeds
  only when the receiver shows its packets arrived (``sfu/probe.py``: a REMB that rose
  to about the probed rate, or receiver reports of the RTX stream showing the padding
  received); then the cap becomes the probed rate. A congestion signal fails it, and
  so does silence: no proof within ``probe_wait`` seconds of its end. Small steps keep
  a failed probe inside the bottleneck's queue, so a probe into a link that cannot take
  it costs delay, not audio. Above ``max_bitrate`` the cap is lifted.

``estimate(now)`` is the cap in bit/s for the subscriber's video, or None when nothing
says the link is limited.
"""

from __future__ import annotations

from dataclasses import dataclass

from .delivery_rate import Delivery, DeliveryRate, DeliverySettings
from .probe import Probe, ProbeSettings, RtxMark


@dataclass(frozen=True, slots=True)
class BweSettings:
    remb_drop: float = 0.05
    #: a REMB drop counts when another follows at least ``remb_confirm`` s after it
    #: (within ``remb_confirm_window`` s)
    remb_confirm: float = 0.2
    remb_confirm_window: float = 2.0
    remb_limiting: float = 0.9
    loss_low: float = 0.02
    loss_high: float = 0.10
    #: seconds without a congestion signal before probing (doubled after a failed
    #: probe, at most ``max_backoff`` times)
    hold: float = 1.0
    max_backoff: int = 1
    probe_step: float = 1.0
    #: after this many successful probes in a row, each probe is ``probe_growth`` times
    #: larger: a link that keeps taking more is probably free (a link that was lifted)
    probe_streak: int = 2
    probe_growth: float = 2.0
    min_probe: float = 60_000.0
    max_probe: float = 1_500_000.0
    probe_duration: float = 0.5
    settle: float = 0.5
    min_bitrate: float = 30_000.0
    overflow_backoff: float = 0.85
    max_bitrate: float = 20_000_000.0
    #: how recent (s) a loss-based decrease must be for the cap to pause video
    pause_evidence: float = 5.0
    #: ... or for how long (s) a cap must have stood
    remb_persist: float = 2.0
    #: at most one loss-based decrease per this many seconds (about one RR interval)
    decrease_interval: float = 0.9
    #: a REMB below this times the acknowledged rate is not believed while the receiver
    #: reports no loss, and no REMB caps below it (``sfu/delivery_rate.py``)
    acked_trust: float = 0.85
    #: a link keeps up when its receiver acknowledges at least this share of what was
    #: sent (over the delivery window) and loses at most ``loss_low``
    keep_up: float = 0.8
    #: ... and at least this share over the newest report interval alone (a link that
    #: has just narrowed: the longer window still holds the time before). Lower than
    #: ``keep_up``: a receiver whose report came late (its process stalled) shows about
    #: 0.75 there, a 300 kbit/s link under 1.5 Mbit/s about 0.2
    keep_up_recent: float = 0.5
    #: a probe with no proof that it arrived this long (s) after its end has failed
    #: (aiortc sends receiver reports 0.5-1.5 s apart, and REMB once a second)
    probe_wait: float = 1.6
    #: for this long (s) after a successful probe, no REMB caps below ``acked_trust`` x
    #: its rate
    proven_for: float = 4.0
    #: a probe is stretched by at most this factor to reach the allocation's next step
    aim_stretch: float = 1.5
    probes: ProbeSettings = ProbeSettings()


#: seconds without video after a layer that overflowed the link is cut (``cut_hold``):
#: about what a full 300 kbit/s bottleneck queue must drain to take the new layer's
#: keyframe whole
CUT_HOLD = 0.15


class BandwidthEstimator:
    def __init__(
        self, settings: BweSettings | None = None, delivery: DeliverySettings | None = None
    ) -> None:
        self.settings = settings or BweSettings()
        self.cap: float | None = None
        self.sent = 0.0
        self.remb: float | None = None
        self.loss = 0.0
        self.last_signal: float | None = None
        self.probe: Probe | None = None
        self.failed_probes = 0
        self.probes_ok = 0
        #: successful probes since the last failure or decrease
        self.ok_streak = 0
        self._last_decrease = -1e9
        self._last_loss_decrease = -1e9
        self._remb_drop_at: float | None = None
        #: since when a cap has stood (without being lifted)
        self._capped_since: float | None = None
        #: (time, what, cap) of every change of the cap, newest last (bounded)
        self.events: list[tuple[float, str, float | None]] = []
        #: what the receiver's reports acknowledge (``on_report``)
        self.delivery = DeliveryRate(delivery)
        #: REMB drops not believed (the link kept up: ``link_keeps_up``)
        self.rembs_ignored = 0
        #: what was sent besides probe padding (bit/s, as of the last ``on_sent``)
        self.media = 0.0
        self._padding_bits = 0.0
        self._sent_at: float | None = None
        #: the newest report block of each RTX stream (``on_rtx_report``)
        self._rtx: dict[int, RtxMark] = {}
        #: padding packets sent not yet seen in an RTX report, and their size
        self._pads = 0
        self._pad_size = 0
        #: probes that failed for want of proof (nothing showed their packets arrived)
        self.probes_unproven = 0
        #: (when, bit/s) of the last successful probe: the link carried that much
        self._proven: tuple[float, float] | None = None
        #: until then, heavy loss is blamed on the last probe (it fails, the cap holds)
        self._probe_blame_until = -1e9

    # ------------------------------------------------------------------ signals

    def on_sent(self, bitrate: float, now: float) -> None:
        """What the SFU sent this subscriber's video (and probe padding), bit/s, about
        once a second."""
        self.sent = bitrate
        last, self._sent_at = self._sent_at, now
        padding, self._padding_bits = self._padding_bits, 0.0
        if last is not None and now > last:
            self.media = max(0.0, bitrate - padding / (now - last))
        else:
            self.media = bitrate
        self._settle(now)

    def on_padding(self, size: int) -> None:
        """A probe's padding packet of ``size`` bytes went out."""
        self._padding_bits += size * 8
        self._pads += 1
        self._pad_size = size
        if self.probe is not None:
            self.probe.packets += 1

    def on_rtx_report(self, stream: int, now: float, *, highest: int, cumulative_lost: int) -> None:
        """A receiver report block of one of the subscriber's RTX streams (where probe
        padding travels): it may show a probe's packets arrived, or were lost."""
        mark = RtxMark(highest, cumulative_lost, now)
        previous = self._rtx.get(stream)
        self._rtx[stream] = mark
        # what arrived on it counts in the acknowledged rate: padding (sent since the
        # last RTX report) first, retransmissions at the media streams' packet size
        received = 0.0
        if previous is not None and 0 <= mark.highest - previous.highest < 0x8000:
            count = mark.highest - previous.highest - max(0, mark.lost - previous.lost)
            pads = min(max(0, count), self._pads)
            received = pads * self._pad_size + max(0, count - pads) * self.delivery.packet_size()
            self._pads -= pads
        self.delivery.on_repair(stream, now, received)
        probe = self.probe
        if probe is not None and probe.on_rtx_report(stream, mark, self.settings.probes) is False:
            self._signal(now)

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
        """A receiver report block of one of the subscriber's video streams, with what
        the SFU has sent on it (``DeliveryRate.on_report``). While the link keeps up, a
        cap below ``acked_trust`` x the acknowledged rate rises to it."""
        self.delivery.on_report(
            stream, now, highest=highest, cumulative_lost=cumulative_lost,
            packets_sent=packets_sent, bytes_sent=bytes_sent, not_sent=not_sent,
        )  # fmt: skip
        measured = self.delivery.measure(now)
        if measured is None or self.cap is None or not self._keeps_up(measured):
            return
        floor = self.settings.acked_trust * measured.rate
        if floor > self.cap:
            self.cap = floor
            self.events.append((now, "acked", self.cap))
            del self.events[:-32]

    def acked(self, now: float) -> Delivery | None:
        """What the receiver acknowledged receiving (bit/s, loss, share of what was
        sent), or None before it is measured or while its reports are stale."""
        return self.delivery.measure(now)

    def link_keeps_up(self, now: float) -> bool:
        """Whether the receiver's own reports show its link taking everything sent to it:
        no more than ``loss_low`` lost and at least ``keep_up`` of what was sent
        acknowledged (``Delivery.acked_share``). False before anything is measured, and
        while no video is sent (paused video says nothing about the link: a probe's
        padding alone must not look like a link that keeps up)."""
        return self._keeps_up(self.delivery.measure(now))

    def _keeps_up(self, measured: Delivery | None) -> bool:
        s = self.settings
        return (
            measured is not None
            and measured.loss <= s.loss_low
            and measured.acked_share is not None
            and measured.acked_share >= s.keep_up
            and not self._narrowing(measured)
        )

    def _narrowing(self, measured: Delivery) -> bool:
        """The link has just narrowed: its newest report interval acknowledged far less
        than was sent."""
        share = measured.recent_share
        return share is not None and share < self.settings.keep_up_recent

    def on_remb(self, bitrate: float, now: float) -> bool:
        """A REMB from the receiver. A drop is not believed while its link keeps up
        (``link_keeps_up``); one that is caps no lower than ``acked_trust`` x the
        acknowledged rate. Returns whether the value may be passed on to publishers:
        unless it is below ``acked_trust`` x the acknowledged rate while the link keeps
        up."""
        s = self.settings
        measured = self.delivery.measure(now)
        # reports measured before that have stopped (every stream stale): the receiver
        # is silent or behind, which is no evidence of congestion on the path either
        silent = measured is None and self.delivery.measured
        keeps_up = silent or self._keeps_up(measured)
        plausible = not keeps_up or (
            measured is not None and bitrate >= s.acked_trust * measured.rate
        )
        previous = self.remb
        self.remb = bitrate
        if self.probe is not None:
            self.probe.on_remb(bitrate, now, s.probes)
        if previous is None or bitrate >= (1 - s.remb_drop) * previous:
            return plausible
        if keeps_up:
            self.rembs_ignored += 1
            return plausible
        narrow = False
        if measured is not None:
            # a queue builds or packets are lost: a cap no lower than what the link
            # was measured to carry; while it loses many packets, what it carried over
            # the newest report interval (the window's rate still holds the time before
            # the link narrowed)
            carried = measured.rate
            narrow = measured.loss > s.loss_high or self._narrowing(measured)
            if narrow and measured.recent_rate is not None:
                carried = min(carried, measured.recent_rate)
            bitrate = max(bitrate, s.acked_trust * carried)
        proven = self._proven
        if proven is not None and now - proven[0] <= s.proven_for and not narrow:
            # (not once the reports show the link narrowing since: a probe that passed
            # a moment before a link narrowed says nothing of the link now)
            # a probe showed the link carrying this much a moment ago: a measured
            # delivery rate too (aiortc's estimator collapses after a probe's burst)
            bitrate = max(bitrate, s.acked_trust * proven[1])
        if bitrate < s.remb_limiting * self.sent:
            # confirmed by a second drop a little later: a receiver whose process
            # stalled for a moment reports one dip, a congested path keeps dropping
            first = self._remb_drop_at
            if first is not None and now - first >= s.remb_confirm:
                self._decrease(bitrate, now, "remb")
            elif first is None or now - first > s.remb_confirm_window:
                self._remb_drop_at = now
        elif self.probe is not None:
            self._signal(now)  # the receiver saw queues build up during a probe
        return plausible

    def on_loss(self, fraction: float, now: float) -> None:
        """Fraction lost (0..1) from a receiver report block of a video stream."""
        s = self.settings
        previous, self.loss = self.loss, fraction
        # one report of a few dozen packets is noisy: act on two in a row above
        # ``loss_high``, or one far above it (random loss of 5 % often shows 10 % once)
        if fraction > s.loss_high and (previous > s.loss_high or fraction > 2 * s.loss_high):
            if now < self._probe_blame_until:
                # a probe's padding overfilled the link: the probe fails and the cap
                # stays what it was before it. Reports up to ``probe_wait`` after the
                # probe's end may still describe it: the loss is the probe's, not a
                # narrower link's (if the link did narrow, the reports after say so).
                # Taking what the overfilled interval carried as the link's rate paused
                # `q` on a 300 kbit/s link that carried it (tests/integration/test_congestion.py)
                self._signal(now)
                return
            # (a stream that has just been paused still reports its last losses)
            if now - self._last_decrease >= s.decrease_interval and self.sent > s.min_bitrate:
                self._last_loss_decrease = now
                value = self.sent * (1 - fraction / 2)
                measured = self.delivery.measure(now)
                if measured is not None and measured.recent_rate is not None:
                    # a link that has just narrowed loses most of what is sent: what
                    # it carried over the newest report interval is nearer the truth
                    # than half the loss (1.7 Mbit/s into 300 kbit/s would keep `h`)
                    if self._narrowing(measured):
                        value = min(value, s.acked_trust * measured.recent_rate)
                self._decrease(value, now, "loss")
        elif fraction >= s.loss_low:
            self._signal(now)  # hold: no probing while losing a little

    def hold(self, now: float) -> None:
        """Loss seen in a report that may not lower the cap (just after a switch, it
        still counts the stream left behind): no probing on it, and a probe fails."""
        self._signal(now)

    def on_overflow(self, now: float) -> bool:
        """The pacer's queue (or the socket) is full; returns whether the cap dropped."""
        s = self.settings
        if now - self._last_decrease < s.decrease_interval or self.sent <= s.min_bitrate:
            return False
        self._last_loss_decrease = now  # frames are being lost: pausing may be needed
        self._decrease(self.sent * s.overflow_backoff, now, "overflow")
        return True

    def _signal(self, now: float) -> None:
        self.last_signal = now
        self.ok_streak = 0
        if self.probe is not None:
            self.probe = None
            self.failed_probes += 1
            self.events.append((now, "probe failed", self.cap))
            del self.events[:-32]

    def _decrease(self, value: float, now: float, reason: str) -> None:
        s = self.settings
        value = max(s.min_bitrate, value)
        if self.cap is None:
            self._capped_since = now
        self.cap = value if self.cap is None else min(self.cap, value)
        self._last_decrease = now
        self._signal(now)
        self.events.append((now, reason, self.cap))
        del self.events[:-32]

    # ------------------------------------------------------------------ probing

    def _settle(self, now: float) -> None:
        s = self.settings
        probe = self.probe
        if probe is None or now < probe.end + s.settle:
            return
        if probe.proof is None:
            if now >= probe.end + max(s.settle, s.probe_wait):
                self.probes_unproven += 1  # silence is not success
                self._signal(now)
            return
        self.probe = None
        self._probe_blame_until = now  # it arrived: loss from now on is the link's
        self.failed_probes = 0
        self.probes_ok += 1
        self.ok_streak += 1
        if self.cap is not None:
            self.cap = max(self.cap, probe.target)
            if self.cap > s.max_bitrate:
                self.cap = None
                self._capped_since = None
        self._proven = (now, probe.target)
        self.events.append((now, f"probe ok ({probe.proof})", self.cap))
        del self.events[:-32]

    def start_probe(self, now: float, wanted: bool, aim: float | None = None) -> float | None:
        """Start a probe if one is due: returns its padding rate (bit/s), else None.

        ``wanted``: the allocation is held back by the cap (else probing is pointless).
        ``aim``: what the allocation's next step needs (bit/s): a probe that would stop
        short of it by no more than ``aim_stretch`` goes that far (a step just out of
        reach, such as resuming ``q`` from a cap a little under it, is tried at once,
        not after another probe's wait).
        """
        s = self.settings
        self._settle(now)
        if self.cap is None or not wanted or self.probe is not None:
            return None
        wait = s.hold * 2 ** min(self.failed_probes, s.max_backoff)
        if self.last_signal is not None and now - self.last_signal < wait:
            return None
        # after failures, smaller steps: the link is near its limit; after a run of
        # successes, larger ones
        step = s.probe_step / 2 ** min(self.failed_probes, 3)
        if self.ok_streak >= s.probe_streak:
            step *= s.probe_growth
        # padding on top of what is sent, so that the link carries cap + step x cap
        target = self.cap + min(s.max_probe, max(s.min_probe, self.cap * step))
        if aim is not None and target < aim <= s.aim_stretch * target:
            target = aim
        # (the step is at most ``max_probe``; the padding may be more when little else is
        # sent: it is the whole of a probe of paused video)
        rate = min(s.max_probe + self.cap, max(s.min_probe, target - self.media))
        baseline = {k: m for k, m in self._rtx.items() if now - m.at < 10.0}
        self.probe = Probe(now, rate, self.media + rate, s.probe_duration, baseline)
        self._probe_blame_until = self.probe.end + s.probe_wait
        return rate

    def probe_rate(self, now: float) -> float:
        """Padding bit/s to send now (0 when no probe is sending)."""
        probe = self.probe
        if probe is None or not probe.sending(now, self.settings.probe_duration):
            return 0.0
        return probe.rate

    def cut_hold(self, now: float) -> float:
        """Receiver reports are too coarse to tell how full the bottleneck is: the
        link may be losing, so a cut layer leaves it ``CUT_HOLD`` s (``Pacer.hold``)."""
        return CUT_HOLD

    def congested(self, now: float, within: float = 5.0) -> bool:
        """Whether a congestion signal lowered the cap within ``within`` seconds."""
        return now - self._last_decrease <= within

    def may_pause(self, now: float, lowest: float | None = None) -> bool:
        """Whether the cap may pause video altogether: when packets are actually lost (a
        loss-based decrease within ``pause_evidence`` seconds), or when the cap has come
        from REMB for ``remb_persist`` seconds. A short delay signal alone never takes
        the lowest layer away: on a loaded machine a receiver's delay estimate also
        reacts to its own scheduling. Never while the receiver's newest reports
        acknowledge at least ``keep_up`` of what was sent, and at least ``keep_up`` x
        ``lowest`` (what the lowest layers need, bit/s; what is sent may be a little
        under their measured rate): the link demonstrably carries them."""
        s = self.settings
        if lowest is not None and lowest > 0:
            measured = self.delivery.measure(now)
            if (
                measured is not None
                and measured.recent_rate is not None
                and measured.recent_rate >= s.keep_up * lowest
                and measured.recent_share is not None
                and measured.recent_share >= s.keep_up
            ):
                return False
        if now - self._last_loss_decrease <= s.pause_evidence:
            return True
        since = self._capped_since
        return since is not None and now - since >= s.remb_persist

    def estimate(self, now: float) -> float | None:
        self._settle(now)
        return self.cap
