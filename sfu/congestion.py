"""One subscriber's congestion control (pure: time is passed in, decisions returned).

The controller turns what the subscriber's receiver reports on the SFU's sending leg
into decisions; the subscribe side (``sfu/subscribe_side.py``) feeds it and applies
them to the forwarders, the pacer and the probe timer:

* **estimate inputs**: receiver-report blocks (``on_report``), REMB (``on_remb``),
  refused sends and pacer overflows (``on_overflow``, ``measure``), what was sent
  (``measure``), fed to the estimator (``sfu/bwe.py``, on the acknowledged rate of
  ``sfu/delivery_rate.py``);
* **allocation**: which layer of each video track fits the estimate (``allocate``:
  ``sfu/layers.py`` does the arithmetic), and whether probing is worth it;
* **probing**: when a probe starts, the padding each slice sends, when its result is
  looked at (``start_probe``, ``probe_step``);
* **retransmission budget**: what NACK answers may spend (``rtx_budget``, ``rtx_spent``);
* **loss evidence**: which reported loss counts (not in the first ``LOSS_SETTLE``
  seconds after a switch), and when what receivers cannot repair is sent twice
  (``redundant``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .bwe import BandwidthEstimator
from .gcc.estimator import SendSideEstimator
from .gcc.packet import PacketResult
from .gcc.trendline import OVERUSING
from .layers import UP_MARGIN, allocate
from .native import FeedbackPath, Trendline
from .pacer import TokenBucket
from .ports import Estimator

#: A subscriber whose receiver reports more than this fraction lost (in 1/256) gets
#: what it cannot repair twice until it has reported no loss for REDUNDANCY_HOLD seconds.
LOSS_REDUNDANT = 2
REDUNDANCY_HOLD = 10.0
#: Transport-cc feedback shows loss within a few hundred ms, where receiver reports take
#: a second or more: over the last FEEDBACK_LOSS_SPAN seconds of feedback, at least
#: FEEDBACK_LOSS_PACKETS lost and a share between LOSS_REDUNDANT and FEEDBACK_LOSS_HIGH
#: (more is a link dropping what it cannot carry, not random loss), with no delay
#: signal and no cap, starts the redundancy too.
FEEDBACK_LOSS_SPAN = 1.0
FEEDBACK_LOSS_PACKETS = 2
FEEDBACK_LOSS_HIGH = 0.10
#: Retransmissions may use at most this share of the estimate (of what is sent, and at
#: least RTX_FLOOR bit/s, while there is no cap).
RTX_SHARE = 0.3
RTX_FLOOR = 1_000_000.0
#: Probing goes on until the estimate is this many times what the allocation sends.
PROBE_HEADROOM = 1.5
#: Receiver-report loss is ignored this long (s) after a forwarder switches or resumes.
LOSS_SETTLE = 2.0
#: A bandwidth probe's padding goes out in slices this far apart (s).
PROBE_TICK = 0.02
#: A late slice sends the padding of at most this long (s).
PROBE_SLICE_MAX = 0.06
#: With transport-cc the estimate covers everything sent: video gets it less the audio
#: measured (the estimate itself sits at about 0.85-0.95 x what the link carries, which
#: is the headroom that keeps audio from queueing behind video at the bottleneck).
#: A transport-cc estimate that moves by more than this share redoes the allocation.
REALLOCATE_CHANGE = 0.05


@dataclass(frozen=True, slots=True)
class Demand:
    """One video track the allocation may send: the expected bit/s of each layer it
    may choose (lowest first), the level it is at, and its priority."""

    bitrates: list[float]
    current: int | None
    priority: float


@dataclass(frozen=True, slots=True)
class Allocation:
    """The chosen level of each demand (-1: nothing), under ``budget`` (None: no cap).
    ``relax``: probes keep succeeding, the layer selectors may switch up sooner."""

    budget: float | None
    levels: list[int]
    relax: bool


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One receiver-report block on one of the subscriber's streams, with what the SFU
    knows of that stream."""

    ssrc: int
    #: RFC 3550 fraction lost, in 1/256
    fraction_lost: int
    highest: int
    cumulative_lost: int
    #: the media stream (False: its RTX stream)
    media: bool = True
    video: bool = True
    #: the fraction the subscriber's own link lost since the last block (None: unknown)
    link_loss: float | None = None
    #: the fraction lost upstream (publisher to SFU), as the SFU reported it
    upstream_loss: float = 0.0
    packets_sent: int = 0
    bytes_sent: int = 0
    not_sent: int = 0
    #: when the stream's current input started (a switch, a resume)
    switched_at: float | None = None


@dataclass(frozen=True, slots=True)
class Measurement:
    """``measure``'s decisions: sends refused since the last call, whether the
    redundancy stops, whether the allocation must be redone (the estimate dropped)."""

    refused: int
    redundancy_off: bool
    reallocate: bool


@dataclass(frozen=True, slots=True)
class ProbeStep:
    """One slice of a probe: bytes of padding to send now (0: the probe is over) and,
    once it is over, when to look at its result (None: nothing to look at)."""

    padding: float
    result_at: float | None = None


class CongestionController:
    def __init__(self, estimator: Estimator | None = None) -> None:
        #: what this subscriber's link takes: from its REMB and receiver reports, or with
        #: transport-cc (``use_transport_cc``) from its per-packet feedback
        self.bwe: Estimator = estimator or BandwidthEstimator()
        self.transport_cc = False
        #: bit/s of audio the SFU sends this subscriber, measured each second
        self.audio_bitrate = 0.0
        self._audio_mark: tuple[float, int] | None = None
        #: the budget the allocation last used (transport-cc: redo it when it moves)
        self._allocated_budget: float | None = None
        self.remb_bitrate: int | None = None
        #: bit/s of video the SFU sends this subscriber, measured each second
        self.egress_bitrate = 0.0
        self._egress_mark: tuple[float, int] | None = None
        #: refused sends already counted
        self._tx_errors_mark = 0
        #: the allocation is held back by the estimate (so probing is worth it)
        self.wants_more = False
        #: bit/s the allocation's next step up needs (None: nothing to step up to)
        self.next_step: float | None = None
        #: bytes of probe padding sent (counted as sent video)
        self.padding_bytes = 0
        #: bytes retransmissions may still use (``rtx_budget``)
        self._rtx_bucket = TokenBucket()
        #: when the receiver last reported loss worth redundancy
        self.lossy_at: float | None = None
        #: (when, packets, lost) of each transport-cc feedback in the last
        #: FEEDBACK_LOSS_SPAN seconds
        self._feedback_loss: deque[tuple[float, int, int]] = deque()

    # ------------------------------------------------------------ allocation

    def use_transport_cc(self) -> None:
        """The subscriber negotiated transport-cc: estimate from its per-packet feedback
        (``sfu/gcc/``) instead of REMB and receiver reports. Idempotent."""
        if not self.transport_cc:
            self.transport_cc = True
            # its per-packet part and its trendline in C
            self.bwe = SendSideEstimator(path=FeedbackPath, trendline=Trendline)

    def budget(self, now: float) -> float | None:
        """The bit/s the subscriber's video may use, or None when nothing limits it."""
        estimate = self.bwe.estimate(now)
        if estimate is None or not self.transport_cc:
            return estimate
        return max(0.0, estimate - self.audio_bitrate)

    def on_transport_feedback(self, results: list[PacketResult], now: float) -> bool:
        """Transport-cc feedback; returns whether the allocation must be redone (the
        budget moved by more than ``REALLOCATE_CHANGE``, or a cap came or went)."""
        if not self.transport_cc or not results:
            return False
        assert isinstance(self.bwe, SendSideEstimator)
        self.bwe.on_feedback(results, now)
        self._note_feedback_loss(results, now)
        before, after = self._allocated_budget, self.budget(now)
        if before is None or after is None:
            return before is not after
        return abs(after - before) > REALLOCATE_CHANGE * max(before, 1.0)

    def _note_feedback_loss(self, results: list[PacketResult], now: float) -> None:
        window = self._feedback_loss
        window.append((now, len(results), sum(1 for r in results if r.arrival is None)))
        while window and now - window[0][0] > FEEDBACK_LOSS_SPAN:
            window.popleft()

    def feedback_shows_random_loss(self, now: float) -> bool:
        """After transport-cc feedback: whether what receivers cannot repair should now
        be sent twice (``lossy_at`` is set; the subscribe side calls ``set_redundant``).
        Random loss: a few packets lost, no delay signal, no cap, no recent decrease."""
        window = self._feedback_loss
        packets = sum(n for _, n, _ in window)
        lost = sum(k for _, _, k in window)
        if (
            lost < FEEDBACK_LOSS_PACKETS
            or not LOSS_REDUNDANT / 256.0 < lost / packets < FEEDBACK_LOSS_HIGH
            or self.bwe.congested(now)
        ):
            return False
        bwe = self.bwe
        if isinstance(bwe, SendSideEstimator) and bwe.delay_state == OVERUSING:
            return False
        self.lossy_at = now
        return True

    def allocate(self, demands: list[Demand], now: float) -> Allocation:
        """The level of each video track under the estimate; remembers whether a probe
        is worth it (a track could have more, or the cap leaves no headroom)."""
        relax = self.bwe.ok_streak >= self.bwe.settings.probe_streak
        budget = self.budget(now)
        self._allocated_budget = budget
        levels = allocate(
            budget,
            [d.bitrates for d in demands],
            [d.current for d in demands],
            priorities=[d.priority for d in demands],
            floor=not self.bwe.may_pause(now, sum(d.bitrates[0] for d in demands if d.bitrates)),
        )
        # probe while a track could have more, and on until the cap leaves headroom over
        # what is sent: a cap just above the top layer turns its every keyframe into a
        # switch down (and a probe and a switch back up)
        allocated = sum(
            d.bitrates[level] for d, level in zip(demands, levels, strict=True) if level >= 0
        )
        self.wants_more = budget is not None and (
            any(level < len(d.bitrates) - 1 for d, level in zip(demands, levels, strict=True))
            or allocated * PROBE_HEADROOM > budget
        )
        # what the allocation's next step up needs (a probe aims at least there)
        steps = [
            d.bitrates[lv + 1] * UP_MARGIN - (d.bitrates[lv] if lv >= 0 else 0.0)
            for d, lv in zip(demands, levels, strict=True)
            if lv + 1 < len(d.bitrates)
        ]
        self.next_step = allocated + min(steps) if steps else None
        return Allocation(budget, levels, relax)

    def nothing_to_allocate(self) -> None:
        self.wants_more = False

    # ------------------------------------------------------------ feedback

    @staticmethod
    def loss_counts(switched_at: float | None, now: float) -> bool:
        """A report's loss says something about the link now: not in the first seconds
        after a switch or a resume, when it still counts packets the link dropped before
        (the tail of the stream that was left)."""
        return switched_at is not None and now - switched_at >= LOSS_SETTLE

    def on_report(self, block: ReportBlock, now: float) -> bool:
        """A receiver-report block; returns True when what receivers cannot repair
        should now be sent twice (the link loses at random, it is not congested)."""
        bwe = self.bwe
        if not block.media:
            # the RTX stream: a probe's padding travels there, so its loss during a
            # probe (paused video has no other) fails it, and its sequence numbers
            # show whether the padding arrived
            if bwe.probe is not None and block.fraction_lost / 256 >= bwe.settings.loss_high:
                bwe.hold(now)
            if block.video:
                bwe.on_rtx_report(
                    block.ssrc, now, highest=block.highest, cumulative_lost=block.cumulative_lost
                )
            return False
        lost = block.link_loss
        if lost is None:  # the first report: upstream loss as the SFU saw it
            lost = max(0.0, block.fraction_lost / 256.0 - block.upstream_loss)
        if block.video:
            # what the receiver acknowledges receiving bounds what its REMB may do
            bwe.on_report(
                block.ssrc, now, highest=block.highest, cumulative_lost=block.cumulative_lost,
                packets_sent=block.packets_sent, bytes_sent=block.bytes_sent,
                not_sent=block.not_sent,
            )  # fmt: skip
            # (the media stream only: an RTX stream's few packets make its fraction
            # lost too noisy to act on)
            if self.loss_counts(block.switched_at, now):
                bwe.on_loss(lost, now)
            elif lost >= bwe.settings.loss_low:
                bwe.hold(now)  # no probing into a lossy link
        if lost > LOSS_REDUNDANT / 256.0 and not bwe.congested(now):
            # unless the link is congested (more packets would feed the loss), send
            # what receivers cannot repair twice: 5 % random loss becomes 0.25 %
            self.lossy_at = now
            return True
        return False

    def on_remb(self, bitrate: int, now: float) -> bool:
        """A REMB; returns whether it is believed (a REMB far below what the receiver
        acknowledged without loss lowers neither the cap nor the publisher's rate)."""
        self.remb_bitrate = bitrate
        return self.bwe.on_remb(bitrate, now)

    def on_overflow(self, now: float) -> bool:
        """The link takes less than is sent (a full pacer queue, a refused send);
        returns whether the estimate dropped (so the allocation must be redone)."""
        return self.bwe.on_overflow(now)

    def rtx_budget(self, now: float) -> float:
        """Bytes retransmissions may use now: RTX_SHARE of the cap, or without one of
        what is sent (at least RTX_FLOOR bit/s): NACKs from a link that loses most of
        what it gets must not multiply the load."""
        cap = self.bwe.estimate(now)
        base = cap if cap is not None else max(self.bwe.sent, RTX_FLOOR)
        rate = base * RTX_SHARE / 8
        return max(0.0, self._rtx_bucket.refill(rate, rate * 0.2, now))

    def rtx_spent(self, spent: float, budget: float) -> bool:
        """Retransmissions spent ``spent`` bytes of ``budget``; returns whether the
        budget limited them."""
        self._rtx_bucket.spend(spent)
        return spent >= budget

    # ------------------------------------------------------------ once a second

    def measure(
        self, now: float, video_bytes_sent: int, tx_errors: int | None, audio_bytes_sent: int = 0
    ) -> Measurement:
        """What was sent (``video_bytes_sent``, ``audio_bytes_sent``: the forwarders'
        running totals) and refused (``tx_errors``: the transport's running count, None
        before there is a transport), about once a second."""
        audio = self._audio_mark
        if audio is not None and now > audio[0]:
            rate = max(0, audio_bytes_sent - audio[1]) * 8 / (now - audio[0])
            # (audio sent twice against random loss takes twice the room)
            self.audio_bitrate = rate * (2 if self.lossy_at is not None else 1)
        self._audio_mark = (now, audio_bytes_sent)
        redundancy_off = False
        lossy = self.lossy_at
        if lossy is not None and (now - lossy > REDUNDANCY_HOLD or self.bwe.congested(now)):
            self.lossy_at = None
            redundancy_off = True
        sent = self.padding_bytes + video_bytes_sent
        mark = self._egress_mark
        if mark is not None and now > mark[0]:
            rate = max(0, sent - mark[1]) * 8 / (now - mark[0])
            self.egress_bitrate = (
                0.5 * (self.egress_bitrate + rate) if self.egress_bitrate else rate
            )
            self.bwe.on_sent(rate, now)
        self._egress_mark = (now, sent)
        # packets the subscribe transport could not send, on any path (the C loop, the
        # pacer, RTX, probes): an overflow, with a cap or without one
        refused = 0
        if tx_errors is not None:
            refused = tx_errors - self._tx_errors_mark
            self._tx_errors_mark = tx_errors
        reallocate = refused > 0 and self.on_overflow(now)
        return Measurement(refused, redundancy_off, reallocate)

    # ------------------------------------------------------------ probing

    def start_probe(self, now: float) -> float | None:
        """Start a probe if the estimator wants one: its padding rate (bit/s), or None."""
        return self.bwe.start_probe(now, wanted=self.wants_more, aim=self.next_step)

    def probe_step(self, now: float, elapsed: float = PROBE_TICK) -> ProbeStep:
        """The padding of the probe's slice starting now: ``elapsed`` s since the last
        slice (a busy event loop runs the slices late; each makes up for its delay, up
        to ``PROBE_SLICE_MAX``, or the cluster would go out below its target and probe
        nothing)."""
        rate = self.bwe.probe_rate(now)
        if rate > 0:
            return ProbeStep(rate * min(max(elapsed, 0.0), PROBE_SLICE_MAX) / 8)
        probe = self.bwe.probe
        if probe is None:
            return ProbeStep(0.0)
        s = self.bwe.settings  # sent: look at the result once it has settled
        return ProbeStep(0.0, probe.start + s.probe_duration + s.settle + 0.01)

    def padding_sent(self, size: int) -> None:
        self.padding_bytes += size
        self.bwe.on_padding(size)
