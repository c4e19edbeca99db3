import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.receive_stats import ReceiveStatistics, ReportBlockValues

VIDEO = 90000
AUDIO = 8000


def feed(stats: ReceiveStatistics, seqs, ts_step: int = 3000, dt: float = 1 / 30) -> None:
    """Packets as if sent every ``dt`` with timestamps ``ts_step`` apart, no jitter."""
    for seq in seqs:
        stats.add(seq & 0xFFFF, (seq * ts_step) & 0xFFFFFFFF, seq * dt)


def block(stats: ReceiveStatistics, now: float = 100.0) -> ReportBlockValues:
    return stats.report_block(0x1234, now)


# --- construction and empty state --------------------------------------------


@pytest.mark.parametrize("rate", [0, -8000])
def test_rejects_bad_clock_rate(rate):
    with pytest.raises(ValueError):
        ReceiveStatistics(rate)


def test_empty_report_is_all_zero():
    stats = ReceiveStatistics(VIDEO)
    assert stats.clock_rate == VIDEO
    assert stats.packets_received == 0
    assert stats.expected == 0
    assert stats.packets_lost == 0
    assert stats.highest_seq is None
    assert block(stats) == ReportBlockValues(0x1234, 0, 0, 0, 0, 0, 0)


def test_report_echoes_ssrc():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(3))
    assert stats.report_block(0xDEADBEEF, 1.0).ssrc == 0xDEADBEEF


def test_single_packet():
    stats = ReceiveStatistics(VIDEO)
    stats.add(4242, 0, 0.0)
    rb = block(stats)
    assert (stats.packets_received, stats.expected, stats.packets_lost) == (1, 1, 0)
    assert rb.highest_seq == 4242
    assert rb.fraction_lost == 0
    assert rb.jitter == 0


# --- loss ---------------------------------------------------------------------


def test_no_loss():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(100))
    rb = block(stats)
    assert stats.expected == 100
    assert stats.packets_received == 100
    assert rb.packets_lost == 0
    assert rb.fraction_lost == 0
    assert rb.highest_seq == 99


def test_loss_fraction_and_cumulative():
    stats = ReceiveStatistics(VIDEO)
    dropped = set(range(5, 100, 10))
    feed(stats, [s for s in range(100) if s not in dropped])
    rb = block(stats)
    assert stats.expected == 100
    assert stats.packets_received == 90
    assert stats.packets_lost == 10
    assert rb.packets_lost == 10
    assert rb.fraction_lost == (10 << 8) // 100 == 25


def test_fraction_lost_is_per_report_interval():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, [s for s in range(100) if s % 10 != 5])
    assert block(stats, 1.0).fraction_lost == 25

    feed(stats, range(100, 200))
    rb = block(stats, 2.0)
    assert rb.fraction_lost == 0
    assert rb.packets_lost == 10

    feed(stats, range(200, 300, 2))  # half of them: 200, 202, ..., 298
    rb = block(stats, 3.0)
    assert rb.fraction_lost == (49 << 8) // 99  # 201..298 expected, 49 of 99 missing
    assert rb.packets_lost == 59

    rb = block(stats, 4.0)  # nothing received or expected since
    assert rb.fraction_lost == 0
    assert rb.packets_lost == 59


def test_heavy_loss_fraction():
    stats = ReceiveStatistics(VIDEO)
    stats.add(0, 0, 0.0)
    block(stats, 0.0)
    stats.add(300, 0, 1.0)
    rb = block(stats, 1.0)
    assert rb.fraction_lost == (299 << 8) // 300 == 255
    assert rb.packets_lost == 299


def test_late_packet_in_next_interval_gives_zero_fraction_and_lowers_loss():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, [s for s in range(10) if s != 5])
    rb = block(stats, 1.0)
    assert rb.fraction_lost == (1 << 8) // 10
    assert rb.packets_lost == 1
    feed(stats, [5, 10, 11])
    rb = block(stats, 2.0)
    assert rb.fraction_lost == 0
    assert rb.packets_lost == 0


def test_packets_lost_clamped_to_24_bits():
    stats = ReceiveStatistics(VIDEO)
    ext = 0
    for _ in range(2800):
        stats.add(ext & 0xFFFF, 0, 0.0)
        ext += 2999  # the largest jump that is not a restart candidate
    assert stats.packets_lost == 2799 * 2998 > 0x7FFFFF
    rb = block(stats)
    assert rb.packets_lost == 0x7FFFFF
    assert rb.highest_seq == (2799 * 2999) & 0xFFFFFFFF


# --- wraparound and reordering --------------------------------------------------


def test_wraparound_extends_highest_seq():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(65500, 65536 + 101))
    rb = block(stats)
    assert rb.highest_seq == 0x10000 + 100
    assert stats.expected == 137
    assert rb.packets_lost == 0


def test_first_wrap():
    stats = ReceiveStatistics(VIDEO)
    stats.add(65535, 0, 0.0)
    stats.add(0, 3000, 0.033)
    assert block(stats).highest_seq == 0x10000
    assert stats.highest_seq == 65536


def test_many_wraps_cycle_count():
    stats = ReceiveStatistics(VIDEO)
    for ext in range(0, 3 * 65536 + 7, 1000):
        stats.add(ext & 0xFFFF, 0, 0.0)
    assert block(stats).highest_seq == (3 * 65536 + 7) // 1000 * 1000


def test_highest_seq_is_32_bit():
    # Sequence restarts 3000 back count forward by 62537 each: 2**32 in ~69k of them.
    stats = ReceiveStatistics(VIDEO)
    seq = 0
    stats.add(seq, 0, 0.0)
    while stats.highest_seq < 0xFFFF0000:
        seq = (seq - 3000) & 0xFFFF
        stats.add(seq, 0, 0.0)
        seq = (seq + 1) & 0xFFFF
        stats.add(seq, 0, 0.0)
    assert stats.packets_lost == 0
    while stats.highest_seq <= 0xFFFFFFFF:
        seq = (seq + 2000) & 0xFFFF
        stats.add(seq, 0, 0.0)
    ext = stats.highest_seq
    assert ext & 0xFFFF == seq
    rb = block(stats)
    assert rb.highest_seq == ext - 0x100000000
    assert rb.highest_seq < 0x10000


def test_reordering_across_wrap():
    stats = ReceiveStatistics(VIDEO)
    for seq in (65534, 0, 65535, 1):
        stats.add(seq, 0, 0.0)
    rb = block(stats)
    assert stats.packets_received == 4
    assert stats.expected == 4
    assert rb.packets_lost == 0
    assert rb.highest_seq == 0x10001
    assert stats.duplicates == 0


def test_late_packet_before_first_extends_expected():
    stats = ReceiveStatistics(VIDEO)
    stats.add(10, 0, 0.0)
    stats.add(8, 0, 0.0)
    assert stats.expected == 3
    assert stats.packets_lost == 1
    stats.add(9, 0, 0.0)
    assert stats.packets_lost == 0
    assert block(stats).highest_seq == 10


def test_late_packet_before_first_across_wrap():
    stats = ReceiveStatistics(VIDEO)
    stats.add(0, 0, 0.0)
    stats.add(65535, 0, 0.0)
    rb = block(stats)
    assert stats.expected == 2
    assert rb.packets_lost == 0
    assert rb.highest_seq == 0


# --- duplicates -----------------------------------------------------------------


def test_duplicates_are_not_counted():
    stats = ReceiveStatistics(VIDEO)
    for seq in [0, 1, 1, 2, 0, 3, 3, 3, 4]:
        stats.add(seq, 0, 0.0)
    rb = block(stats)
    assert stats.packets_received == 5
    assert stats.duplicates == 4
    assert rb.packets_lost == 0
    assert rb.fraction_lost == 0


def test_duplicates_across_wrap():
    stats = ReceiveStatistics(VIDEO)
    for seq in [65534, 65535, 0, 65535, 1, 0, 65534]:
        stats.add(seq, 0, 0.0)
    assert stats.packets_received == 4
    assert stats.duplicates == 3
    assert stats.packets_lost == 0
    assert block(stats).highest_seq == 0x10001


def test_old_duplicate_within_window_detected():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(1100))
    stats.add(200, 0, 40.0)
    assert stats.duplicates == 1
    assert stats.packets_received == 1100
    assert stats.packets_lost == 0


def test_missing_packet_arriving_late_is_not_a_duplicate():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, [s for s in range(1100) if s != 300])
    assert stats.packets_lost == 1
    stats.add(300, 0, 40.0)
    assert stats.duplicates == 0
    assert stats.packets_lost == 0


# --- jumps and restarts ------------------------------------------------------------


def test_forward_gap_below_dropout_counts_as_loss():
    stats = ReceiveStatistics(VIDEO)
    stats.add(0, 0, 0.0)
    stats.add(2000, 0, 0.0)
    assert stats.packets_lost == 1999


def test_single_far_packet_is_ignored():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(10))
    stats.add(30000, 0, 1.0)
    feed(stats, [10])
    assert stats.packets_received == 11
    assert stats.expected == 11
    assert block(stats).highest_seq == 10


def test_packet_late_beyond_reorder_window_is_ignored():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(2001))
    # Late by 1500 (beyond the duplicate window), twice in a row: ignored, no restart.
    stats.add(500, 0, 70.0)
    stats.add(501, 0, 70.0)
    assert stats.packets_received == 2001
    assert stats.duplicates == 0
    feed(stats, [2001])
    assert stats.highest_seq == 2001
    assert stats.expected == 2002
    assert stats.packets_received == 2002


def test_restart_backwards_is_not_loss():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(20000, 20010))
    stats.add(5000, 0, 1.0)
    assert stats.packets_received == 10  # held until confirmed
    stats.add(5001, 3000, 1.03)
    stats.add(5002, 6000, 1.06)
    rb = block(stats)
    assert stats.packets_received == 13
    assert stats.expected == 13
    assert rb.packets_lost == 0
    assert rb.highest_seq & 0xFFFF == 5002
    assert rb.highest_seq > 20009  # keeps increasing
    stats.add(5004, 12000, 1.12)
    assert stats.packets_lost == 1


def test_restart_forwards_is_not_loss():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(10))
    stats.add(10000, 0, 1.0)
    stats.add(10001, 3000, 1.03)
    assert stats.packets_received == 12
    assert stats.packets_lost == 0
    assert stats.highest_seq == 10001


def test_restart_keeps_fraction_interval_consistent():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, [s for s in range(20) if s != 7])
    assert block(stats, 1.0).fraction_lost == (1 << 8) // 20
    stats.add(40000, 0, 2.0)
    stats.add(40001, 0, 2.0)
    feed(stats, range(40002, 40010))
    rb = block(stats, 3.0)
    assert rb.fraction_lost == 0
    assert rb.packets_lost == 1


# --- jitter ---------------------------------------------------------------------


def test_jitter_constant_delay_is_zero():
    stats = ReceiveStatistics(VIDEO)
    for i in range(500):
        stats.add(i & 0xFFFF, (1_000_000 + 3000 * i) & 0xFFFFFFFF, 12.5 + i / 30 + 0.05)
    assert stats.jitter < 1e-3
    assert block(stats).jitter == 0


def test_jitter_constant_delay_across_timestamp_wrap():
    stats = ReceiveStatistics(VIDEO)
    ts0 = 0xFFFFFFFF - 3000 * 10
    for i in range(30):
        stats.add(i, (ts0 + 3000 * i) & 0xFFFFFFFF, i / 30)
    assert stats.jitter < 1e-3


def test_jitter_first_step_is_one_sixteenth():
    stats = ReceiveStatistics(AUDIO)
    stats.add(0, 0, 0.0)
    stats.add(1, 160, 0.022)  # 2 ms late: D = 16 timestamp units
    assert stats.jitter == pytest.approx(1.0)
    stats.add(2, 320, 0.040)  # back on time: D = 16 again
    assert stats.jitter == pytest.approx(1.0 + (16 - 1.0) / 16)


def test_jitter_known_pattern_converges():
    # Every other packet 10 ms late: |D| = 80 units at 8 kHz for every packet.
    stats = ReceiveStatistics(AUDIO)
    for i in range(300):
        stats.add(i, 160 * i, i * 0.02 + (0.01 if i % 2 else 0.0))
    assert stats.jitter == pytest.approx(80.0, abs=0.01)
    assert 79 <= block(stats).jitter <= 80


def test_jitter_uses_timestamp_units_of_clock_rate():
    stats = ReceiveStatistics(VIDEO)
    for i in range(300):
        stats.add(i, 3000 * i, i / 30 + (0.01 if i % 2 else 0.0))
    assert stats.jitter == pytest.approx(900.0, abs=0.1)


def test_jitter_ignores_reordered_packets():
    stats = ReceiveStatistics(VIDEO)
    order = [0, 1, 2, 3, 4, 6, 7, 5, 8, 9]
    for seq in order:
        late = 0.2 if seq == 5 else 0.0
        stats.add(seq, 3000 * seq, seq / 30 + late)
    assert stats.jitter < 1e-3
    assert stats.packets_lost == 0


@given(st.lists(st.floats(0.0, 0.05), min_size=2, max_size=60))
def test_jitter_matches_rfc_formula_for_in_order_streams(delays):
    stats = ReceiveStatistics(AUDIO)
    expected = 0.0
    prev_transit = None
    for i, delay in enumerate(delays):
        arrival = i * 0.02 + delay
        stats.add(i, 160 * i, arrival)
        transit = arrival * AUDIO - 160 * i
        if prev_transit is not None:
            expected += (abs(transit - prev_transit) - expected) / 16
        prev_transit = transit
    assert stats.jitter == pytest.approx(expected, abs=1e-6)


# --- sender reports ----------------------------------------------------------------


def test_lsr_dlsr_zero_before_any_sender_report():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(5))
    rb = block(stats, 10.0)
    assert (rb.lsr, rb.dlsr) == (0, 0)


def test_lsr_dlsr_after_sender_report():
    stats = ReceiveStatistics(VIDEO)
    feed(stats, range(5))
    stats.on_sender_report(0x12345678_9ABCDEF0, 10.0)
    rb = stats.report_block(1, 11.5)
    assert rb.lsr == 0x56789ABC
    assert rb.dlsr == 3 * 32768  # 1.5 s in 1/65536 s
    assert stats.report_block(1, 10.0).dlsr == 0


def test_latest_sender_report_wins():
    stats = ReceiveStatistics(VIDEO)
    stats.on_sender_report(0xAAAAAAAA_BBBBBBBB, 1.0)
    stats.on_sender_report(0x11112222_33334444, 2.0)
    rb = stats.report_block(1, 2.25)
    assert rb.lsr == 0x22223333
    assert rb.dlsr == 16384


def test_sender_report_without_packets():
    stats = ReceiveStatistics(VIDEO)
    stats.on_sender_report(0x00000001_00010000, 5.0)
    rb = stats.report_block(9, 5.5)
    assert rb == ReportBlockValues(9, 0, 0, 0, 0, 0x00010001, 32768)


def test_dlsr_clamped():
    stats = ReceiveStatistics(VIDEO)
    stats.on_sender_report(0, 5.0)
    assert stats.report_block(1, 4.0).dlsr == 0  # clock went backwards: no negative
    assert stats.report_block(1, 5.0 + 70000.0).dlsr == 0xFFFFFFFF


# --- property: any arrival order of a window --------------------------------------


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 400), min_size=1, max_size=300),
)
def test_any_order_within_window(start, offsets):
    """Any order, with duplicates, of packets within the reorder window."""
    stats = ReceiveStatistics(VIDEO)
    for off in offsets:
        stats.add((start + off) & 0xFFFF, 0, 0.0)
    distinct = set(offsets)
    span = max(distinct) - min(distinct) + 1
    assert stats.packets_received == len(distinct)
    assert stats.duplicates == len(offsets) - len(distinct)
    assert stats.expected == span
    assert stats.packets_lost == span - len(distinct) >= 0
    rb = block(stats)
    assert rb.highest_seq & 0xFFFF == (start + max(distinct)) & 0xFFFF
    assert rb.fraction_lost == ((span - len(distinct)) << 8) // span
