"""A token bucket: ``rate`` tokens a second up to ``burst``, full when made.

One implementation for every rate limit that counts events (data channel messages and
bytes, joins per address, signaling messages per websocket); time is passed in. The
pacer's bucket (``sfu/pacer.py``) meters bytes on the wire and is another thing.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; full at ``now``. ``rate`` 0: no refill."""

    __slots__ = ("rate", "burst", "tokens", "_last")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst <= 0:
            raise ValueError("a token bucket needs rate >= 0 and burst > 0")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._last = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)  # a clock that steps back adds nothing
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self._last = max(self._last, now)

    def has(self, cost: float, now: float) -> bool:
        self.refill(now)
        return self.tokens >= cost

    def spend(self, cost: float) -> None:
        """Spend ``cost`` tokens (after ``has`` said yes)."""
        self.tokens -= cost

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) otherwise."""
        if not self.has(cost, now):
            return False
        self.spend(cost)
        return True

    def full(self, now: float) -> bool:
        """Refilled to the brim: the same as a new bucket."""
        self.refill(now)
        return self.tokens >= self.burst
