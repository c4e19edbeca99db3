"""What ``parley bot --reconnect`` needs besides the bot itself: the backoff between
attempts and the record of each reconnection. Pure: times and randomness are passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

#: First wait before rejoining when the server gave no hint (s).
FIRST_DELAY = 0.3
#: Bounds of the first wait when the server gave ``retry_after_ms`` (s).
MIN_FIRST_DELAY = 0.25
#: No wait is longer than this (s): after a restart the bot is back within about this
#: long of the server answering again.
MAX_DELAY = 2.0


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with jitter: wait ``i`` is drawn uniformly from
    ``[0.5, 1] x min(cap, first x 2**i)`` (so two bots that lost the same server do not
    come back in lockstep, and none waits longer than ``cap``)."""

    first: float = FIRST_DELAY
    cap: float = MAX_DELAY
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError("need 0 < first <= cap")

    @classmethod
    def after(cls, retry_after_ms: int | None, cap: float = MAX_DELAY) -> Backoff:
        """Start from the server's hint (``server_shutdown``'s ``retry_after_ms``),
        within ``[MIN_FIRST_DELAY, cap]``, or from :data:`FIRST_DELAY` without one."""
        if retry_after_ms is None:
            return cls(min(FIRST_DELAY, cap), cap)
        return cls(min(max(retry_after_ms / 1000.0, MIN_FIRST_DELAY), cap), cap)

    def next_delay(self, rng: random.Random) -> float:
        """The wait before the next attempt (seconds)."""
        ceiling = min(self.cap, self.first * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return ceiling * rng.uniform(0.5, 1.0)


@dataclass(slots=True)
class Reconnect:
    """One lost connection and how the bot came back. Times in seconds of the bot's
    clock; :meth:`to_json` gives milliseconds since the bot started."""

    #: ``connection_lost``, ``server_shutdown`` or ``removed``
    code: str
    message: str
    #: when the connection was lost
    lost_at: float
    #: names of the remote publishers the bot was receiving media from then
    publishers: list[str] = field(default_factory=list)
    attempts: int = 0
    #: the first attempt whose websocket opened (the server answered again)
    connected_at: float | None = None
    #: back in the room (``joined``)
    joined_at: float | None = None
    #: the last error of a failed attempt
    last_error: str | None = None
    #: when media (a decoded frame) came back from each of ``publishers``
    media_at: dict[str, float] = field(default_factory=dict)

    def on_frame(self, publisher: str | None, now: float) -> None:
        if publisher is not None and publisher not in self.media_at and self.joined_at:
            self.media_at[publisher] = now

    @property
    def recovered(self) -> bool:
        return self.joined_at is not None

    def media_back_at(self) -> float | None:
        """When media had come back from every publisher of before (or, with none
        before, when the bot was back in the room); None while one is missing."""
        if self.joined_at is None:
            return None
        if any(name not in self.media_at for name in self.publishers):
            return None
        return max([self.joined_at, *(self.media_at[n] for n in self.publishers)])

    def to_json(self, started_at: float) -> dict[str, Any]:
        def ms(t: float | None, since: float) -> float | None:
            return None if t is None else round((t - since) * 1000, 1)

        back = self.media_back_at()
        return {
            "t_ms": ms(self.lost_at, started_at),
            "code": self.code,
            "message": self.message,
            "attempts": self.attempts,
            "recovered": self.recovered,
            "connected_after_ms": ms(self.connected_at, self.lost_at),
            "joined_after_ms": ms(self.joined_at, self.lost_at),
            # from the server answering again to media from everyone of before
            "media_after_server_ms": (
                ms(back, self.connected_at) if self.connected_at is not None else None
            ),
            "media_after_ms": ms(back, self.lost_at),
            "publishers": list(self.publishers),
            "missing_publishers": [n for n in self.publishers if n not in self.media_at],
            "last_error": self.last_error,
        }
