"""Modular arithmetic on RTP sequence numbers (16 bit) and timestamps (32 bit).

Every function takes ``bits`` (16 by default); pass ``bits=32`` for RTP timestamps.
Inputs are expected to be in ``[0, 2**bits)``; results always are.
"""

from __future__ import annotations

__all__ = ["SeqUnwrapper", "seq_add", "seq_diff", "seq_newer"]


def seq_add(a: int, b: int, bits: int = 16) -> int:
    """``a + b`` modulo ``2**bits`` (``b`` may be negative)."""
    return (a + b) & ((1 << bits) - 1)


def seq_diff(a: int, b: int, bits: int = 16) -> int:
    """Signed shortest distance ``a - b`` in modular space.

    The result is in ``[-2**(bits-1), 2**(bits-1))``: when ``a`` and ``b`` are exactly
    half the space apart the distance is ``-2**(bits-1)`` in both directions.
    """
    half = 1 << (bits - 1)
    return ((a - b + half) & ((1 << bits) - 1)) - half


def seq_newer(a: int, b: int, bits: int = 16) -> bool:
    """Whether ``a`` comes after ``b``.

    For ``a != b`` exactly one of ``seq_newer(a, b)`` and ``seq_newer(b, a)`` holds:
    when they are exactly half the space apart, the larger value is the newer one
    (libwebrtc's ``IsNewerSequenceNumber`` convention).
    """
    half = 1 << (bits - 1)
    mask = (1 << bits) - 1
    d = ((a - b + half) & mask) - half
    if d == -half:
        return (a & mask) > (b & mask)
    return d > 0


class SeqUnwrapper:
    """Maps modular values (sequence numbers, timestamps) to unbounded integers.

    The first value maps to itself. Each following value is placed at the shortest
    modular distance from the previous one, so counting continues across wraparound
    (65535 -> 0 gives 65535 -> 65536) and a late packet from before a wrap maps below
    it (65536, then 65535 arrives -> 65535). A late value from before the very first
    one may map below zero.

    The reference is the previously unwrapped value (not the highest), so a sender
    that jumps anywhere keeps being tracked from where it now is.
    """

    __slots__ = ("_bits", "_half", "_last", "_mask")

    def __init__(self, bits: int = 16) -> None:
        if bits < 2:
            raise ValueError(f"bits must be at least 2, got {bits}")
        self._bits = bits
        self._mask = (1 << bits) - 1
        self._half = 1 << (bits - 1)
        self._last: int | None = None

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def last(self) -> int | None:
        """The most recently returned extended value, ``None`` before the first."""
        return self._last

    def unwrap(self, value: int) -> int:
        """Extend ``value`` (taken modulo ``2**bits``) and make it the new reference."""
        last = self._last
        if last is None:
            ext = value & self._mask
        else:
            half = self._half
            ext = last + ((value - last + half) & self._mask) - half
        self._last = ext
        return ext

    def reset(self) -> None:
        """Forget the reference: the next value maps to itself."""
        self._last = None
