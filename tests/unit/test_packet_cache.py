import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.packet_cache import PacketCache


def pkt(seq: int) -> bytes:
    return seq.to_bytes(2, "big") + b"payload"


@pytest.mark.parametrize(
    ("requested", "capacity"), [(1, 1), (2, 2), (3, 4), (8, 8), (1000, 1024), (1024, 1024)]
)
def test_capacity_rounds_up_to_power_of_two(requested, capacity):
    assert PacketCache(requested).capacity == capacity


@pytest.mark.parametrize("capacity", [0, -1])
def test_rejects_non_positive_capacity(capacity):
    with pytest.raises(ValueError):
        PacketCache(capacity)


def test_empty_cache():
    cache = PacketCache(16)
    assert cache.get(0) is None
    assert cache.get(12345) is None
    assert len(cache) == 0
    assert cache.newest is None


def test_store_and_get_with_meta():
    cache = PacketCache(16)
    meta = object()
    cache.store(100, b"a", meta)
    cache.store(101, b"b")
    assert cache.get(100) == (b"a", meta)
    assert cache.get(100)[1] is meta
    assert cache.get(101) == (b"b", None)
    assert cache.newest == 101
    assert len(cache) == 2
    assert 100 in cache
    assert 99 not in cache


def test_never_stored_in_window_is_none():
    cache = PacketCache(16)
    cache.store(10, b"a")
    cache.store(13, b"b")
    assert cache.get(11) is None
    assert cache.get(12) is None
    assert cache.get(14) is None  # newer than anything stored
    assert len(cache) == 2


def test_overwritten_slot_returns_none():
    cache = PacketCache(4)
    for seq in range(5):
        cache.store(seq, pkt(seq))
    assert cache.get(0) is None  # slot 0 now holds seq 4
    assert cache.get(4) == (pkt(4), None)
    for seq in range(1, 4):
        assert cache.get(seq) == (pkt(seq), None)
    assert len(cache) == 4


def test_too_old_without_overwrite_returns_none():
    cache = PacketCache(8)
    cache.store(3, b"old")
    cache.store(20, b"new")  # slot 4; slot 3 still holds seq 3
    assert cache.get(3) is None
    assert cache.get(20) == (b"new", None)
    assert len(cache) == 1


def test_slot_from_an_earlier_cycle_is_not_returned():
    cache = PacketCache(16)
    cache.store(7, b"first cycle")
    # Advance a whole 65536 cycle without ever touching slot 7.
    for ext in range(1024, 65536 + 1, 1024):
        cache.store(ext & 0xFFFF, b"x")
    assert cache.newest == 0
    assert cache.get(7) is None  # would be "newer than newest"
    cache.store(16, b"y")  # ext 65552: seq 7 (ext 65543) is inside the window now
    assert cache.get(7) is None


def test_wraparound():
    cache = PacketCache(16)
    seqs = [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]
    for seq in seqs:
        cache.store(seq, pkt(seq))
    for seq in seqs:
        assert cache.get(seq) == (pkt(seq), None)
    assert cache.newest == 5
    assert cache.get(65529) is None
    assert cache.get(6) is None
    assert len(cache) == len(seqs)


def test_window_across_wrap_drops_old_side():
    cache = PacketCache(8)
    for seq in [65532, 65533, 65534, 65535, 0, 1, 2, 3, 4]:
        cache.store(seq, pkt(seq))
    # Window is the last 8 sequence numbers: 65533..4.
    assert cache.get(65532) is None
    assert cache.get(65533) == (pkt(65533), None)
    assert cache.get(4) == (pkt(4), None)


def test_reordered_store_across_wrap():
    cache = PacketCache(16)
    for seq in [65534, 0, 65535, 2, 1]:
        cache.store(seq, pkt(seq))
    assert cache.newest == 2
    for seq in [65534, 65535, 0, 1, 2]:
        assert cache.get(seq) == (pkt(seq), None)


def test_late_store_within_window():
    cache = PacketCache(16)
    cache.store(10, b"10")
    cache.store(12, b"12")
    cache.store(11, b"11")
    assert cache.newest == 12
    assert cache.get(11) == (b"11", None)


def test_late_store_before_first_packet():
    cache = PacketCache(16)
    cache.store(0, b"0")
    cache.store(65535, b"65535")
    assert cache.newest == 0
    assert cache.get(65535) == (b"65535", None)
    assert cache.get(0) == (b"0", None)


def test_late_store_outside_window_is_ignored():
    cache = PacketCache(8)
    for seq in range(100, 110):
        cache.store(seq, pkt(seq))
    cache.store(90, b"late")
    assert cache.get(90) is None
    assert cache.get(109) == (pkt(109), None)
    assert cache.newest == 109


def test_duplicate_store_replaces_data():
    cache = PacketCache(8)
    cache.store(5, b"a", 1)
    cache.store(5, b"b", 2)
    assert cache.get(5) == (b"b", 2)
    assert len(cache) == 1


def test_big_forward_jump_invalidates_everything_older():
    cache = PacketCache(16)
    for seq in range(10):
        cache.store(seq, pkt(seq))
    cache.store(20000, b"far")
    for seq in range(10):
        assert cache.get(seq) is None
    assert cache.get(20000) == (b"far", None)
    assert len(cache) == 1


def test_clear():
    cache = PacketCache(8)
    for seq in range(20000, 20005):
        cache.store(seq, pkt(seq))
    cache.clear()
    assert len(cache) == 0
    assert cache.newest is None
    for seq in range(20000, 20005):
        assert cache.get(seq) is None
    cache.store(5000, b"x")  # far behind the old reference: kept, as none remains
    assert cache.get(5000) == (b"x", None)
    assert cache.newest == 5000


def test_sequence_restart_backwards_starts_over():
    cache = PacketCache(8)
    for seq in range(20000, 20004):
        cache.store(seq, pkt(seq))
    cache.store(5000, pkt(5000))
    cache.store(5001, pkt(5001))
    assert cache.get(5000) == (pkt(5000), None)
    assert cache.get(5001) == (pkt(5001), None)
    assert cache.get(20003) is None
    assert cache.newest == 5001
    cache.store(5002, pkt(5002))
    assert cache.get(5002) == (pkt(5002), None)


def test_single_stray_old_packet_does_not_restart():
    cache = PacketCache(8)
    for seq in range(20000, 20004):
        cache.store(seq, pkt(seq))
    cache.store(5000, b"stray")
    cache.store(20004, pkt(20004))
    cache.store(5001, b"stray too")  # successor of the stray one, but not consecutive
    assert cache.get(20003) == (pkt(20003), None)
    assert cache.get(20004) == (pkt(20004), None)
    assert cache.get(5000) is None
    assert cache.get(5001) is None
    assert cache.newest == 20004


def test_late_consecutive_retransmissions_do_not_restart():
    # Late by more than the window but less than a restart distance: dropped, no reset.
    cache = PacketCache(8)
    for seq in range(1000, 1101):
        cache.store(seq, pkt(seq))
    cache.store(1050, b"rtx")
    cache.store(1051, b"rtx")
    assert cache.get(1100) == (pkt(1100), None)
    assert cache.get(1050) is None
    assert cache.newest == 1100


@given(
    st.sampled_from([1, 2, 4, 8, 16]),
    st.integers(0, 0xFFFF),
    st.lists(st.integers(-20, 60), max_size=150),
)
def test_matches_reference_model(capacity, start, steps):
    """get(e) returns the last data stored for e iff e is accepted and in the window."""
    cache = PacketCache(capacity)
    model: dict[int, bytes] = {}
    ext = start
    newest = start
    counter = 0
    for step in [0, *steps]:
        ext += step
        counter += 1
        data = counter.to_bytes(4, "big")
        cache.store(ext & 0xFFFF, data)
        if ext > newest - capacity:  # accepted
            model[ext] = data
            newest = max(newest, ext)
        assert cache.newest == newest & 0xFFFF
        for e in range(newest - capacity - 3, newest + 4):
            got = cache.get(e & 0xFFFF)
            if newest - capacity < e <= newest and e in model:
                assert got == (model[e], None)
            else:
                assert got is None
        assert len(cache) == sum(1 for e in model if newest - capacity < e <= newest)
