"""sfu.bwe.BandwidthEstimator: REMB drops and loss cap the estimate; calm lifts it."""

from __future__ import annotations

import pytest

from sfu.bwe import BandwidthEstimator, BweSettings


def test_no_signal_no_limit():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_800_000, 0.0)
    for t in range(1, 10):
        bwe.on_remb(300_000 + 50_000 * t, float(t))  # growing after a switch up: no drop
        bwe.on_loss(0.0, float(t))
    assert bwe.estimate(10.0) is None


def test_a_remb_drop_below_what_is_sent_caps_the_estimate():
    bwe = BandwidthEstimator()
    bwe.on_sent(1_800_000, 0.0)
    bwe.on_remb(2_400_000, 0.5)
    bwe.on_remb(2_300_000, 1.0)  # -4 %: not a drop
    assert bwe.estimate(1.0) is None
    bwe.on_remb(260_000, 1.5)  # overuse
    assert bwe.estimate(1.5) == 260_000
    assert bwe.events[-1][1] == "remb"


def test_a_remb_drop_above_what_is_sent_is_not_congestion():
    bwe = BandwidthEstimator()
    bwe.on_sent(150_000, 0.0)
    bwe.on_remb(900_000, 0.5)
    bwe.on_remb(600_000, 1.0)  # dropped, but still 4x what is sent
    assert bwe.estimate(1.0) is None


def test_heavy_loss_caps_at_sent_times_one_minus_half_the_loss():
    bwe = BandwidthEstimator()
    bwe.on_sent(2_000_000, 0.0)
    bwe.on_loss(0.6, 0.5)
    assert bwe.estimate(0.5) == pytest.approx(2_000_000 * 0.7)
    bwe.on_sent(1_000_000, 1.0)
    bwe.on_loss(0.5, 1.2)  # too soon after the last decrease
    assert bwe.estimate(1.2) == pytest.approx(1_400_000)
    bwe.on_loss(0.5, 1.5)
    assert bwe.estimate(1.5) == pytest.approx(750_000)


def test_small_loss_holds_and_calm_grows_then_lifts():
    s = BweSettings(hold=2.0, growth=1.25, max_bitrate=5_000_000)
    bwe = BandwidthEstimator(s)
    bwe.on_sent(1_000_000, 0.0)
    bwe.on_loss(0.5, 0.0)
    cap = bwe.estimate(0.0)
    assert cap == pytest.approx(750_000)
    bwe.on_loss(0.05, 1.5)  # 5 %: hold
    assert bwe.estimate(3.0) == pytest.approx(cap)  # within hold of the last signal
    assert bwe.estimate(4.5) == pytest.approx(cap * 1.25)  # 1 s of growth after 3.5
    t = 4.5
    while bwe.estimate(t) is not None:
        t += 0.5
        assert t < 30
    # 750 kbit/s to above 5 Mbit/s at +25 %/s: about 8.5 s of growth
    assert 11.0 <= t <= 13.5


def test_growth_reaches_two_megabits_within_fifteen_seconds_of_a_300k_cap():
    """Issue 6's recovery bound: from a 300 kbit/s link back to the top layer in 15 s."""
    bwe = BandwidthEstimator()
    bwe.on_sent(300_000, 0.0)
    bwe.on_remb(400_000, 0.0)
    bwe.on_remb(260_000, 0.2)
    t = 0.2
    while (bwe.estimate(t) or 1e12) < 1.15 * 1_800_000:
        t += 0.25
        bwe.on_sent(150_000, t)
    assert t - 0.2 < 12.0


def test_the_cap_never_goes_below_the_minimum():
    bwe = BandwidthEstimator(BweSettings(min_bitrate=30_000))
    bwe.on_sent(40_000, 0.0)
    bwe.on_loss(0.99, 0.0)
    assert bwe.estimate(0.0) == 30_000
