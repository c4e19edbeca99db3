"""The queuing delay behind a subscriber's link (sfu/gcc/queue_delay.py) and the rate
that arrived lately (``AcknowledgedRate.recent_rate``)."""

from __future__ import annotations

import pytest

from sfu.gcc.acknowledged import AcknowledgedRate
from sfu.gcc.packet import PacketResult
from sfu.gcc.queue_delay import QueueDelay

OFFSET = 1234.5  # the receiver's clock is far from the SFU's: only differences count


def through_link(sends: list[tuple[float, int]], rate: float) -> list[PacketResult]:
    """Packets (send time, size) through a FIFO that drains at ``rate`` bit/s."""
    out = []
    free = 0.0
    for seq, (sent, size) in enumerate(sends):
        start = max(sent, free)
        free = start + size * 8 / rate
        out.append(PacketResult(seq, sent, size, OFFSET + free + 0.005))
    return out


def test_no_queue_on_a_link_that_keeps_up() -> None:
    queue = QueueDelay(threshold=0.08)
    sends = [(i * 0.01, 1000) for i in range(200)]  # 800 kbit/s
    results = through_link(sends, 2_000_000)
    for k in range(0, 200, 10):
        queue.update(results[k : k + 10], k * 0.01 + 0.1)
    delay = queue.delay(2.1)
    assert delay is not None and delay < 0.005
    assert not queue.standing(2.1)


def test_a_burst_into_a_narrow_link_stands_as_a_queue_once_its_tail_arrives() -> None:
    """A 1.5 Mbit/s stream whose frames go out in bursts hits a 300 kbit/s link: its
    packets arrive 34 ms apart, each later than the one before."""
    queue = QueueDelay(threshold=0.08)
    acked = AcknowledgedRate()
    sends = []
    for frame in range(60):  # 2 s clean at 15 fps, 12 packets a frame, one burst each
        sends += [(frame / 15 + i * 0.0001, 1200) for i in range(12)]
    clean = through_link(sends, 10_000_000)
    queue.update(clean, 4.0)
    acked.update(clean, 4.0)
    assert not queue.standing(4.0)
    later = [(4.0 + s, size) for s, size in sends[:120]]
    narrow = [PacketResult(len(sends) + r.seq, r.send_time, r.size, r.arrival)
              for r in through_link(later, 300_000)]  # fmt: skip
    arrived = sorted(narrow, key=lambda r: r.arrival or 0.0)
    stood = None
    now = 4.0
    for r in arrived:
        now = (r.arrival or 0.0) - OFFSET + 0.01
        queue.update([r], now)
        acked.update([r], now)
        if stood is None and queue.standing(now):
            stood = now
    # the queue shows within 0.2 s of the narrow link's first delays (the first frame's
    # packets queue 0-0.35 s), long before the whole burst has crossed
    assert stood is not None and stood < 4.0 + 0.45
    recent = acked.recent_rate(now)
    assert recent == pytest.approx(300_000, rel=0.05)
    long = acked.rate(now)
    assert long is not None and long == pytest.approx(300_000, rel=0.1)


def test_recent_rate_needs_a_few_packets_and_a_span() -> None:
    acked = AcknowledgedRate()
    acked.update(
        [PacketResult(0, 0.0, 1000, OFFSET), PacketResult(1, 0.0, 1000, OFFSET + 0.05)], 0.1
    )
    assert acked.recent_rate(0.1) is None


def test_stale_feedback_stands_no_queue() -> None:
    queue = QueueDelay(threshold=0.08, stale=1.0)
    queue.update([PacketResult(0, 0.0, 1000, OFFSET)], 0.0)
    queue.update([PacketResult(1, 0.01, 1000, OFFSET + 0.2)], 0.2)
    assert queue.standing(0.3)
    assert queue.delay(1.5) is None and not queue.standing(1.5)


def test_a_receiver_clock_that_starts_over_forgets_the_baseline() -> None:
    queue = QueueDelay(threshold=0.08)
    queue.update([PacketResult(i, i * 0.01, 1000, OFFSET + i * 0.01) for i in range(10)], 0.2)
    # the clock restarted 1000 s earlier: the new delays are not negative queues
    queue.update(
        [PacketResult(10 + i, 0.1 + i * 0.01, 1000, 5.0 + i * 0.01) for i in range(10)], 0.4
    )
    delay = queue.delay(0.4)
    assert delay is not None and abs(delay) < 0.001
