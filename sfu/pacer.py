"""Pacing of one subscriber's video (pure: time is passed in, the caller sends).

While the bandwidth estimator (``sfu/bwe.py``) has no cap, video goes out as it
arrives: nothing says the link is short, and a queue would only add latency. Once
there is a cap, video leaves at ``factor`` times it (a token bucket), so a keyframe's
burst is spread out instead of hitting the bottleneck's queue at once. Audio, probes
and retransmissions never wait here.

The queue is bounded: ``max_delay`` seconds at the pacing rate (at least
``min_queue_bytes``). The forwarders ask :meth:`Pacer.has_room` at the start of each
frame; a frame that finds the queue over budget is dropped whole (never half a frame),
the stream waits for a keyframe, and the estimate is lowered so a lower layer is
chosen (``Forwarder`` and ``Participant`` do that part).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


class TokenBucket:
    """Bytes that may be sent: refilled at a rate up to a capacity (pure: time passed in).

    ``tokens`` may go negative: a packet larger than what is left is still sent, and the
    debt is paid by the next refills. ``pause(until)``: nothing is added before then."""

    __slots__ = ("tokens", "_last", "_until")

    def __init__(self) -> None:
        self.tokens = 0.0
        self._last = 0.0
        self._until = 0.0

    def pause(self, until: float) -> None:
        """No tokens until ``until`` (none left now): refills count from then on."""
        self._until = max(self._until, until)
        self.tokens = min(self.tokens, 0.0)

    def refill(self, rate: float | None, capacity: float, now: float) -> float:
        """Add ``rate`` bytes/s for the time since the last call or the end of a pause
        (none when ``rate`` is None or time went backwards), at most up to
        ``capacity``; returns ``tokens``."""
        elapsed = now - max(self._last, self._until)
        self._last = now
        if rate is not None and elapsed > 0:
            self.tokens = min(capacity, self.tokens + rate * elapsed)
        return self.tokens

    def spend(self, size: float) -> None:
        self.tokens -= size


@dataclass(frozen=True, slots=True)
class PacerSettings:
    #: pace at this multiple of the estimate: bursts above it are smoothed, not clipped
    factor: float = 1.5
    #: the queue's budget, in seconds at the pacing rate
    max_delay: float = 0.5
    #: and at least this many bytes (a keyframe of a middle layer: the frames after a
    #: keyframe must not find the queue full because of it)
    min_queue_bytes: int = 40_000
    #: tokens an idle pacer may save up, in seconds at the pacing rate (at least one
    #: full packet)
    burst: float = 0.01
    #: how often a non-empty queue is served
    tick: float = 0.005


class Pacer:
    def __init__(self, settings: PacerSettings | None = None) -> None:
        self.settings = settings or PacerSettings()
        #: pacing rate in bytes/s, or None: not pacing
        self.byte_rate: float | None = None
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self._bucket = TokenBucket()
        #: bytes the queue may hold above its budget until it drains (``hold``)
        self._allowance = 0
        #: the cap went away while packets were queued: stop pacing once they are out
        self._release = False
        #: packets that waited in the queue, and frames refused for want of room
        self.paced_packets = 0
        self.overflows = 0
        #: not ``active``, as a plain attribute: the native forwarding path
        #: (``sfu/_native.c``) sends video directly only while it is True
        self.idle = True

    def _update_idle(self) -> None:
        self.idle = self.byte_rate is None and not self.queue

    @property
    def active(self) -> bool:
        return self.byte_rate is not None or bool(self.queue)

    def set_rate(self, bitrate: float | None, now: float) -> None:
        """The estimate (bit/s) the video must fit, or None when nothing limits it. A
        queue left when the cap goes away drains at the last rate."""
        self._refill(now)
        if bitrate is None:
            if self.queue:
                self._release = True
            else:
                self.byte_rate = None
        else:
            self._release = False
            self.byte_rate = max(1.0, bitrate) * self.settings.factor / 8
        self._update_idle()

    def limit(self) -> int:
        """The queue's budget in bytes."""
        s = self.settings
        rate = self.byte_rate
        if rate is None:
            return s.min_queue_bytes + self._allowance
        return max(s.min_queue_bytes, int(rate * s.max_delay)) + self._allowance

    def has_room(self) -> bool:
        """Whether a new frame may start: the queue is within its budget."""
        if not self.active:
            return True
        if self.queued_bytes < self.limit():
            return True
        self.overflows += 1
        return False

    def delay(self) -> float:
        """Seconds the queue holds at the pacing rate."""
        rate = self.byte_rate
        return self.queued_bytes / rate if rate else 0.0

    def offer(self, packet: bytes, now: float) -> bool:
        """True: send ``packet`` now. False: it was queued (send what :meth:`due`
        returns later)."""
        if not self.active:
            return True
        self._refill(now)
        if not self.queue and self._bucket.tokens > 0:
            self._bucket.spend(len(packet))
            return True
        self.queue.append(packet)
        self.queued_bytes += len(packet)
        self.paced_packets += 1
        self.idle = False
        return False

    def due(self, now: float) -> list[bytes]:
        """The queued packets that may leave now, in order."""
        self._refill(now)
        out: list[bytes] = []
        queue = self.queue
        bucket = self._bucket
        while queue and bucket.tokens > 0:
            packet = queue.popleft()
            self.queued_bytes -= len(packet)
            bucket.spend(len(packet))
            out.append(packet)
        if not queue:
            self._allowance = 0
        if not queue and self._release:
            self._release = False
            self.byte_rate = None
        self._update_idle()
        return out

    def hold(self, seconds: float, now: float) -> None:
        """Send no video for ``seconds``: a layer that overflowed the link was cut, and
        the bottleneck's queue it filled must make room before the new layer's keyframe
        arrives there, or the keyframe is lost with it (and waits a round trip through
        that queue for its repair). The hold is a time, not a debt at the pacing rate:
        a lower rate set meanwhile (the estimate falling further) does not prolong it."""
        rate = self.byte_rate
        if rate is None or seconds <= 0:
            return
        self._refill(now)
        self._bucket.pause(now + seconds)
        # what piles up meanwhile is the hold's, not an overflow: room for it until the
        # queue has drained
        self._allowance = int(rate * seconds)

    def drop_stream(self, ssrc: int) -> int:
        """Drop the queued packets of one outgoing stream (its SSRC); returns how many.
        A stream that switched layer: what is queued of the layer it left is of no use
        to a receiver that waits for the new layer's keyframe, which must not wait
        behind it."""
        key = ssrc.to_bytes(4, "big")
        kept = deque(p for p in self.queue if p[8:12] != key)
        dropped = len(self.queue) - len(kept)
        if dropped:
            self.queue = kept
            self.queued_bytes = sum(len(p) for p in kept)
            self._update_idle()
        return dropped

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0
        self._update_idle()

    def _refill(self, now: float) -> None:
        rate = self.byte_rate
        # idle: at most ``burst`` saved up; with a queue, a late tick may catch up on
        # a few ticks' worth, not on a whole stall
        saved = self.settings.burst if not self.queue else 4 * self.settings.tick
        self._bucket.refill(rate, max(1500.0, (rate or 0.0) * saved), now)
