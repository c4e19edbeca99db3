"""A transport-cc subscriber whose link is known to be limited gets no redundancy."""

from __future__ import annotations

from sfu.congestion import CongestionController, ReportBlock
from sfu.gcc.estimator import SendSideEstimator


def test_a_standing_cap_counts_as_congested_long_after_the_decrease() -> None:
    bwe = SendSideEstimator()
    assert not bwe.congested(0.0)
    bwe.on_sent(1_000_000.0, 0.0)
    assert bwe.on_overflow(1.0)
    assert bwe.cap is not None
    assert bwe.congested(30.0)  # no decrease for 29 s, but the cap stands


def test_loss_on_a_limited_link_does_not_send_audio_twice() -> None:
    ctl = CongestionController()
    ctl.use_transport_cc()
    ctl.bwe.on_sent(1_000_000.0, 0.0)
    assert ctl.bwe.on_overflow(1.0)
    block = ReportBlock(ssrc=1, fraction_lost=13, highest=1000, cumulative_lost=50, link_loss=0.05)
    assert not ctl.on_report(block, 20.0)  # 5 % lost, 19 s after the decrease
    unlimited = CongestionController()
    unlimited.use_transport_cc()
    assert unlimited.on_report(block, 20.0)  # random loss on a free link: redundancy
