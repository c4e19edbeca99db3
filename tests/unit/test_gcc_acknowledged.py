"""The acknowledged bitrate from transport-cc feedback (sfu/gcc/acknowledged.py)."""

from __future__ import annotations

import pytest

from sfu.gcc.acknowledged import AcknowledgedRate
from sfu.gcc.packet import PacketResult

CLOCK = 500.0  # the receiver's clock is ahead


def packets(start: int, count: int, send0: float, interval: float, spacing: float):
    """``count`` 1000-byte packets sent ``interval`` s apart, arriving ``spacing`` apart."""
    return [
        PacketResult(start + i, send0 + i * interval, 1000, CLOCK + send0 + 0.02 + i * spacing)
        for i in range(count)
    ]


def test_rate_is_what_arrived_over_the_window() -> None:
    acked = AcknowledgedRate(window=0.5)
    assert acked.rate(0.0) is None
    # 1000 bytes every 10 ms: 800 kbit/s sent and received
    for k in range(10):
        acked.update(packets(k * 10, 10, k * 0.1, 0.01, 0.01), k * 0.1 + 0.1)
    assert acked.rate(1.0) == pytest.approx(800_000, rel=0.05)
    assert acked.sent_rate(1.0) == pytest.approx(800_000, rel=0.05)


def test_a_bottleneck_shows_as_less_acknowledged_than_sent() -> None:
    acked = AcknowledgedRate(window=0.5)
    # sent every 10 ms (800 k), the path spreads them 25 ms apart (320 k): fed back
    # every 100 ms, what has arrived by then
    sent_all = [PacketResult(n, n * 0.01, 1000, CLOCK + 0.02 + n * 0.025) for n in range(200)]
    now = 0.0
    while sent_all:
        now += 0.1
        batch = [r for r in sent_all if r.arrival is not None and r.arrival - CLOCK <= now]
        del sent_all[: len(batch)]
        acked.update(batch, now)
    rate, sent = acked.rate(now), acked.sent_rate(now)
    assert rate is not None and sent is not None
    assert rate == pytest.approx(320_000, rel=0.1)
    assert sent == pytest.approx(800_000, rel=0.05)


def test_lost_packets_are_sent_not_acknowledged_and_stale_feedback_is_nothing() -> None:
    acked = AcknowledgedRate(window=0.5, stale=2.0)
    results = [
        PacketResult(i, i * 0.01, 1000, None if i % 2 else CLOCK + i * 0.01) for i in range(100)
    ]
    acked.update(results, 1.0)
    rate, sent = acked.rate(1.0), acked.sent_rate(1.0)
    assert rate is not None and sent is not None and rate == pytest.approx(sent / 2, rel=0.05)
    assert acked.rate(3.5) is None and acked.sent_rate(3.5) is None


def test_a_receiver_clock_that_starts_over_forgets_the_old_arrivals() -> None:
    acked = AcknowledgedRate(window=0.5)
    acked.update([PacketResult(i, i * 0.01, 1000, CLOCK + i * 0.01) for i in range(100)], 1.0)
    # the same stream, its arrivals now stamped on a clock 400 s behind
    later = [PacketResult(100 + i, 1.0 + i * 0.01, 1000, 100.0 + i * 0.01) for i in range(100)]
    acked.update(later, 2.0)
    assert acked.rate(2.0) == pytest.approx(800_000, rel=0.05)
