"""What a subscriber's receiver acknowledges receiving (pure, time passed in).

The *acknowledged rate* is measured from the receiver's own RTCP receiver reports on
the SFU's sending leg, one stream (SSRC) at a time. Between two report blocks of a
stream, the extended highest sequence number grew by ``expected`` and the cumulative
lost count by ``lost``: the receiver got ``expected - lost`` packets in that interval
(sequence numbers the SFU never sent, ``not_sent``, are in both and cancel out of what
was received; they are taken out of the loss). The bytes are those packets times the
mean size of what the SFU sent on that stream over the same interval (its own
``packets_sent``/``bytes_sent`` counters at each report's arrival); per-sequence sizes
would need the C forwarding loop to record every packet, and the mean over a report
interval (dozens of packets) is within a few percent of it.

Rates are taken over the arrival times of the reports, per stream, then summed:

* ``rate``: the rate over the last ``window`` seconds of reports (at least; from the
  newest report back to the last one at or before ``window`` earlier). A receiver
  whose process stalls sends its reports late and bunched: over a couple of seconds
  that averages out. (A link that suddenly carries less also loses packets, and the
  loss rule of ``sfu/bwe.py`` acts on each report at once.)
* ``loss``: the fraction the receiver's link lost over the last ``share_window``
  seconds, all streams together: a few packets a starved receiver's socket buffer
  dropped once are a small fraction of that, a congested link's loss is not.
* ``acked_share``: the bytes acknowledged over the last ``share_window`` seconds of
  reports against the bytes the SFU sent on those streams between the same two
  reports. A link that keeps up acknowledges about all of it (what is in flight at
  either end cancels out); a link whose queue builds, or that drops packets,
  acknowledges less, and goes on acknowledging less. A receiver whose process is
  starved of CPU for a moment (its packets wait in its socket buffer) acknowledges less
  for a second and then catches up: over ``share_window`` that mostly cancels out.

**Repair streams** (RTX: retransmissions and probe padding) count in ``rate`` and
``recent_rate`` (what the link carried: at the onset of congestion retransmissions may
take a third of it), not in ``loss`` or ``acked_share`` (the SFU does not count what it
sends there; ``on_repair`` is told the bytes received).

A stream whose last report is older than ``stale`` seconds no longer counts (its
receiver acknowledges nothing); one silent for ``forget`` seconds is dropped. Reports
that go backwards or jump (a new sender on the SSRC, a reordered report) restart the
stream's measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    window: float = 2.0
    share_window: float = 4.0
    #: a stream's rate needs reports at least this far apart (s)
    min_span: float = 0.4
    stale: float = 3.0
    forget: float = 10.0


@dataclass(slots=True)
class _Mark:
    """One report's arrival and the stream's running totals at that point."""

    at: float
    acked_bytes: float
    sent_bytes: int
    expected: int
    lost: int


@dataclass(slots=True)
class _Stream:
    highest: int
    cumulative_lost: int
    packets_sent: int
    bytes_sent: int
    not_sent: int
    size: float
    marks: list[_Mark] = field(default_factory=list)
    #: an RTX stream: counts in the rates only (``on_repair``)
    repair: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """Acknowledged bit/s and the fraction lost, over the spans of ``DeliveryRate``, and
    how much of what the SFU sent over the ``share_window`` the receiver acknowledged
    (``acked_share``: about 1 while the link keeps up, less while a queue builds or
    packets are lost; None when nothing was sent over it, so nothing says
    whether the link keeps up)."""

    rate: float
    loss: float
    acked_share: float | None
    #: the acknowledged rate over the newest report interval alone (at least ``min_span``):
    #: where the rate is heading while the link loses packets (``rate`` lags by a window)
    recent_rate: float | None = None
    #: ``acked_share`` over the newest report interval alone: a link that has just
    #: narrowed shows here a report or two before the longer window says so
    recent_share: float | None = None


class DeliveryRate:
    """The acknowledged rate of one subscriber's video, from its receiver reports."""

    def __init__(self, settings: DeliverySettings | None = None) -> None:
        self.settings = settings or DeliverySettings()
        self._streams: dict[int, _Stream] = {}
        #: reports ignored because their sequence numbers went backwards or jumped
        self.restarts = 0
        #: whether a rate has ever been measured (``measure`` returned something)
        self.measured = False

    def on_report(
        self,
        stream: int,
        now: float,
        *,
        highest: int,
        cumulative_lost: int,
        packets_sent: int,
        bytes_sent: int,
        not_sent: int = 0,
    ) -> None:
        """A report block for ``stream``: its extended highest sequence number and
        cumulative lost count, with the SFU's own counters for that stream now (packets
        and bytes sent; sequence numbers it skipped, which the receiver counts lost)."""
        if highest < 0 or packets_sent < 0 or bytes_sent < 0:
            raise ValueError("highest, packets_sent and bytes_sent must not be negative")
        self._prune(now)
        s = self._streams.get(stream)
        size = bytes_sent / packets_sent if packets_sent > 0 else 0.0
        if s is None:
            self._streams[stream] = _Stream(
                highest, cumulative_lost, packets_sent, bytes_sent, not_sent, size,
                [_Mark(now, 0.0, 0, 0, 0)],
            )  # fmt: skip
            return
        expected = (highest - s.highest) & 0xFFFFFFFF
        if expected >= 0x8000 or (s.marks and now < s.marks[-1].at):
            # backwards, or a jump no stream makes in one report interval: start again
            self.restarts += 1
            del self._streams[stream]
            self.on_report(
                stream, now, highest=highest, cumulative_lost=cumulative_lost,
                packets_sent=packets_sent, bytes_sent=bytes_sent, not_sent=not_sent,
            )  # fmt: skip
            return
        lost = cumulative_lost - s.cumulative_lost
        received = min(expected, max(0, expected - lost))
        link_lost = min(expected, max(0, lost - max(0, not_sent - s.not_sent)))
        sent_packets = packets_sent - s.packets_sent
        sent_bytes = bytes_sent - s.bytes_sent
        if sent_packets > 0 and sent_bytes >= 0:
            s.size = sent_bytes / sent_packets
        elif s.size <= 0:
            s.size = size
        last = s.marks[-1]
        s.marks.append(
            _Mark(
                now,
                last.acked_bytes + received * s.size,
                last.sent_bytes + max(0, sent_bytes),
                last.expected + expected,
                last.lost + link_lost,
            )
        )
        s.highest, s.cumulative_lost = highest, cumulative_lost
        s.packets_sent, s.bytes_sent, s.not_sent = packets_sent, bytes_sent, not_sent
        # keep the marks the window needs: the newest one at or before its start, and after
        cut = s.marks[-1].at - max(self.settings.window, self.settings.share_window)
        first = 0
        for i, mark in enumerate(s.marks):
            if mark.at <= cut:
                first = i
        del s.marks[:first]

    def on_repair(self, stream: int, now: float, received_bytes: float) -> None:
        """A report block of repair stream ``stream`` (RTX) shows ``received_bytes``
        more received since its previous one (0 for its first)."""
        s = self._streams.get(stream)
        if s is None or not s.repair:
            s = self._streams[stream] = _Stream(0, 0, 0, 0, 0, 0.0, [], repair=True)
            s.marks.append(_Mark(now, 0.0, 0, 0, 0))
            return
        last = s.marks[-1]
        if now < last.at:
            return
        s.marks.append(_Mark(now, last.acked_bytes + max(0.0, received_bytes), 0, 0, 0))
        cut = now - max(self.settings.window, self.settings.share_window)
        first = 0
        for i, mark in enumerate(s.marks):
            if mark.at <= cut:
                first = i
        del s.marks[:first]

    def packet_size(self) -> float:
        """The mean size of what the SFU sends on the media streams (bytes; 1000 before
        anything is known)."""
        sizes = [s.size for s in self._streams.values() if not s.repair and s.size > 0]
        return sum(sizes) / len(sizes) if sizes else 1000.0

    def _prune(self, now: float) -> None:
        old = [k for k, s in self._streams.items() if now - s.marks[-1].at > self.settings.forget]
        for k in old:
            del self._streams[k]

    def _span(self, s: _Stream, span: float) -> tuple[_Mark, _Mark] | None:
        """The newest mark and the one ``span`` seconds before it (the newest at or
        before that, else the oldest), or None if they are under ``min_span`` apart."""
        last = s.marks[-1]
        ref = s.marks[0]
        for mark in s.marks[:-1]:
            if mark.at <= last.at - span:
                ref = mark
        if last.at - ref.at < self.settings.min_span:
            return None
        return ref, last

    def measure(self, now: float) -> Delivery | None:
        """The acknowledged rate and loss now, or None while no stream has been reported
        on over at least ``min_span`` seconds (or every stream's reports are stale)."""
        st = self.settings
        total: float | None = None
        recent: float | None = None
        repair = repair_recent = 0.0
        acked = sent = recent_acked = recent_sent = 0.0
        expected = lost = 0
        for s in self._streams.values():
            if now - s.marks[-1].at > st.stale:
                continue
            window = self._span(s, st.window)
            if window is None:
                continue
            a, b = window
            if s.repair:
                repair += (b.acked_bytes - a.acked_bytes) * 8 / (b.at - a.at)
                a, b = self._span(s, st.min_span) or window
                repair_recent += (b.acked_bytes - a.acked_bytes) * 8 / (b.at - a.at)
                continue
            rate = (b.acked_bytes - a.acked_bytes) * 8 / (b.at - a.at)
            total = rate if total is None else total + rate
            a, b = self._span(s, st.min_span) or window
            rate = (b.acked_bytes - a.acked_bytes) * 8 / (b.at - a.at)
            recent = rate if recent is None else recent + rate
            recent_acked += b.acked_bytes - a.acked_bytes
            recent_sent += b.sent_bytes - a.sent_bytes
            a, b = self._span(s, st.share_window) or window
            acked += b.acked_bytes - a.acked_bytes
            sent += b.sent_bytes - a.sent_bytes
            expected += b.expected - a.expected
            lost += b.lost - a.lost
        if total is None:
            return None
        self.measured = True
        loss = lost / expected if expected > 0 else 0.0
        return Delivery(
            total + repair,
            loss,
            acked / sent if sent > 0 else None,
            None if recent is None else recent + repair_recent,
            recent_acked / recent_sent if recent_sent > 0 else None,
        )
