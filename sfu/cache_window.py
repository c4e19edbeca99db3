"""How many packets a stream's NACK cache keeps: a window in time at the stream's rate.

A fixed number of packets is 20 s of an Opus stream at 1024 packets, and 2 s of a
720p layer: the cache of a low-rate stream held packets no receiver could still ask
for. :class:`CacheSizer` measures the stream's packet rate (its packet count and ``now``
passed in, about once a second) and chooses a power-of-two capacity that holds
``CacheWindow.seconds`` of it, within ``min_packets`` .. ``max_packets``. It starts at
the largest (the rate is not known yet, and an empty slot costs one pointer), grows at
once when the rate needs more and shrinks only after ``shrink_after`` measurements in a
row asked for less, to the largest of them. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CacheSizer", "CacheWindow", "capacity_for"]

#: A rate is measured over at least this many seconds (a shorter interval is skipped).
MIN_INTERVAL = 0.5


def _power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@dataclass(frozen=True, slots=True)
class CacheWindow:
    #: seconds of the stream kept: a NACK for an older packet is not answered
    seconds: float = 2.0
    #: bounds of the capacity (rounded up to powers of two)
    min_packets: int = 64
    max_packets: int = 1024
    #: measurements in a row that ask for less before the capacity shrinks
    shrink_after: int = 3

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.min_packets < 1 or self.max_packets < self.min_packets:
            raise ValueError(f"bad cache window {self}")


def capacity_for(rate: float, window: CacheWindow) -> int:
    """The power-of-two capacity that holds ``window.seconds`` at ``rate`` packets/s."""
    wanted = min(max(math.ceil(rate * window.seconds), window.min_packets), window.max_packets)
    return _power_of_two(wanted)


class CacheSizer:
    """The capacity a stream's cache should have, from its packet count over time."""

    __slots__ = ("_low", "_low_want", "_mark", "capacity", "rate", "window")

    def __init__(self, window: CacheWindow) -> None:
        self.window = window
        #: the capacity chosen (starts at the largest)
        self.capacity = _power_of_two(window.max_packets)
        #: packets per second over the last interval measured, None before one
        self.rate: float | None = None
        self._mark: tuple[float, int] | None = None
        self._low = 0
        self._low_want = 0

    def update(self, packets: int, now: float) -> int | None:
        """``packets``: the stream's packets received so far. Returns the new capacity
        when it changes, else None."""
        mark = self._mark
        if mark is None:
            self._mark = (now, packets)
            return None
        span = now - mark[0]
        if span < MIN_INTERVAL:
            return None
        self._mark = (now, packets)
        self.rate = max(packets - mark[1], 0) / span
        want = capacity_for(self.rate, self.window)
        if want > self.capacity:
            self._low = 0
            self.capacity = want
            return want
        if want == self.capacity:
            self._low = 0
            return None
        self._low_want = want if self._low == 0 else max(self._low_want, want)
        self._low += 1
        if self._low < self.window.shrink_after:
            return None
        self._low = 0
        self.capacity = self._low_want
        return self.capacity
