"""Transport-cc feedback into per-packet results (pure: no I/O, no clock).

:class:`TransportFeedbackAdapter` joins each :class:`~sfu.rtp.twcc.TransportFeedback`
a subscriber sends with what the SFU's egress remembers of the packets it stamped
(``history(seq16) -> (seq, send_time, size) | None``, ``sfu.native.Egress`` /
``PyEgress``) and returns one :class:`~sfu.gcc.packet.PacketResult` per reported
packet, for the send-side estimator:

* sequence numbers are unwrapped across 65535 -> 0 (relative to the last feedback's
  base); a packet the history does not hold (too old, never stamped, or its number
  reused since) is skipped;
* the 24-bit reference time is unwrapped across its wrap (2^24 x 64 ms, about 12
  days), so arrival times keep growing;
* a feedback whose feedback packet count is not newer than the last one's (8 bits,
  a duplicate or a reordered old one) is ignored whole; a packet already reported is
  not reported again, unless it was reported lost and now arrived.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from .gcc.packet import PacketResult
from .rtp.twcc import REFERENCE_UNIT, TransportFeedback

__all__ = ["History", "TransportFeedbackAdapter"]

#: what an egress remembers of a stamped packet: (seq unwrapped, send time s, size)
History = Callable[[int], "tuple[int, float, int] | None"]
#: sequence numbers remembered as reported (repeats dropped): a ring keyed by the low
#: bits, a number is forgotten once the one REPORTED_MEMORY after it is reported (a
#: ring of 36 kB per subscriber; an OrderedDict of the last 16384 grew to 1.9 MB)
REPORTED_MEMORY = 4096
_NOT_REPORTED, _REPORTED_LOST, _REPORTED_RECEIVED = 0, 1, 2


def _diff(a: int, b: int, bits: int) -> int:
    """a - b for ``bits``-bit wrapping counters, in [-2^(bits-1), 2^(bits-1))."""
    half = 1 << (bits - 1)
    return ((a - b + half) & ((1 << bits) - 1)) - half


class TransportFeedbackAdapter:
    """One subscriber transport's transport-cc feedback, as :class:`PacketResult` lists."""

    def __init__(self) -> None:
        self._last_fb_count: int | None = None
        self._last_base: int | None = None  # unwrapped
        self._last_ref: int | None = None  # unwrapped ticks
        #: recently reported sequence numbers (slot: seq % REPORTED_MEMORY) and how
        #: (``_REPORTED_LOST`` / ``_RECEIVED``); allocated with the first feedback
        self._reported_seq = array("q")
        self._reported_how = bytearray()
        #: feedback packets used / ignored as duplicate or old
        self.feedbacks = 0
        self.ignored = 0
        #: reported packets the history did not hold
        self.unknown = 0

    def on_feedback(self, feedback: TransportFeedback, history: History) -> list[PacketResult]:
        """The packets ``feedback`` reports, oldest first (see the module's docstring)."""
        if (
            self._last_fb_count is not None
            and _diff(feedback.fb_count, self._last_fb_count, 8) <= 0
        ):
            self.ignored += 1
            return []
        self._last_fb_count = feedback.fb_count
        self.feedbacks += 1
        if self._last_base is None:  # the history knows which wrap it is in
            first = history(feedback.base_seq)
            base = first[0] if first is not None else feedback.base_seq
        else:
            base = self._last_base + _diff(feedback.base_seq, self._last_base & 0xFFFF, 16)
        self._last_base = base
        ticks = feedback.reference_ticks
        if self._last_ref is not None:
            ticks = self._last_ref + _diff(ticks, self._last_ref & 0xFFFFFF, 24)
        else:
            ticks -= (ticks & 0x800000) << 1  # signed, as reference_time
        self._last_ref = ticks
        shift = ticks * REFERENCE_UNIT - feedback.reference_time
        results: list[PacketResult] = []
        if not self._reported_seq:
            self._reported_seq = array("q", [-1]) * REPORTED_MEMORY
            self._reported_how = bytearray(REPORTED_MEMORY)
        reported_seq, reported_how = self._reported_seq, self._reported_how
        for i, arrival in enumerate(feedback.arrivals):
            seq = base + i
            entry = history(seq & 0xFFFF)
            if entry is None or entry[0] != seq:
                self.unknown += 1
                continue
            slot = seq % REPORTED_MEMORY
            before = reported_how[slot] if reported_seq[slot] == seq else _NOT_REPORTED
            if before == _REPORTED_RECEIVED or (before == _REPORTED_LOST and arrival is None):
                continue  # said already (a late arrival after "lost" is news)
            reported_seq[slot] = seq
            reported_how[slot] = _REPORTED_LOST if arrival is None else _REPORTED_RECEIVED
            if arrival is not None:
                arrival += shift
            results.append(PacketResult(seq, entry[1], entry[2], arrival))
        return results
