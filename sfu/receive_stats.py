"""RFC 3550 receiver statistics for one incoming RTP stream (one SSRC).

Feeds the report blocks of the receiver reports Parley sends to publishers:
loss (cumulative and fraction since the previous report, A.3), extended highest
sequence number (A.1), interarrival jitter (A.8) and LSR/DLSR (6.4.1).

Differences from the letter of appendix A, all in the spirit of libwebrtc:

* Duplicates within the reordering window (the last 1024 sequence numbers) are
  detected and not counted, so they never make the loss negative.
* A late packet from before the first one extends the expected range backwards.
* A packet 1024 to 3000 behind the highest one is ignored (too late to tell from
  a duplicate).
* A packet at least 3000 ahead of or behind the highest one is held: if its
  successor follows immediately the sender restarted its sequence, and both count
  as received with no loss for the jump (the extended highest sequence number keeps
  increasing); otherwise it is ignored.
* Jitter is updated by in-order packets only (a reordered packet's timestamp
  difference says nothing about network jitter).
"""

from __future__ import annotations

from dataclasses import dataclass

from .native import ReceiveStatsCore

__all__ = ["ReceiveStatistics", "ReportBlockValues"]

#: A jump ahead at least this large is a restart candidate (RFC 3550 MAX_DROPOUT).
_MAX_DROPOUT = 3000
#: Reordering window: late packets within it count, duplicates in it are detected.
_MAX_MISORDER = 1024
_WINDOW_MASK = _MAX_MISORDER - 1
#: Marks an empty slot of the duplicate window; never a real extended seq.
_EMPTY = -(1 << 62)

_LOST_MAX = 0x7FFFFF
_LOST_MIN = -0x800000


@dataclass(frozen=True, slots=True)
class ReportBlockValues:
    """The fields of one RTCP report block (RFC 3550 6.4.1)."""

    ssrc: int
    #: Fraction of packets lost since the previous report, in 1/256 (0..255).
    fraction_lost: int
    #: Cumulative number of packets lost, clamped to a signed 24-bit value.
    packets_lost: int
    #: Extended highest sequence number received (cycles << 16 | seq), 32 bit.
    highest_seq: int
    #: Interarrival jitter, in timestamp units.
    jitter: int
    #: Middle 32 bits of the NTP timestamp of the last sender report, 0 if none.
    lsr: int
    #: Delay since that sender report arrived, in 1/65536 s, 0 if none.
    dlsr: int


class ReceiveStatistics(ReceiveStatsCore):
    """Receiver statistics of one RTP stream; time is always passed in (``now``, s)."""

    #: every field lives in the base class (``sfu.native.ReceiveStatsCore``), which the C
    #: ingress (``sfu/_ingress.c``) updates in place; ``add`` is the reference for it
    __slots__ = ()

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        self._clock_rate = clock_rate
        self._started = False
        #: Extended sequence number of the first expected packet.
        self._base = 0
        #: Highest extended sequence number received.
        self._max = -1
        self._received = 0
        self._duplicates = 0
        #: Extended sequence numbers of the last _MAX_MISORDER slots, for duplicates.
        self._seen: list[int] = [_EMPTY] * _MAX_MISORDER
        #: Sequence number that would confirm a restart, -1 if none pending.
        self._bad_seq = -1
        #: RTP timestamp and arrival time of the last in-order packet (jitter).
        self._last_ts = 0
        self._last_arrival = 0.0
        self._jitter = 0.0
        self._expected_prior = 0
        self._received_prior = 0
        self._lsr = 0
        self._sr_arrival: float | None = None

    @property
    def clock_rate(self) -> int:
        return self._clock_rate

    @property
    def packets_received(self) -> int:
        """Distinct packets received (duplicates excluded)."""
        return self._received

    @property
    def expected(self) -> int:
        """Packets expected: extended highest minus extended first sequence number + 1."""
        return self._max - self._base + 1 if self._started else 0

    @property
    def packets_lost(self) -> int:
        """Cumulative loss (``expected - packets_received``), not clamped."""
        return self.expected - self._received

    @property
    def duplicates(self) -> int:
        """Duplicate packets detected and ignored."""
        return self._duplicates

    @property
    def highest_seq(self) -> int | None:
        """Extended highest sequence number (unbounded), ``None`` before any packet."""
        return self._max if self._started else None

    @property
    def jitter(self) -> float:
        """Current interarrival jitter estimate, in timestamp units."""
        return self._jitter

    def add(self, seq: int, rtp_ts: int, now: float) -> None:
        """Account for one received packet (``seq`` 16 bit, ``rtp_ts`` 32 bit)."""
        if not self._started:
            self._start(seq & 0xFFFF, rtp_ts, now)
            return
        mx = self._max
        d = ((seq - mx + 0x8000) & 0xFFFF) - 0x8000
        if 0 < d < _MAX_DROPOUT:
            ext = mx + d
            self._max = ext
            self._seen[ext & _WINDOW_MASK] = ext
            self._received += 1
            self._bad_seq = -1
            # RFC 3550 A.8, in timestamp units; the timestamp difference is modular.
            delta = (now - self._last_arrival) * self._clock_rate - (
                ((rtp_ts - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            )
            if delta < 0:
                delta = -delta
            self._jitter += (delta - self._jitter) * 0.0625
            self._last_arrival = now
            self._last_ts = rtp_ts
            return
        if -_MAX_MISORDER < d <= 0:
            self._bad_seq = -1
            ext = mx + d
            i = ext & _WINDOW_MASK
            if self._seen[i] == ext:
                self._duplicates += 1
                return
            self._seen[i] = ext
            self._received += 1
            if ext < self._base:
                self._base = ext
            return
        if -_MAX_DROPOUT < d <= 0:
            # Too late to tell from a duplicate (a retransmission, say): ignored.
            self._bad_seq = -1
            return
        self._far(seq & 0xFFFF, rtp_ts, now)

    def _start(self, seq: int, rtp_ts: int, now: float) -> None:
        self._started = True
        self._base = seq
        self._max = seq
        self._received = 1
        self._seen[seq & _WINDOW_MASK] = seq
        self._last_ts = rtp_ts
        self._last_arrival = now

    def _far(self, seq: int, rtp_ts: int, now: float) -> None:
        if seq != self._bad_seq:
            self._bad_seq = (seq + 1) & 0xFFFF
            return
        # Two consecutive packets far from the stream: the sender restarted its
        # sequence. Keep counting forward, with no loss for the jump.
        self._bad_seq = -1
        expected_before = self._max - self._base + 1
        mx = self._max
        ext = mx + ((seq - mx) & 0xFFFF)
        self._max = ext
        self._base = ext - expected_before - 1
        self._received += 2
        self._seen[(ext - 1) & _WINDOW_MASK] = ext - 1
        self._seen[ext & _WINDOW_MASK] = ext
        self._last_ts = rtp_ts
        self._last_arrival = now

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Record a sender report: its 64-bit NTP timestamp and its arrival time."""
        self._lsr = (ntp_timestamp >> 16) & 0xFFFFFFFF
        self._sr_arrival = now

    def report_block(self, ssrc: int, now: float) -> ReportBlockValues:
        """Values of a report block about this stream; starts a new loss interval."""
        expected = self.expected
        received = self._received
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (received - self._received_prior)
        self._expected_prior = expected
        self._received_prior = received
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = expected - received
        if lost > _LOST_MAX:
            lost = _LOST_MAX
        elif lost < _LOST_MIN:
            lost = _LOST_MIN
        sr_arrival = self._sr_arrival
        if sr_arrival is None:
            lsr = dlsr = 0
        else:
            lsr = self._lsr
            dlsr = min(max(round((now - sr_arrival) * 65536), 0), 0xFFFFFFFF)
        return ReportBlockValues(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_seq=self._max & 0xFFFFFFFF if self._started else 0,
            jitter=int(self._jitter),
            lsr=lsr,
            dlsr=dlsr,
        )
