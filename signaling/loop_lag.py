"""Event-loop lag: a timer that measures how late it fires.

A callback scheduled for time ``t`` runs at ``t + lag``: the lag is how long everything
else on the loop (packets, RTCP, signaling, garbage collection) kept it waiting. That
is what a packet arriving then waits too, so it is the one number that says the
server is overloaded before media degrades.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: seconds between two measurements
LAG_INTERVAL = 0.25


class LagMeter:
    """The pure part: when the next measurement is due, and how late one came.

    ``start(now)`` returns the first due time; each ``fired(now)`` returns the lag of
    the measurement due before (never negative) and sets the next one ``interval``
    after ``now`` (a late measurement does not make the next ones look early)."""

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.due: float | None = None
        #: the largest lag seen, and how many measurements were made
        self.max_lag = 0.0
        self.count = 0

    def start(self, now: float) -> float:
        self.due = now + self.interval
        return self.due

    def fired(self, now: float) -> float:
        if self.due is None:
            raise RuntimeError("fired() before start()")
        lag = max(0.0, now - self.due)
        self.max_lag = max(self.max_lag, lag)
        self.count += 1
        self.due = now + self.interval
        return lag


class LoopLagMonitor:
    """Runs a :class:`LagMeter` on ``loop``; tells ``observe`` each lag (seconds)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        observe: Callable[[float], None],
        interval: float = LAG_INTERVAL,
    ) -> None:
        self._loop = loop
        self._observe = observe
        self.meter = LagMeter(interval)
        self._timer: asyncio.TimerHandle | None = loop.call_at(
            self.meter.start(loop.time()), self._fire
        )

    def _fire(self) -> None:
        self._timer = None
        self._observe(self.meter.fired(self._loop.time()))
        if self.meter.due is not None:
            self._timer = self._loop.call_at(self.meter.due, self._fire)

    def close(self) -> None:
        """Stop measuring. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.meter.due = None
