"""The SendSideEstimator facade: the interface the congestion controller uses
(sfu/gcc/estimator.py). Behaviour on simulated paths: test_gcc_scenarios.py."""

from __future__ import annotations

import pytest

from sfu.gcc.estimator import SendSideEstimator
from sfu.gcc.packet import PacketResult

CLOCK = 1000.0


def steady(bwe: SendSideEstimator, start: float, end: float, rate: float, seq: int = 0) -> int:
    """Feedback every 50 ms for 1250-byte packets sent at ``rate``, all arriving 20 ms
    later (a clean link); returns the next sequence number."""
    gap = 1250 * 8 / rate
    t = start
    while t < end:
        batch = []
        while t < end and len(batch) < 1000:
            batch.append(PacketResult(seq, t, 1250, CLOCK + t + 0.02))
            seq += 1
            t += gap
            if batch[-1].send_time >= batch[0].send_time + 0.05:
                break
        bwe.on_feedback(batch, t + 0.03)
    return seq


def test_interface_of_the_bandwidth_estimator() -> None:
    bwe = SendSideEstimator()
    s = bwe.settings
    for name in ("probe_streak", "loss_high", "loss_low", "probe_duration", "settle"):
        assert isinstance(getattr(s, name), int | float)
    assert (bwe.cap, bwe.sent, bwe.probe, bwe.ok_streak, bwe.failed_probes) == (
        None,
        0.0,
        None,
        0,
        0,
    )
    assert bwe.events == [] and bwe.probes_ok == 0
    bwe.on_report(1, 0.0, highest=10, cumulative_lost=0, packets_sent=10, bytes_sent=9000)
    assert bwe.on_remb(50_000, 0.0) is True  # (a transport-cc receiver sends none)
    assert bwe.estimate(0.0) is None and bwe.acked(0.0) is None
    assert bwe.acknowledged_rate(0.0) is None and bwe.delay_state == "normal"
    assert not bwe.congested(0.0) and not bwe.may_pause(0.0) and not bwe.link_keeps_up(0.0)
    assert bwe.start_probe(0.0, True) is None  # nothing limits: nothing to probe
    assert bwe.probe_rate(0.0) == 0.0


def test_clean_feedback_keeps_no_cap_and_measures_the_link() -> None:
    bwe = SendSideEstimator()
    steady(bwe, 0.0, 3.0, 1_000_000)
    assert bwe.estimate(3.05) is None
    assert bwe.acknowledged_rate(3.05) == pytest.approx(1_000_000, rel=0.05)
    delivery = bwe.acked(3.05)
    assert delivery is not None and delivery.acked_share == pytest.approx(1.0, abs=0.05)
    assert bwe.link_keeps_up(3.05)
    assert bwe.acked(10.0) is None  # feedback stopped: stale


def test_overflow_decreases_to_85_percent_of_sent_once_per_half_second() -> None:
    bwe = SendSideEstimator()
    bwe.on_sent(1_000_000, 1.0)
    assert bwe.on_overflow(1.0)
    assert bwe.estimate(1.0) == pytest.approx(850_000)
    assert not bwe.on_overflow(1.2)
    bwe.on_sent(800_000, 1.6)
    assert bwe.on_overflow(1.6)
    assert bwe.estimate(1.6) == pytest.approx(680_000)
    assert bwe.congested(2.0) and bwe.may_pause(2.0)
    assert [what for _, what, _ in bwe.events] == ["overflow", "overflow"]


def test_receiver_report_loss_acts_only_while_feedback_is_stale() -> None:
    bwe = SendSideEstimator()
    steady(bwe, 0.0, 2.0, 1_000_000)
    bwe.on_sent(1_000_000, 2.0)
    bwe.on_loss(0.3, 2.05)  # the feedback says nothing was lost: it is believed
    assert bwe.estimate(2.05) is None
    bwe.on_loss(0.3, 6.0)  # no feedback for 4 s: the report's loss lowers the cap
    assert bwe.estimate(6.0) == pytest.approx(850_000)


def test_probe_pads_to_the_target_and_success_raises_the_estimate() -> None:
    bwe = SendSideEstimator()
    seq = steady(bwe, 0.0, 2.0, 500_000)
    bwe.on_sent(500_000, 2.0)
    bwe.on_overflow(2.0)  # a cap: 425 k
    assert bwe.start_probe(2.5, True) is None  # too soon after a decrease
    assert bwe.start_probe(3.5, False) is None  # nothing wanted
    seq = steady(bwe, 2.0, 3.5, 400_000, seq)
    cap, acked = bwe.estimate(3.5), bwe.acknowledged_rate(3.5)
    assert cap is not None and acked is not None
    padding = bwe.start_probe(3.5, True)
    probe = bwe.probe
    assert padding is not None and probe is not None
    # 2 x the estimate (or what the path carried at the decrease, about the same here)
    assert probe.target == pytest.approx(2 * max(cap, acked), rel=0.03)
    assert padding == pytest.approx(probe.target - 400_000, rel=0.05)
    assert bwe.probe_rate(3.6) == padding and bwe.probe_rate(probe.end + 0.01) == 0.0
    # the link carries the cluster at its rate
    seq = steady(bwe, 3.5, probe.end, probe.target, seq)
    steady(bwe, probe.end, probe.end + 0.3, 400_000, seq)
    estimate = bwe.estimate(probe.end + 0.35)
    assert bwe.probe is None and bwe.probes_ok == 1 and bwe.ok_streak == 1
    assert estimate == pytest.approx(0.95 * probe.target, rel=0.05)


def test_probe_without_feedback_fails() -> None:
    bwe = SendSideEstimator()
    steady(bwe, 0.0, 2.0, 500_000)
    bwe.on_sent(500_000, 2.0)
    bwe.on_overflow(2.0)
    cap = bwe.cap
    assert cap is not None and cap >= 425_000  # (0.85 x sent, or acknowledged)
    assert bwe.start_probe(3.5, True) is not None
    probe = bwe.probe
    assert probe is not None
    assert bwe.estimate(probe.end + 0.5) == cap  # still waiting
    assert bwe.probe is not None
    bwe.on_sent(500_000, probe.end + 1.1)  # silence
    assert bwe.probe is None and bwe.failed_probes == 1 and bwe.probes_ok == 0
    assert bwe.last_probe_result == "silence"
    assert bwe.estimate(probe.end + 1.2) == cap
    assert bwe.start_probe(probe.end + 1.5, True) is None  # waits before the next


def test_estimate_lifted_above_max_bitrate() -> None:
    bwe = SendSideEstimator()
    bwe.on_sent(1_000_000, 1.0)
    bwe.on_overflow(1.0)
    assert bwe.cap is not None
    bwe._aimd.set(25_000_000, 2.0)  # (as a probe's result would)
    steady(bwe, 2.0, 2.2, 1_000_000)
    assert bwe.estimate(2.3) is None
    assert bwe.events[-1][1:] == ("lifted", None)


def test_packets_reported_twice_count_once() -> None:
    once, twice = SendSideEstimator(), SendSideEstimator()
    batches = []
    seq, t = 0, 0.0
    for _ in range(40):
        batch = [PacketResult(seq + i, t + i * 0.01, 1250, CLOCK + t + i * 0.01) for i in range(5)]
        batches.append((t + 0.08, batch))
        seq, t = seq + 5, t + 0.05
    for now, batch in batches:
        once.on_feedback(batch, now)
        twice.on_feedback(batch, now)
        twice.on_feedback(batch, now)  # (a repeated feedback)
    assert twice.acknowledged_rate(2.0) == once.acknowledged_rate(2.0)
    assert once.acknowledged_rate(2.0) == pytest.approx(1_000_000, rel=0.05)


def test_losing_is_whether_feedback_reported_a_loss_lately() -> None:
    bwe = SendSideEstimator()
    bwe.on_feedback([PacketResult(i, i * 0.01, 1000, 50.0 + i * 0.01) for i in range(10)], 0.2)
    assert not bwe.losing(0.2)
    bwe.on_feedback([PacketResult(10, 0.1, 1000, None), PacketResult(11, 0.11, 1000, 50.12)], 0.3)
    assert bwe.losing(0.3) and bwe.losing(0.6)
    assert not bwe.losing(0.61)


def _narrowing_onset(
    holds: list[tuple[float, float]] | None = None,
) -> tuple[SendSideEstimator, list[tuple[float, float | None]]]:
    """1.5 Mbit/s of 1200-byte packets; at t=2 the path narrows to a 300 kbit/s token
    bucket (15 kB burst) with a deep queue (nothing dropped), 20 ms each way; feedback
    every 50 ms. Returns the estimator and (time, cap) after each feedback; ``holds``
    gets (time, ``cut_hold``) after each."""
    bwe = SendSideEstimator()
    rate, size, bucket_rate = 1_500_000.0, 1200, 300_000.0
    interval = size * 8 / rate
    sent: list[tuple[int, float]] = []
    arrivals: dict[int, float] = {}
    tokens, token_time, last_out = 15_000.0, 2.0, 0.0
    seq, t, reported, caps = 0, 0.0, 0, []
    next_feedback = 0.05
    while t < 4.0:
        if t < 2.0:
            out = t
        else:  # the bucket: what its tokens cover leaves at once, the rest in order
            tokens = min(15_000.0, tokens + (t - token_time) * bucket_rate / 8)
            token_time = t
            out = max(t, last_out)
            if tokens >= size and out == t:
                tokens -= size
            else:
                out = max(out, t) + size * 8 / bucket_rate
                tokens = 0.0
                token_time = out
        last_out = out
        sent.append((seq, t))
        arrivals[seq] = out + 0.02
        seq += 1
        t += interval
        while next_feedback <= t:
            now = next_feedback
            batch = []
            while reported < len(sent) and arrivals[sent[reported][0]] <= now - 0.02:
                s, send_time = sent[reported]
                batch.append(PacketResult(s, send_time, size, CLOCK + arrivals[s]))
                reported += 1
            if batch:
                bwe.on_feedback(batch, now)
            caps.append((now, bwe.cap))
            if holds is not None:
                holds.append((now, bwe.cut_hold(now)))
            next_feedback += 0.05
    return bwe, caps


def test_a_first_decrease_on_a_stale_rate_is_answered_again_behind_the_queue() -> None:
    """Behind a deep queue the first decrease comes while the acknowledged rate still
    holds the time before the link narrowed; what arrives lately (the bottleneck's
    rate) shows it is far too high. The estimate follows within 0.25 s of that first
    decrease, not once packets sent after it have crossed the queue (0.5 s and more)."""
    bwe, caps = _narrowing_onset()
    first = next(now for now, cap in caps if cap is not None)
    under = next((now for now, cap in caps if cap is not None and cap <= 1.3 * 300_000), None)
    assert under is not None and under - first <= 0.25, (first, under, bwe.events)
    settled = [cap for now, cap in caps if now > under]
    assert settled and min(c for c in settled if c is not None) >= 0.7 * 300_000, bwe.events


def test_a_cut_holds_video_for_the_queue_the_feedback_shows() -> None:
    """After a layer is cut, video waits for the bottleneck's queue to drain (what
    the feedback shows and what was sent since over the link's rate, less 50 ms, at
    most 0.5 s; 0.15 s at least while packets are lost); on a clean path it does not
    wait at all."""
    deep, _ = _narrowing_onset()  # a queue of over a second behind the bucket
    assert deep.queue_delay(4.0) > 0.5 and deep.cut_hold(4.0) == 0.5
    holds: list[tuple[float, float]] = []
    _, caps = _narrowing_onset(holds)
    # when the cap first falls under the old rate's layers (the cut) the feedback shows
    # a short queue yet, while the old rate's packets sent since (1.5 Mbit/s into 300
    # kbit/s) make it far longer
    cut = next(i for i, (_, cap) in enumerate(caps) if cap is not None and cap < 500_000)
    now, hold = holds[cut]
    assert hold >= 0.45, (now, hold)
    clean = SendSideEstimator()
    batch = [PacketResult(i, i * 0.01, 1000, CLOCK + i * 0.01 + 0.02) for i in range(20)]
    clean.on_feedback(batch, 0.25)
    assert clean.cut_hold(0.25) == 0.0
    clean.on_feedback(
        [PacketResult(20, 0.2, 1000, None), PacketResult(21, 0.21, 1000, CLOCK + 0.23)], 0.3
    )
    assert clean.losing(0.3) and clean.cut_hold(0.3) == 0.15
