import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.seq import SeqUnwrapper, seq_add, seq_diff, seq_newer

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


# --- seq_add ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(0, 1, 1), (65535, 1, 0), (65535, 2, 1), (0, -1, 65535), (100, 65536, 100), (1, -2, 65535)],
)
def test_seq_add_16(a, b, expected):
    assert seq_add(a, b) == expected


def test_seq_add_32():
    assert seq_add(0xFFFFFFFF, 1, bits=32) == 0
    assert seq_add(0xFFFFFF00, 0x200, bits=32) == 0x100
    assert seq_add(0, -1, bits=32) == 0xFFFFFFFF
    # 32-bit arithmetic is not truncated to 16 bits.
    assert seq_add(0xFFFF, 1, bits=32) == 0x10000


# --- seq_diff ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (5, 3, 2),
        (3, 5, -2),
        (0, 65535, 1),
        (65535, 0, -1),
        (10, 65530, 16),
        (65530, 10, -16),
        (0x7FFF, 0, 0x7FFF),
        (0, 0x7FFF, -0x7FFF),
        (0x8000, 0, -0x8000),
        (0, 0x8000, -0x8000),
        (1234, 1234, 0),
    ],
)
def test_seq_diff_16(a, b, expected):
    assert seq_diff(a, b) == expected


def test_seq_diff_32():
    assert seq_diff(0, 0xFFFFFFFF, bits=32) == 1
    assert seq_diff(0xFFFFFFFF, 0, bits=32) == -1
    assert seq_diff(0x100, 0xFFFFFF00, bits=32) == 0x200
    assert seq_diff(0x80000000, 0, bits=32) == -0x80000000
    assert seq_diff(0x7FFFFFFF, 0, bits=32) == 0x7FFFFFFF
    # A 16-bit wrap is an ordinary step in 32-bit space.
    assert seq_diff(0x10000, 0xFFFF, bits=32) == 1
    assert seq_diff(0x10000, 0xFFFF) == 1


@given(u16, u16)
def test_seq_diff_range_and_inverse_16(a, b):
    d = seq_diff(a, b)
    assert -0x8000 <= d < 0x8000
    assert seq_add(b, d) == a


@given(u32, u32)
def test_seq_diff_range_and_inverse_32(a, b):
    d = seq_diff(a, b, bits=32)
    assert -0x80000000 <= d < 0x80000000
    assert seq_add(b, d, bits=32) == a


@given(u16, st.integers(-0x7FFF, 0x7FFF))
def test_seq_diff_recovers_small_steps(a, step):
    assert seq_diff(seq_add(a, step), a) == step


@given(u16, u16)
def test_seq_diff_antisymmetric_except_half(a, b):
    if seq_diff(a, b) != -0x8000:
        assert seq_diff(b, a) == -seq_diff(a, b)
    else:
        assert seq_diff(b, a) == -0x8000


# --- seq_newer ---------------------------------------------------------------


def test_seq_newer_basic_and_wrap():
    assert seq_newer(1, 0)
    assert not seq_newer(0, 1)
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    assert seq_newer(5, 65000)
    assert not seq_newer(7, 7)


def test_seq_newer_half_apart_is_decided_by_value():
    assert seq_newer(0x8000, 0)
    assert not seq_newer(0, 0x8000)
    assert seq_newer(0x8005, 5)
    assert not seq_newer(5, 0x8005)
    assert seq_newer(0x80000000, 0, bits=32)
    assert not seq_newer(0, 0x80000000, bits=32)


def test_seq_newer_32():
    assert seq_newer(0, 0xFFFFFFFF, bits=32)
    assert not seq_newer(0xFFFFFFFF, 0, bits=32)
    assert seq_newer(0x10000, 0xFFFF, bits=32)
    # In 16 bits 0 comes right after 0xFFFF; in 32 bits it is far before it.
    assert seq_newer(0, 0xFFFF)
    assert not seq_newer(0, 0xFFFF, bits=32)


@given(u16, u16)
def test_seq_newer_is_a_strict_tournament_16(a, b):
    if a == b:
        assert not seq_newer(a, b)
    else:
        assert seq_newer(a, b) != seq_newer(b, a)


@given(u32, u32)
def test_seq_newer_is_a_strict_tournament_32(a, b):
    if a == b:
        assert not seq_newer(a, b, bits=32)
    else:
        assert seq_newer(a, b, bits=32) != seq_newer(b, a, bits=32)


# --- SeqUnwrapper ------------------------------------------------------------


def test_unwrapper_first_value_maps_to_itself():
    u = SeqUnwrapper()
    assert u.last is None
    assert u.unwrap(1234) == 1234
    assert u.last == 1234


def test_unwrapper_forward_across_wrap():
    u = SeqUnwrapper()
    got = [u.unwrap(s) for s in (65533, 65534, 65535, 0, 1, 2)]
    assert got == [65533, 65534, 65535, 65536, 65537, 65538]


def test_unwrapper_many_wraps():
    u = SeqUnwrapper()
    got = [u.unwrap(i * 1000 & 0xFFFF) for i in range(300)]
    assert got == [i * 1000 for i in range(300)]


def test_unwrapper_late_packet_from_before_the_wrap():
    u = SeqUnwrapper()
    assert [u.unwrap(s) for s in (65534, 0, 1)] == [65534, 65536, 65537]
    assert u.unwrap(65535) == 65535
    assert u.unwrap(2) == 65538


def test_unwrapper_reordering_across_the_wrap():
    u = SeqUnwrapper()
    got = [u.unwrap(s) for s in (65534, 0, 65535, 2, 1, 3)]
    assert got == [65534, 65536, 65535, 65538, 65537, 65539]


def test_unwrapper_late_packet_before_first_goes_negative():
    u = SeqUnwrapper()
    assert u.unwrap(0) == 0
    assert u.unwrap(65535) == -1
    assert u.unwrap(1) == 1


def test_unwrapper_backward_wrap():
    u = SeqUnwrapper()
    assert u.unwrap(2) == 2
    assert u.unwrap(65530) == -6
    assert u.unwrap(65000) == -536


def test_unwrapper_32_bit_timestamps():
    u = SeqUnwrapper(bits=32)
    assert u.bits == 32
    assert u.unwrap(0xFFFFFF00) == 0xFFFFFF00
    assert u.unwrap(0x100) == 0x100000100
    assert u.unwrap(0xFFFFFFF0) == 0xFFFFFFF0  # late, from before the wrap
    assert u.unwrap(0x3000) == 0x100003000
    # A 16-bit-sized step is not a wrap in 32 bits.
    assert u.unwrap(0x13000) == 0x100013000


def test_unwrapper_reset():
    u = SeqUnwrapper()
    u.unwrap(65535)
    u.unwrap(0)
    u.reset()
    assert u.last is None
    assert u.unwrap(5) == 5


def test_unwrapper_rejects_bad_bits():
    with pytest.raises(ValueError):
        SeqUnwrapper(bits=1)


def test_unwrapper_masks_input():
    u = SeqUnwrapper()
    assert u.unwrap(0x10005) == 5


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.integers(-0x7FFF, 0x7FFF), max_size=200),
)
def test_unwrapper_reconstructs_true_values_16(start, steps):
    u = SeqUnwrapper()
    true = start
    assert u.unwrap(true & 0xFFFF) == true
    for step in steps:
        true += step
        assert u.unwrap(true & 0xFFFF) == true


@given(
    st.integers(0, 0xFFFFFFFF),
    st.lists(st.integers(-0x7FFFFFFF, 0x7FFFFFFF), max_size=100),
)
def test_unwrapper_reconstructs_true_values_32(start, steps):
    u = SeqUnwrapper(bits=32)
    true = start
    assert u.unwrap(true & 0xFFFFFFFF) == true
    for step in steps:
        true += step
        assert u.unwrap(true & 0xFFFFFFFF) == true
