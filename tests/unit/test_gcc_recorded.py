"""The send-side estimator on real Chromium transport-cc feedback (recorded in
``tests/fixtures/chromium_transport_cc*.jsonl``: a parley bot's 320x240 VP8 + Opus to
headless Chromium over loopback, about 8 s)."""

from __future__ import annotations

import pytest

from sfu.gcc.estimator import SendSideEstimator

from .gcc_recorded import parse_feedback, recorded, through_bottleneck


def test_parser_reads_every_packet_once() -> None:
    clean = recorded("chromium_transport_cc.jsonl")
    seqs = [p.seq for _, results in clean for p in results]
    assert sorted(seqs) == list(range(800))
    assert all(p.arrival is not None for _, results in clean for p in results)
    lossy = recorded("chromium_transport_cc_loss.jsonl")
    assert sum(1 for _, r in lossy for p in r if p.arrival is None) == 29
    # (a compound without transport-cc feedback reports nothing)
    assert parse_feedback(bytes.fromhex("80c9000100000001")) == []


def test_clean_loopback_feedback_is_no_congestion() -> None:
    bwe = SendSideEstimator()
    states = set()
    for now, results in recorded("chromium_transport_cc.jsonl"):
        bwe.on_feedback(results, now)
        states.add(bwe.delay_state)
        if now > 1.0:
            acked, delivery = bwe.acknowledged_rate(now), bwe.acked(now)
            assert acked is not None and delivery is not None
            assert delivery.acked_share == pytest.approx(1.0, abs=0.15)
    assert bwe.estimate(now) is None and bwe.events == []
    assert "overusing" not in states
    assert bwe.link_keeps_up(now)


def test_recorded_five_percent_loss_holds_without_a_cap() -> None:
    bwe = SendSideEstimator()
    losses = []
    for now, results in recorded("chromium_transport_cc_loss.jsonl"):
        bwe.on_feedback(results, now)
        losses.append(bwe.loss)
    assert bwe.estimate(now) is None and bwe.events == []
    assert 0.02 <= max(losses) <= 0.10  # seen, and held on (no decrease)


def test_recorded_stream_through_a_narrow_link_is_capped_near_it() -> None:
    # the same packets through a 150 kbit/s bucket (the stream is ~250-500 k)
    bwe = SendSideEstimator()
    caps = []
    for now, results in through_bottleneck(recorded("chromium_transport_cc.jsonl"), 150_000):
        bwe.on_feedback(results, now)
        acked = bwe.acknowledged_rate(now)
        cap = bwe.estimate(now)
        if cap is not None:
            caps.append(cap)
            if acked is not None:
                # never far under what arrives: the 0.5 s acknowledged rate, or, while
                # its window still holds the time before the bottleneck, the link
                assert cap >= 0.8 * min(acked, 150_000) * 0.85
    assert caps and caps[-1] < 1.3 * 150_000 and min(caps) > 100_000, caps
    assert bwe.events[0][1] in ("delay", "loss")
