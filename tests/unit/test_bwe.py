"""sfu.bwe.BandwidthEstimator: REMB drops and loss cap the estimate; probes lift it."""

from __future__ import annotations

import pytest

from sfu.bwe import BandwidthEstimator, BweSettings


def test_no_signal_no_limit_and_no_probe():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_800_000, 0.0)
    for t in range(1, 10):
        bwe.on_remb(300_000 + 50_000 * t, float(t))  # growing after a switch up: no drop
        bwe.on_loss(0.0, float(t))
    assert bwe.estimate(10.0) is None
    assert bwe.start_probe(10.0, wanted=True) is None


def test_a_remb_drop_below_what_is_sent_caps_the_estimate():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_800_000, 0.0)
    bwe.on_remb(2_400_000, 0.5)
    bwe.on_remb(2_300_000, 1.0)  # -4 %: not a drop
    assert bwe.estimate(1.0) is None
    bwe.on_remb(1_000_000, 1.2)  # a first drop: one dip is not enough
    assert bwe.estimate(1.2) is None
    bwe.on_remb(260_000, 1.5)  # dropping on: overuse
    assert bwe.estimate(1.5) == 260_000
    assert bwe.events[-1][1] == "remb"


def test_a_remb_drop_above_what_is_sent_is_not_congestion():
    bwe = BandwidthEstimator()
    bwe.on_sent(150_000, 0.0)
    bwe.on_remb(900_000, 0.5)
    bwe.on_remb(600_000, 1.0)  # dropped, but still 4x what is sent
    assert bwe.estimate(1.0) is None


def test_heavy_loss_caps_at_sent_times_one_minus_half_the_loss():
    bwe = BandwidthEstimator()  # libwebrtc's rule alone
    bwe.on_sent(2_000_000, 0.0)
    bwe.on_loss(0.6, 0.5)
    assert bwe.estimate(0.5) == pytest.approx(2_000_000 * 0.7)
    bwe.on_sent(1_000_000, 1.0)
    bwe.on_loss(0.5, 1.2)  # too soon after the last decrease
    assert bwe.estimate(1.2) == pytest.approx(1_400_000)
    bwe.on_loss(0.5, 1.5)
    assert bwe.estimate(1.5) == pytest.approx(750_000)


def _capped(cap: float = 200_000) -> BandwidthEstimator:
    bwe = BandwidthEstimator(BweSettings(hold=1.5, probe_duration=0.6, settle=0.6, probe_step=1.0))
    bwe.on_sent(cap * 2, 0.0)
    bwe.on_remb(cap * 2, 0.0)
    bwe.on_remb(cap * 1.5, 0.05)
    bwe.on_remb(cap, 0.3)
    assert bwe.estimate(0.3) == cap
    bwe.on_sent(cap, 0.3)  # the allocation followed: what is sent is the cap
    return bwe


def _prove(bwe: BandwidthEstimator, now: float) -> None:
    """The receiver's REMB rises to the probed rate (it received the probe at that rate)."""
    probe = bwe.probe
    assert probe is not None
    bwe.on_remb(probe.target, now)


def test_probe_waits_for_calm_and_a_reason():
    bwe = _capped()
    assert bwe.start_probe(1.0, wanted=True) is None  # not calm long enough
    assert bwe.start_probe(2.0, wanted=False) is None  # nothing more is wanted
    rate = bwe.start_probe(2.0, wanted=True)
    assert rate == pytest.approx(200_000)  # probe_step 1: as much again as the cap
    assert bwe.probe_rate(2.3) == rate and bwe.probe_rate(2.7) == 0.0
    assert bwe.start_probe(2.3, wanted=True) is None  # one at a time


def test_a_probe_the_receiver_shows_it_received_raises_the_cap():
    bwe = _capped()
    bwe.start_probe(2.0, wanted=True)
    _prove(bwe, 2.4)  # a REMB at the probed rate, in the probe's second half
    assert bwe.estimate(3.0) == 200_000  # still settling
    assert bwe.estimate(3.3) == pytest.approx(400_000)
    assert bwe.probes_ok == 1 and bwe.events[-1][1] == "probe ok (remb)"


def test_a_remb_from_before_the_probe_took_effect_proves_nothing():
    bwe = _capped()
    bwe.start_probe(2.0, wanted=True)
    bwe.on_remb(250_000, 2.1)  # too early to reflect the probe
    bwe.on_remb(340_000, 2.9)  # after it, rising, but short of 0.9 x the probed rate
    assert bwe.estimate(5.0) == 200_000
    assert bwe.probes_ok == 0 and bwe.failed_probes == 1 and bwe.probes_unproven == 1


def test_a_signal_during_a_probe_fails_it_and_backs_off():
    bwe = _capped()
    bwe.start_probe(2.0, wanted=True)
    bwe.on_loss(0.05, 2.5)  # a little loss: the link is full
    assert bwe.probe is None and bwe.failed_probes == 1
    assert bwe.estimate(4.0) == 200_000
    assert bwe.start_probe(5.4, wanted=True) is None  # waits 2 x hold now
    assert bwe.start_probe(5.6, wanted=True) is not None


def test_heavy_loss_during_a_probe_is_the_probes_and_keeps_the_cap():
    """A probe's padding overfills the link and the media streams lose packets: the probe
    fails, the cap stays what it was before it, and video is not paused for it (a 300
    kbit/s link that carried `q` paused it when the cap fell to what the overfilled
    interval carried). Loss that goes on after the probe lowers the cap as before."""
    bwe = _capped()
    bwe.start_probe(2.0, wanted=True)
    bwe.on_sent(400_000, 2.5)  # media + padding
    bwe.on_loss(0.3, 2.6)
    bwe.on_loss(0.3, 2.9)
    assert bwe.probe is None and bwe.failed_probes == 1
    assert bwe.estimate(3.0) == 200_000
    assert [e for _, e, _ in bwe.events if e == "loss"] == []  # no loss evidence to pause on
    bwe.on_sent(200_000, 3.5)
    bwe.on_loss(0.3, 3.6)  # still describes the probe (probe_wait after its end)
    assert bwe.estimate(3.6) == 200_000
    bwe.on_loss(0.3, 4.5)  # the link did narrow: the reports after the probe say so too
    assert bwe.estimate(4.5) == pytest.approx(200_000 * 0.85)
    assert bwe.events[-1][1:] == ("loss", pytest.approx(200_000 * 0.85))


def test_probes_climb_from_300k_to_two_megabits_within_fifteen_seconds():
    """Issue 6's recovery bound: the link is free again; probes find it out."""
    bwe = _capped(260_000)
    t = 0.5
    while (bwe.estimate(t) or 1e12) < 1.15 * 1_800_000 and t < 30.0:
        bwe.start_probe(t, wanted=True)
        t += 0.25
        if bwe.probe is not None and t >= bwe.probe.start + 0.3:
            _prove(bwe, t)
        bwe.on_sent(min(bwe.estimate(t) or 0.0, 1_800_000), t)  # the allocation follows
    assert t < 15.0


def test_a_run_of_successful_probes_makes_them_larger_and_a_signal_ends_the_run():
    bwe = _capped(100_000)
    sizes = []
    t = 2.0
    for _ in range(3):
        sizes.append(bwe.start_probe(t, wanted=True))
        _prove(bwe, t + 0.4)
        t += 1.3  # probe (0.6 s) and settle (0.6 s) over: the next call settles it
        bwe.on_sent(bwe.estimate(t) or 0.0, t)  # the allocation follows the cap
    # as much again as the cap twice, then twice the cap (after probe_streak = 2 successes)
    assert sizes == [pytest.approx(100_000), pytest.approx(200_000), pytest.approx(800_000)]
    assert bwe.ok_streak == 3 and bwe.estimate(t) == pytest.approx(1_200_000)
    bwe.hold(t)  # loss: no longer a free link
    assert bwe.ok_streak == 0
    assert bwe.start_probe(t + 1.6, wanted=True) == pytest.approx(1_200_000)


def test_the_cap_never_goes_below_the_minimum():
    bwe = BandwidthEstimator(BweSettings(min_bitrate=30_000))
    bwe.on_sent(40_000, 0.0)
    bwe.on_loss(0.99, 0.0)
    assert bwe.estimate(0.0) == 30_000


def test_only_loss_may_pause_video():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_000_000, 0.0)
    bwe.on_remb(1_200_000, 0.0)
    bwe.on_remb(500_000, 0.2)
    bwe.on_remb(100_000, 0.5)  # a delay signal: capped, but no pause
    assert bwe.estimate(0.5) == 100_000 and not bwe.may_pause(0.5)
    bwe.on_loss(0.5, 1.5)
    assert bwe.may_pause(1.5)
    assert bwe.may_pause(2.6)  # the REMB cap has stood for 2 s


def test_a_short_delay_signal_does_not_pause():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_000_000, 0.0)
    bwe.on_remb(1_200_000, 0.0)
    bwe.on_remb(500_000, 0.2)
    bwe.on_remb(100_000, 0.5)
    assert not bwe.may_pause(2.4)
    assert bwe.may_pause(2.6)


def test_moderate_loss_must_show_twice():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_000_000, 0.0)
    bwe.on_loss(0.12, 1.0)  # one noisy report (5 % random loss can show this)
    assert bwe.estimate(1.0) is None
    bwe.on_loss(0.03, 2.0)
    bwe.on_loss(0.12, 3.0)
    assert bwe.estimate(3.0) is None
    bwe.on_loss(0.15, 4.0)  # twice in a row: congestion
    assert bwe.estimate(4.0) == pytest.approx(1_000_000 * (1 - 0.075))


def test_a_single_remb_dip_is_ignored():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_000_000, 0.0)
    bwe.on_remb(1_200_000, 0.0)
    bwe.on_remb(300_000, 1.0)  # one dip (the receiver stalled)
    bwe.on_remb(1_100_000, 1.3)
    bwe.on_remb(1_150_000, 1.6)
    assert bwe.estimate(2.0) is None
    bwe.on_remb(900_000, 4.0)  # much later: a new first drop, not a confirmation
    assert bwe.estimate(4.0) is None


def test_loss_that_may_not_lower_the_cap_still_holds_probing() -> None:
    bwe = _capped()
    bwe.hold(10.0)
    assert bwe.start_probe(11.0, wanted=True) is None  # not calm for `hold` (1.5 s) yet
    rate = bwe.start_probe(11.6, wanted=True)
    assert rate is not None
    bwe.hold(11.8)  # loss during the probe fails it
    assert bwe.probe is None and bwe.failed_probes == 1
