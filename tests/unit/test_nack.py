import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.nack import NackGenerator, pack_nack_items, unpack_nack_items


def gen_with(seqs, now: float = 0.0, **kwargs) -> NackGenerator:
    gen = NackGenerator(**kwargs)
    for seq in seqs:
        gen.add(seq, now)
    return gen


# --- construction --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_age": 0},
        {"max_retries": 0},
        {"retry_interval": -0.1},
        {"max_missing": 0},
        {"max_missing": 0x8000},
    ],
)
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        NackGenerator(**kwargs)


# --- tracking ------------------------------------------------------------------


def test_no_gap_nothing_due():
    gen = gen_with(range(100))
    assert gen.missing == []
    assert gen.due(0.0) == []
    assert len(gen) == 0


def test_first_packet_creates_no_gap():
    gen = gen_with([5000])
    assert gen.missing == []


def test_gap_is_missing_and_due_at_once():
    gen = gen_with([1, 2, 5])
    assert gen.missing == [3, 4]
    assert len(gen) == 2
    assert gen.due(0.0) == [3, 4]


def test_arrival_removes_missing():
    gen = gen_with([1, 2, 5])
    gen.add(3, 0.01)
    assert gen.missing == [4]
    assert gen.due(0.02) == [4]
    gen.add(4, 0.03)
    assert gen.missing == []
    assert gen.due(1.0) == []


def test_duplicate_changes_nothing():
    gen = gen_with([1, 2, 5, 5, 2])
    assert gen.missing == [3, 4]


def test_old_packet_not_missing_is_ignored():
    gen = gen_with([100, 101, 105, 90, 95])
    assert gen.missing == [102, 103, 104]
    gen.add(106, 0.0)
    assert gen.missing == [102, 103, 104]


def test_gap_across_wrap():
    gen = gen_with([65533, 65534, 1])
    assert gen.missing == [65535, 0]
    assert gen.due(0.0) == [65535, 0]


def test_reordering_across_wrap():
    gen = gen_with([65532, 65533, 0])
    assert gen.missing == [65534, 65535]
    gen.add(65535, 0.0)
    assert gen.missing == [65534]
    gen.add(2, 0.0)
    assert gen.missing == [65534, 1]
    gen.add(65534, 0.0)
    gen.add(1, 0.0)
    assert gen.missing == []


def test_missing_order_is_wraparound_aware():
    gen = gen_with([65530, 65532, 65535, 2])
    assert gen.missing == [65531, 65533, 65534, 0, 1]


# --- big jumps and limits ------------------------------------------------------


def test_jump_larger_than_max_missing_resets():
    gen = gen_with([0, 3, 20], max_missing=10)  # 16 would be missing
    assert gen.missing == []
    gen.add(22, 0.0)
    assert gen.missing == [21]  # tracking continues from the jump


def test_jump_of_exactly_max_missing_is_tracked():
    gen = gen_with([0, 11], max_missing=10)
    assert gen.missing == list(range(1, 11))


def test_default_max_missing_resets_on_thousands_of_gaps():
    gen = gen_with([0, 5000])
    assert gen.missing == []
    gen = gen_with([0, 513])
    assert len(gen.missing) == 512


def test_tracked_count_is_bounded_oldest_dropped():
    gen = gen_with([0, 6, 12, 18], max_missing=10)  # 15 gaps
    assert gen.missing == [7, 8, 9, 10, 11, 13, 14, 15, 16, 17]


def test_backward_restart_starts_over():
    gen = gen_with([20000, 20001, 20003])
    assert gen.missing == [20002]
    gen.add(1000, 1.0)
    gen.add(1001, 1.0)
    assert gen.missing == []
    gen.add(1003, 1.0)
    assert gen.missing == [1002]


def test_single_stray_old_packet_does_not_restart():
    gen = gen_with([20000, 20002, 1000, 20003, 1001])
    assert gen.missing == [20001]
    gen.add(20005, 0.0)
    assert gen.missing == [20001, 20004]


def test_late_consecutive_retransmissions_do_not_restart():
    # More than max_missing behind but not far enough to be a restart.
    gen = gen_with([0, 1000, 2000, 2002], max_missing=100)
    assert gen.missing == [2001]
    gen.add(1500, 0.0)
    gen.add(1501, 0.0)
    gen.add(2004, 0.0)
    assert gen.missing == [2001, 2003]


def test_reset():
    gen = gen_with([1, 5])
    gen.reset()
    assert gen.missing == []
    gen.add(30000, 0.0)
    gen.add(30002, 0.0)
    assert gen.missing == [30001]


# --- scheduling ----------------------------------------------------------------


def test_retry_spacing_uses_retry_interval():
    gen = gen_with([1, 3], retry_interval=0.1)
    assert gen.due(0.0) == [2]
    assert gen.due(0.0) == []
    assert gen.due(0.05) == []
    assert gen.due(0.1) == [2]
    assert gen.due(0.15) == []
    assert gen.due(0.2) == [2]
    assert gen.due(0.3) == [2]  # 0.3 - 0.2 is 0.0999... in floats: still due


def test_retry_spacing_uses_rtt_when_larger():
    gen = gen_with([1, 3], retry_interval=0.1)
    assert gen.due(0.0, rtt=0.3) == [2]
    assert gen.due(0.1, rtt=0.3) == []
    assert gen.due(0.25, rtt=0.3) == []
    assert gen.due(0.3, rtt=0.3) == [2]


def test_retry_spacing_ignores_smaller_rtt():
    gen = gen_with([1, 3], retry_interval=0.1)
    assert gen.due(0.0, rtt=0.01) == [2]
    assert gen.due(0.05, rtt=0.01) == []
    assert gen.due(0.1, rtt=0.01) == [2]


def test_new_gap_due_immediately_while_old_one_waits():
    gen = gen_with([1, 3])
    assert gen.due(0.0) == [2]
    gen.add(5, 0.02)
    assert gen.due(0.02) == [4]
    assert gen.due(0.1) == [2]
    assert gen.due(0.12) == [4]


def test_max_retries():
    gen = gen_with([1, 3], max_retries=3, retry_interval=0.1, max_age=10.0)
    sent = [t for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5) if gen.due(t) == [2]]
    assert sent == [0.0, 0.1, 0.2]
    assert gen.missing == []


def test_default_max_retries_is_ten():
    gen = gen_with([1, 3], max_age=100.0)
    count = sum(len(gen.due(i * 0.1)) for i in range(50))
    assert count == 10


def test_max_age_drops_unsent_and_sent():
    gen = NackGenerator(max_age=1.0, retry_interval=0.1)
    gen.add(1, 0.0)
    gen.add(3, 0.0)  # 2 missing since t=0
    assert gen.due(0.0) == [2]
    gen.add(5, 0.5)  # 4 missing since t=0.5
    assert gen.due(1.0) == [2, 4]  # exactly max_age: still due
    assert gen.due(1.2) == [4]  # 2 is older than max_age: dropped
    assert gen.missing == [4]
    assert gen.due(1.6) == []  # 4 is now older than max_age too
    assert gen.missing == []


def test_max_age_drops_never_sent():
    gen = gen_with([1, 3], now=0.0, max_age=0.5)
    assert gen.due(0.6) == []
    assert gen.missing == []


def test_arrival_after_nack_stops_retries():
    gen = gen_with([1, 3])
    assert gen.due(0.0) == [2]
    gen.add(2, 0.05)
    assert gen.due(0.1) == []
    assert gen.due(0.2) == []


def test_due_across_wrap_packs_into_one_item():
    gen = gen_with([65530, 4])
    due = gen.due(0.0)
    assert due == [65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3]
    assert pack_nack_items(due) == [(65531, 0xFF)]


# --- pack / unpack -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seqs", "items"),
    [
        ([], []),
        ([5], [(5, 0)]),
        ([5, 6], [(5, 0x0001)]),
        ([5, 7, 8], [(5, 0b110)]),
        ([5, 21], [(5, 0x8000)]),
        ([5, 22], [(5, 0), (22, 0)]),
        ([5, 6, 22, 23], [(5, 1), (22, 1)]),
        (list(range(100, 117)), [(100, 0xFFFF)]),
        (list(range(100, 118)), [(100, 0xFFFF), (117, 0)]),
        ([65535, 0], [(65535, 0x0001)]),
        ([65534, 65535, 0, 1], [(65534, 0b111)]),
        ([0, 65535], [(65535, 0x0001)]),
        ([65530, 10], [(65530, 1 << 15)]),
        ([3, 1, 2, 2, 1], [(1, 0b11)]),
    ],
)
def test_pack(seqs, items):
    assert pack_nack_items(seqs) == items


def test_pack_starts_after_largest_gap():
    # 40000 and 40001 are far from the wrap cluster: two items, wrap cluster intact.
    assert pack_nack_items([65535, 0, 40000, 40001]) == [(40000, 1), (65535, 1)]


def test_pack_masks_out_of_range_values():
    assert pack_nack_items([65536, 65537]) == [(0, 1)]


@pytest.mark.parametrize(
    ("items", "seqs"),
    [
        ([], []),
        ([(5, 0)], [5]),
        ([(5, 0b101)], [5, 6, 8]),
        ([(65535, 0b11)], [65535, 0, 1]),
        ([(65530, 0x8000)], [65530, 10]),
        ([(1, 0xFFFF)], list(range(1, 18))),
        ([(1, 1), (2, 1)], [1, 2, 3]),  # overlapping items: no repeats
    ],
)
def test_unpack(items, seqs):
    assert unpack_nack_items(items) == seqs


seq_sets = st.lists(st.integers(0, 0xFFFF), max_size=120)


@given(seq_sets)
def test_pack_unpack_round_trip(seqs):
    items = pack_nack_items(seqs)
    out = unpack_nack_items(items)
    assert sorted(out) == sorted(set(seqs))
    for pid, blp in items:
        assert 0 <= pid <= 0xFFFF
        assert 0 <= blp <= 0xFFFF
    assert len({pid for pid, _ in items}) == len(items)
    assert len(items) <= len(set(seqs))


@given(st.integers(0, 0xFFFF), st.sets(st.integers(1, 16)))
def test_pack_any_17_window_is_one_item(start, offsets):
    seqs = [(start + o) & 0xFFFF for o in offsets | {0}]
    assert pack_nack_items(seqs) == [(start, sum(1 << (o - 1) for o in offsets))]


@given(st.integers(0, 0xFFFF), st.lists(st.integers(1, 40), max_size=60))
def test_pack_clustered_run_is_circularly_ordered(start, steps):
    """A run spanning less than half the space unpacks in its own order, wrap or not."""
    seqs = [start]
    for step in steps:
        seqs.append((seqs[-1] + step) & 0xFFFF)
    assert unpack_nack_items(pack_nack_items(seqs)) == seqs


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), max_size=20))
def test_unpack_pack_covers_same_set(items):
    seqs = unpack_nack_items(items)
    assert len(seqs) == len(set(seqs))
    assert set(unpack_nack_items(pack_nack_items(seqs))) == set(seqs)


@given(st.integers(0, 0xFFFF), st.lists(st.integers(1, 30), min_size=1, max_size=40))
def test_generator_due_round_trips_through_pack(start, steps):
    gen = NackGenerator(max_missing=2000)
    seq = start
    gen.add(seq, 0.0)
    expected_missing = []
    for step in steps:
        expected_missing.extend((seq + k) & 0xFFFF for k in range(1, step))
        seq = (seq + step) & 0xFFFF
        gen.add(seq, 0.0)
    assert gen.missing == expected_missing
    due = gen.due(0.0)
    assert due == expected_missing
    assert unpack_nack_items(pack_nack_items(due)) == due
