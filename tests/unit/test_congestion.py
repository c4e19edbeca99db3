"""sfu.congestion.CongestionController: the scenarios of tests/integration/test_congestion.py
(a link limited and lifted, random loss, a failed probe, a keyframe-caused switch) driven
by scripted receiver feedback and a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import time

from sfu.congestion import (
    LOSS_REDUNDANT,
    LOSS_SETTLE,
    PROBE_TICK,
    REDUNDANCY_HOLD,
    CongestionController,
    Demand,
    ReportBlock,
)
from sfu.gcc.packet import PacketResult

#: the expected bit/s of a simulcast track's q, h and f layers
LAYERS = [150_000.0, 500_000.0, 1_500_000.0]
PACKET = 1000  # bytes
TICK = 0.1  # s between simulation steps; receiver reports and measurements once a second


class Link:
    """A scripted receiver behind a link of ``capacity`` bit/s (None: unlimited) that
    also loses ``random_loss`` of what it carries; it reports like RFC 3550 receivers."""

    def __init__(self) -> None:
        self.capacity: float | None = None
        self.random_loss = 0.0
        self.highest = 0
        self.lost = 0.0
        self._mark = (0, 0.0)
        #: the RTX stream, where a probe's padding travels
        self.rtx_highest = 0
        self.rtx_lost = 0.0

    def carry(self, bits: float, seconds: float, padding: int = 0) -> None:
        """``bits`` of media and ``padding`` padding packets (PACKET bytes each)."""
        packets = bits / 8 / PACKET
        self.highest += round(packets)
        self.rtx_highest += padding
        total = bits + padding * PACKET * 8
        share = 0.0  # of what is sent, what the bottleneck drops
        if self.capacity is not None and total > self.capacity * seconds:
            share = 1 - self.capacity * seconds / total
        self.lost += packets * (share + (1 - share) * self.random_loss)
        self.rtx_lost += padding * (share + (1 - share) * self.random_loss)

    def report(self) -> tuple[int, int, int]:
        """(fraction lost in 1/256, extended highest seq, cumulative lost) since the last."""
        expected = self.highest - self._mark[0]
        lost = self.lost - self._mark[1]
        self._mark = (self.highest, self.lost)
        fraction = min(255, int(256 * lost / expected)) if expected else 0
        return fraction, self.highest, int(self.lost)


class Call:
    """One subscriber receiving one simulcast video track through the controller."""

    def __init__(self) -> None:
        self.ctl = CongestionController()
        self.link = Link()
        self.now = 0.0
        self.level = 2
        self.switched_at: float | None = 0.0
        self.bytes_sent = 0
        self.levels: list[tuple[float, int]] = []
        self.redundant = False
        self.probes = 0
        self._probe_end = 0.0

    def allocate(self) -> None:
        allocation = self.ctl.allocate([Demand(LAYERS, self.level, 1.0)], self.now)
        level = allocation.levels[0]
        if level != self.level:
            self.level = level
            self.switched_at = self.now  # (a switch happens at a keyframe: at once here)
        self.levels.append((self.now, self.level))

    def step(self) -> None:
        self.now = round(self.now + TICK, 6)
        rate = LAYERS[self.level] if self.level >= 0 else 0.0
        # a probe's padding: ``padding`` bytes per PROBE_TICK slice while it sends
        padding = self.ctl.probe_step(self.now).padding * 8 / PROBE_TICK  # bit/s
        pads = round(padding * TICK / 8 / PACKET)
        self.bytes_sent += int(rate * TICK / 8)
        for _ in range(pads):
            self.ctl.padding_sent(PACKET)
        self.link.carry(rate * TICK, TICK, pads)
        if abs(self.now - round(self.now)) < 1e-6:  # once a second
            self.second()

    def second(self) -> None:
        now = self.now
        result = self.ctl.measure(now, self.bytes_sent, 0)
        if result.redundancy_off:
            self.redundant = False
        fraction, highest, lost = self.link.report()
        block = ReportBlock(
            ssrc=1, fraction_lost=fraction, highest=highest, cumulative_lost=lost,
            link_loss=fraction / 256, packets_sent=self.bytes_sent // PACKET,
            bytes_sent=self.bytes_sent, switched_at=self.switched_at,
        )  # fmt: skip
        if self.ctl.on_report(block, now):
            self.redundant = True
        rtx = ReportBlock(ssrc=2, fraction_lost=0, highest=self.link.rtx_highest,
                          cumulative_lost=int(self.link.rtx_lost), media=False)  # fmt: skip
        self.ctl.on_report(rtx, now)
        self.allocate()
        if self.ctl.start_probe(now) is not None:
            self.probes += 1

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / TICK)):
            self.step()

    def first(self, after: float, wanted: set[int]) -> float | None:
        return next((t - after for t, lv in self.levels if t >= after and lv in wanted), None)


def settled_call() -> Call:
    call = Call()
    call.run(10.0)
    assert call.level == 2 and call.ctl.budget(call.now) is None
    return call


def test_a_limited_link_drops_layers_within_three_seconds():
    started = time.perf_counter()
    call = settled_call()
    limited = call.now
    call.link.capacity = 300_000
    call.run(12.0)
    down = call.first(limited, {0, -1})
    # (reports once a second: loss lowers the estimate at the first, q at the third)
    assert down is not None and down <= 3.0, call.levels
    cap = call.ctl.budget(call.now)
    assert cap is not None and cap < 600_000
    assert call.ctl.bwe.events and call.ctl.bwe.events[0][1] == "loss"
    assert time.perf_counter() - started < 0.5


def test_a_lifted_limit_climbs_back_to_the_top_layer_only_going_up():
    started = time.perf_counter()
    call = settled_call()
    call.link.capacity = 300_000
    call.run(12.0)
    lifted = call.now
    call.link.capacity = None
    call.run(20.0)
    up = call.first(lifted, {2})
    assert up is not None and up < 15.0, call.levels
    climb = [lv for t, lv in call.levels if lifted <= t <= lifted + up]
    assert climb == sorted(climb), climb
    assert call.probes > 0 and call.ctl.bwe.probes_ok > 0
    assert time.perf_counter() - started < 0.5


def test_random_loss_turns_redundancy_on_without_lowering_the_estimate():
    call = settled_call()
    call.link.random_loss = 0.05
    call.run(5.0)
    assert call.redundant
    assert call.ctl.budget(call.now) is None and call.level == 2  # 5 % is not congestion
    call.link.random_loss = 0.0
    call.run(REDUNDANCY_HOLD + 2.0)
    assert not call.redundant  # no loss for REDUNDANCY_HOLD seconds: back to single copies


def test_loss_below_the_redundancy_threshold_changes_nothing():
    call = settled_call()
    call.link.random_loss = (LOSS_REDUNDANT - 1) / 256
    call.run(5.0)
    assert not call.redundant and call.ctl.lossy_at is None


def test_a_probe_into_a_link_that_cannot_take_it_fails():
    ctl = CongestionController()
    bwe = ctl.bwe
    ctl.measure(0.0, 0, 0)
    ctl.measure(1.0, 150_000 // 8, 0)  # 150 kbit/s of q
    bwe.cap = 300_000.0
    ctl.allocate([Demand(LAYERS, 0, 1.0)], 1.0)
    assert ctl.wants_more  # h does not fit: probing is worth it
    now = 5.0
    rate = ctl.start_probe(now)
    assert rate is not None
    step = ctl.probe_step(now + 0.1)
    assert step.padding == rate * PROBE_TICK / 8
    # the receiver loses the probe's padding on the RTX stream
    ctl.on_report(ReportBlock(ssrc=2, fraction_lost=80, highest=10, cumulative_lost=3,
                              media=False), now + 0.3)  # fmt: skip
    assert bwe.probe is None and bwe.failed_probes == 1
    assert ctl.probe_step(now + 0.4) == type(step)(0.0)  # nothing more to send or judge
    ctl.measure(now + 2.0, 300_000 // 8, 0)
    assert ctl.budget(now + 2.0) == 300_000.0  # not raised
    # backed off: 1 s of calm would do, after a failure it takes 2
    assert ctl.start_probe(now + 0.3 + 1.5) is None
    assert ctl.start_probe(now + 0.3 + 2.1) is not None


def test_a_probe_that_passes_raises_the_estimate():
    ctl = CongestionController()
    ctl.measure(0.0, 0, 0)
    ctl.bwe.cap = 300_000.0
    ctl.allocate([Demand(LAYERS, 0, 1.0)], 2.0)
    rtx = ReportBlock(ssrc=2, fraction_lost=0, highest=10, cumulative_lost=0, media=False)
    ctl.on_report(rtx, 1.8)
    rate = ctl.start_probe(2.0)
    assert rate == 600_000.0  # nothing else is sent: the link is to carry twice the cap
    for _ in range(40):
        ctl.padding_sent(900)
    step = ctl.probe_step(2.6)  # done sending: judged once it settled
    assert step.padding == 0 and step.result_at is not None
    # the receiver's report of the RTX stream shows the padding arrived
    ctl.on_report(ReportBlock(ssrc=2, fraction_lost=0, highest=50, cumulative_lost=0,
                              media=False), 2.9)  # fmt: skip
    ctl.measure(step.result_at, 40_000, 0)
    assert ctl.budget(step.result_at) == 600_000.0


def test_a_probe_nothing_shows_arrived_fails():
    """Silence is not success: no report or REMB says the padding arrived."""
    ctl = CongestionController()
    ctl.measure(0.0, 0, 0)
    ctl.bwe.cap = 300_000.0
    ctl.allocate([Demand(LAYERS, 0, 1.0)], 2.0)
    assert ctl.start_probe(2.0) is not None
    for _ in range(40):
        ctl.padding_sent(900)
    ctl.measure(5.0, 0, 0)
    assert ctl.budget(5.0) == 300_000.0
    assert ctl.bwe.failed_probes == 1 and ctl.bwe.probes_unproven == 1


def test_loss_just_after_a_keyframe_caused_switch_lowers_nothing():
    """A switch (on the new layer's keyframe) still sees the old stream's tail lost:
    for LOSS_SETTLE seconds such loss only holds probing."""
    ctl = CongestionController()
    ctl.measure(0.0, 0, 0)
    ctl.measure(1.0, 1_500_000 // 8, 0)
    switched = 1.0
    for i, now in enumerate((1.2, 1.6, 2.0)):
        block = ReportBlock(ssrc=1, fraction_lost=100, highest=100 * (i + 1),
                            cumulative_lost=40 * (i + 1), link_loss=0.4, switched_at=switched)  # fmt: skip
        ctl.on_report(block, now)
    assert ctl.budget(2.0) is None and ctl.bwe.last_signal == 2.0
    # the same loss once the switch has settled is congestion
    for i, now in enumerate((switched + LOSS_SETTLE, switched + LOSS_SETTLE + 1)):
        block = ReportBlock(ssrc=1, fraction_lost=100, highest=400 + 100 * i,
                            cumulative_lost=200 + 40 * i, link_loss=0.4, switched_at=switched)  # fmt: skip
        ctl.on_report(block, now)
    assert ctl.budget(switched + LOSS_SETTLE + 1) is not None


def test_a_cap_just_above_the_top_layer_keeps_probing_for_headroom():
    """With a cap barely over what f needs, every keyframe would switch down: probing
    goes on until the cap leaves PROBE_HEADROOM over what is sent."""
    ctl = CongestionController()
    ctl.bwe.cap = LAYERS[2] * 1.2
    allocation = ctl.allocate([Demand(LAYERS, 2, 1.0)], 1.0)
    assert allocation.levels == [2] and ctl.wants_more
    ctl.bwe.cap = LAYERS[2] * 2
    ctl.allocate([Demand(LAYERS, 2, 1.0)], 1.0)
    assert not ctl.wants_more


def test_refused_sends_are_an_overflow():
    ctl = CongestionController()
    ctl.measure(0.0, 0, 0)
    ctl.measure(1.0, 1_500_000 // 8, 0)
    result = ctl.measure(2.0, 2 * 1_500_000 // 8, 7)
    assert result.refused == 7 and result.reallocate
    assert ctl.budget(2.0) is not None
    again = ctl.measure(2.5, 2 * 1_500_000 // 8, 7)
    assert again.refused == 0 and not again.reallocate


def test_the_retransmission_budget_is_a_share_of_the_estimate():
    ctl = CongestionController()
    ctl.bwe.cap = 800_000.0
    ctl.rtx_budget(0.0)
    budget = ctl.rtx_budget(1.0)
    assert 0 < budget <= 800_000 * 0.3 / 8 * 0.2 + 1
    assert ctl.rtx_spent(budget, budget)  # all of it: limited
    assert ctl.rtx_budget(1.0) <= 0.0


def _feedback_call(
    loss_every: int | None, *, queue_growth: float = 0.0
) -> tuple[CongestionController, list[float]]:
    """A transport-cc subscriber fed 2 s of feedback (1 Mbit/s, every 50 ms), losing one
    packet in ``loss_every`` (None: none), its arrivals drifting ``queue_growth`` s
    later per second (a queue building); returns when redundancy was asked for."""
    ctl = CongestionController()
    ctl.use_transport_cc()
    asked: list[float] = []
    seq = 0
    for step in range(1, 41):
        now = step * 0.05
        batch = []
        for i in range(5):
            t = now - 0.05 + i * 0.01
            lost = loss_every is not None and seq % loss_every == loss_every - 1
            arrival = None if lost else 100.0 + t + 0.02 + queue_growth * t
            batch.append(PacketResult(seq, t, 1250, arrival))
            seq += 1
        ctl.on_transport_feedback(batch, now)
        if ctl.feedback_shows_random_loss(now):
            asked.append(now)
    return ctl, asked


def test_random_loss_in_transport_feedback_turns_redundancy_on_within_half_a_second():
    ctl, asked = _feedback_call(20)  # 5 % lost at random, no queue
    assert asked and asked[0] <= 0.5, asked
    assert ctl.lossy_at == asked[-1] and ctl.bwe.estimate(2.0) is None


def test_feedback_with_no_loss_or_heavy_loss_or_a_building_queue_asks_for_no_redundancy():
    assert _feedback_call(None)[1] == []
    assert _feedback_call(4)[1] == []  # 25 %: a link dropping what it cannot carry
    # loss while the queue builds (arrivals fall behind by 30 % of the time): congestion
    ctl, asked = _feedback_call(20, queue_growth=0.3)
    assert ctl.bwe.delay_state == "overusing" and ctl.bwe.congested(2.0)
    assert asked == []
