"""sfu/twcc_feedback.py: transport-cc feedback joined with the egress's send history."""

from __future__ import annotations

import pytest

from sfu.gcc.packet import PacketResult
from sfu.rtp.twcc import REFERENCE_UNIT, build_transport_feedback, parse_transport_feedback
from sfu.twcc_feedback import TransportFeedbackAdapter
from tests.unit.test_native import Wire
from tests.unit.test_twcc_egress import TWCC_ID, packet


class History:
    """What an egress remembers: seq -> (seq, send time, size), by the low 16 bits."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, float, int]] = {}

    def add(self, seq: int, sent: float, size: int = 1000) -> None:
        self.entries[seq & 0xFFFF] = (seq, sent, size)

    def __call__(self, seq16: int) -> tuple[int, float, int] | None:
        return self.entries.get(seq16)


def feedback(base: int, arrivals: list[float | None], count: int, ref: int | None = None):
    return parse_transport_feedback(
        build_transport_feedback(base, arrivals, count, reference_ticks=ref)
    )


def test_packets_get_send_time_size_and_arrival() -> None:
    history = History()
    for seq in range(10, 15):
        history.add(seq, 100.0 + seq * 0.01, 500 + seq)
    adapter = TransportFeedbackAdapter()
    out = adapter.on_feedback(feedback(10, [2.0, None, 2.01, 2.0125, 2.03], 0), history)
    assert [r.seq for r in out] == [10, 11, 12, 13, 14]
    assert [r.size for r in out] == [510, 511, 512, 513, 514]
    assert out[0].send_time == pytest.approx(100.1)
    assert out[1].arrival is None and not out[1].received
    assert [r.arrival for r in out if r.arrival is not None] == pytest.approx(
        [2.0, 2.01, 2.0125, 2.03]
    )


def test_sequence_numbers_unwrap_across_65535() -> None:
    history = History()
    for seq in range(65530, 65546):
        history.add(seq, float(seq - 65530))
    adapter = TransportFeedbackAdapter()
    first = adapter.on_feedback(feedback(65530, [1.0 + i * 0.001 for i in range(4)], 1), history)
    assert [r.seq for r in first] == [65530, 65531, 65532, 65533]
    second = adapter.on_feedback(feedback(65534, [1.01 + i * 0.001 for i in range(8)], 2), history)
    assert [r.seq for r in second] == list(range(65534, 65542))
    assert [r.send_time for r in second] == [float(s - 65530) for s in range(65534, 65542)]


def test_packets_not_in_history_are_skipped() -> None:
    history = History()
    history.add(5, 1.0)
    history.add(7, 1.1)
    history.add(65536 + 6, 9.0)  # the same low 16 bits as 6, another wrap
    adapter = TransportFeedbackAdapter()
    out = adapter.on_feedback(feedback(5, [1.0, 1.001, 1.002], 0), history)
    assert [r.seq for r in out] == [5, 7]
    assert adapter.unknown == 1


def test_duplicate_and_old_feedback_is_ignored() -> None:
    history = History()
    for seq in range(0, 20):
        history.add(seq, seq * 0.01)
    adapter = TransportFeedbackAdapter()
    assert len(adapter.on_feedback(feedback(0, [1.0] * 5, 7), history)) == 5
    assert adapter.on_feedback(feedback(0, [1.0] * 5, 7), history) == []  # duplicate
    assert adapter.on_feedback(feedback(5, [1.0] * 5, 6), history) == []  # older count
    assert adapter.ignored == 2
    # count wraps 255 -> 0 fine; a packet reported received is not reported again,
    # one reported lost is reported again when it arrives late
    adapter = TransportFeedbackAdapter()
    assert len(adapter.on_feedback(feedback(0, [1.0, None, 1.01], 255), history)) == 3
    again = adapter.on_feedback(feedback(0, [1.0, 1.02, 1.03, 1.04], 0), history)
    assert [(r.seq, r.received) for r in again] == [(1, True), (3, True)]
    assert adapter.feedbacks == 2


def test_reference_time_unwraps_across_24_bits() -> None:
    history = History()
    for seq in range(6):
        history.add(seq, seq * 0.05)
    adapter = TransportFeedbackAdapter()
    top = 0x7FFFFF  # the highest signed value: the next tick wraps to -2^23
    a = adapter.on_feedback(feedback(0, [top * REFERENCE_UNIT + 0.01] * 3, 1, ref=top), history)
    low = -(1 << 23) * REFERENCE_UNIT  # what 0x800000 reads as (signed 24 bits)
    b = adapter.on_feedback(
        feedback(3, [low + 0.01 + 0.01 * i for i in range(3)], 2, ref=0x800000), history
    )
    arrivals = [r.arrival for r in a + b]
    assert all(x is not None for x in arrivals)
    assert arrivals[3] - arrivals[0] == pytest.approx(REFERENCE_UNIT)  # type: ignore[operator]
    # and across the unsigned wrap 0xFFFFFF -> 0
    adapter = TransportFeedbackAdapter()
    c = adapter.on_feedback(feedback(0, [0.001 - REFERENCE_UNIT] * 3, 1, ref=0xFFFFFF), history)
    d = adapter.on_feedback(feedback(3, [0.001] * 3, 2, ref=0), history)
    assert d[0].arrival - c[0].arrival == pytest.approx(REFERENCE_UNIT)  # type: ignore[operator]


def test_with_a_real_egress_history() -> None:
    wire = Wire()
    try:
        egress = wire.egress
        egress.twcc_id = TWCC_ID
        egress.twcc_next = 65534
        for i in range(6):
            assert egress.send(packet(i))
        assert len(wire.received()) == 6
        adapter = TransportFeedbackAdapter()
        fb = feedback(65534, [5.0, 5.001, None, 5.003, 5.004, 5.005], 0)
        out = adapter.on_feedback(fb, egress.history)
        assert [r.seq for r in out] == list(range(65534, 65540))
        assert all(isinstance(r, PacketResult) for r in out)
        assert [r.received for r in out] == [True, True, False, True, True, True]
        assert all(r.size == len(packet(0)) for r in out)
        sends = [r.send_time for r in out]
        assert sends == sorted(sends)
    finally:
        wire.close()


def test_what_was_reported_is_remembered_in_bounded_memory() -> None:
    import tracemalloc

    from sfu import twcc_feedback
    from sfu.twcc_feedback import REPORTED_MEMORY

    history = History()
    adapter = TransportFeedbackAdapter()
    tracemalloc.start()
    try:
        start = tracemalloc.take_snapshot()
        base, count, t = 0, 0, 1.0
        for _ in range(300):  # 30 000 packets reported, 100 per feedback
            for seq in range(base, base + 100):
                history.add(seq, t)
            arrivals: list[float | None] = [t + i * 0.0005 for i in range(100)]
            out = adapter.on_feedback(feedback(base & 0xFFFF, arrivals, count & 0xFF), history)
            assert len(out) == 100
            base, count, t = base + 100, count + 1, t + 0.05
        grown = sum(
            s.size_diff
            for s in tracemalloc.take_snapshot().compare_to(start, "filename")
            if s.traceback[0].filename == twcc_feedback.__file__
        )
    finally:
        tracemalloc.stop()
    # a ring of 9 bytes a number (and the last feedback's results), not an entry per report
    assert grown < 20 * REPORTED_MEMORY
    # the last numbers are still known: reported again, they are not news
    again = adapter.on_feedback(feedback((base - 100) & 0xFFFF, arrivals, count & 0xFF), history)
    assert again == []
