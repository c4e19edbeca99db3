"""When probes go out and what their outcome does (sfu/gcc/probing.py)."""

from __future__ import annotations

import pytest

from sfu.gcc.feedback_path import PyFeedbackPath
from sfu.gcc.packet import PacketResult
from sfu.gcc.probing import Probing
from sfu.gcc.settings import GccSettings


def test_probe_sizes_and_backoff() -> None:
    probing = Probing(GccSettings())
    probe = probing.start(10.0, 300_000, 250_000, 150_000)
    assert probe.target == pytest.approx(600_000)  # 2 x the estimate (above acked)
    assert not probing.due(10.5)
    probing.done(11.0, False, "queue")
    assert not probing.due(12.9) and probing.due(13.0)  # 2 s after a failure
    probing.start(13.0, 300_000, None, 150_000)
    probing.done(14.0, False, "queue")
    assert not probing.due(16.9) and probing.due(17.0)  # then 3 s (at most)
    assert probing.failed == 2 and probing.streak == 0
    # a failure leaves a floor for delay-based decreases, for a second: where it probed
    # from (the queue behind it was the probe's)
    assert probing.floor(14.5) == pytest.approx(300_000)
    assert probing.floor(15.1) == 0.0


def test_an_estimate_grown_past_the_link_is_not_probed_from() -> None:
    """The estimate grew to 370 k while 220 k was sent (nothing to overuse the link
    with); the path carried 280 k at the last decrease: a probe goes from there, not
    from 370 k (which would send 740 k into a 300 k link)."""
    probing = Probing(GccSettings())
    probe = probing.start(10.0, 370_000, 220_000, 220_000, link=280_000)
    assert probe.target == pytest.approx(560_000)
    probing.done(10.4, False, "queue")
    assert probing.floor(10.5) == pytest.approx(280_000)
    # what is acknowledged now is more than the link then: from there
    probe = probing.start(20.0, 370_000, 330_000, 330_000, link=280_000)
    assert probe.target == pytest.approx(660_000)
    probing.done(20.5, True, "ok")
    # after a success the estimate was measured: from it
    probe = probing.start(21.0, 600_000, 330_000, 330_000, link=280_000)
    assert probe.target == pytest.approx(3 * 600_000)


def test_success_grows_the_next_probe_and_a_failure_after_it_retries_soon() -> None:
    probing = Probing(GccSettings())
    probing.start(10.0, 300_000, None, 150_000)
    probing.done(11.0, True, "ok")
    assert probing.due(11.0) and probing.ok == 1 and probing.streak == 1
    probe = probing.start(11.0, 570_000, 400_000, 500_000)
    assert probe.target == pytest.approx(3 * 570_000)
    probing.done(12.0, False, "saturated")
    assert not probing.due(12.9) and probing.due(13.0)


def test_a_cluster_sent_below_its_target_is_neither_a_failure_nor_the_end_of_a_run() -> None:
    """ "not sent" (the media it was padded up from fell, or the loop ran late) proves
    nothing about the link: no failure's wait or floor, the run of successes goes on
    (the next cluster still grows 3x from the estimate), and it is retried soon."""
    probing = Probing(GccSettings())
    probing.start(10.0, 300_000, None, 150_000)
    probing.done(11.0, True, "ok")
    probing.start(11.0, 570_000, 400_000, 500_000, link=290_000)
    probing.done(11.5, False, "not sent")
    assert probing.failed == 0 and probing.streak == 1 and probing.floor(11.6) == 0.0
    assert not probing.due(12.4) and probing.due(12.5)  # probe_retry
    probe = probing.start(12.5, 570_000, 400_000, 500_000, link=290_000)
    assert probe.target == pytest.approx(3 * 570_000)  # not from the old link's 290 k


def test_loss_inside_probe_spans_is_left_out() -> None:
    probing = Probing(GccSettings())
    probe = probing.start(10.0, 300_000, None, 150_000)
    results = [PacketResult(i, 9.5 + i * 0.1, 1000, None) for i in range(30)]
    probing.collect(results)
    outside = PyFeedbackPath().update(results, 12.5, probing.spans).outside
    # sent before the cluster, or after it and the 0.3 s its queue takes to drain
    counted = [r for r in results if r.send_time < 10.0 or r.send_time >= probe.end + 0.3]
    assert outside is not None and outside.packets == outside.lost == len(counted) < len(results)
    assert len(probe.packets) == sum(1 for r in results if 10.0 <= r.send_time < probe.end)
