"""Receive-side transport-wide congestion control: what a subscriber that keeps
transport-cc in its answer owes the sender (draft-holmer-rmcat-transport-wide-cc-extensions-01).

When the server's subscribe offer negotiates the transport-wide sequence number
(``a=extmap:<id> http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01``
and ``a=rtcp-fb:<pt> transport-cc``; ``sfu.sdp.keep_transport_cc`` keeps them in an aiortc
answer), the receiver reads the 2-byte extension element of every RTP packet it receives
(:func:`transport_sequence`), records its arrival (:class:`TransportCcRecorder`) and sends
the feedback packets the recorder builds about every :data:`FEEDBACK_INTERVAL` seconds.
``parley load``'s lean subscribers and ``parley bot`` (through
``sfu.aiortc_adapter.ReceiveTap``) both use it.

The packets are built by :func:`sfu.rtp.twcc.build_feedback_prefix` (the SFU's own
builder, libwebrtc's chunk choice and RTCP padding). Pure: times are arguments (seconds
of any monotonic clock), packets come back as bytes. Each feedback covers the sequence
numbers from the one after the last it reported up to the highest received (at most
:data:`MAX_STATUS`; a packet whose delta a 2-byte field cannot hold starts the next one,
with its own reference time). Sequence numbers are unwrapped across 65535; the
reference time is written modulo 2^24 (the parser unwraps it). A packet that arrives
after its number was reported missing is not reported again (libwebrtc would).
"""

from __future__ import annotations

import struct

from sfu.rtp.twcc import build_feedback_prefix

__all__ = [
    "FEEDBACK_INTERVAL",
    "MAX_PENDING",
    "MAX_STATUS",
    "TransportCcRecorder",
    "transport_sequence",
]

#: Seconds between two feedback packets (libwebrtc: 100 ms at low rates).
FEEDBACK_INTERVAL = 0.1
#: Sequence numbers one feedback packet reports at most (more go in the next).
MAX_STATUS = 1000
#: Packets remembered at most (a receiver that is not asked for feedback must not grow).
MAX_PENDING = 5000


def transport_sequence(data: bytes, ext_id: int) -> int | None:
    """The transport-wide sequence number of an RTP packet (its header extension
    element ``ext_id``, one- or two-byte form), or None when it has none."""
    if len(data) < 12 or not data[0] & 0x10:
        return None
    offset = 12 + (data[0] & 0x0F) * 4
    if len(data) < offset + 4:
        return None
    profile, words = struct.unpack_from("!HH", data, offset)
    start = offset + 4
    end = min(len(data), start + 4 * words)
    i = start
    if profile == 0xBEDE:
        while i < end:
            byte = data[i]
            if byte == 0:  # padding
                i += 1
                continue
            element, length = byte >> 4, (byte & 0x0F) + 1
            if element == 15:
                return None
            if element == ext_id and length == 2 and i + 3 <= end:
                return int(struct.unpack_from("!H", data, i + 1)[0])
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i + 2 <= end:
            element, length = data[i], data[i + 1]
            if element == 0:
                i += 1
                continue
            if element == ext_id and length == 2 and i + 4 <= end:
                return int(struct.unpack_from("!H", data, i + 2)[0])
            i += 2 + length
    return None


class TransportCcRecorder:
    """Arrival times of the packets of one receiving transport, and the feedback
    packets that report them (sent from ``own_ssrc``)."""

    def __init__(self, own_ssrc: int, interval: float = FEEDBACK_INTERVAL) -> None:
        self.own_ssrc = own_ssrc
        self.interval = interval
        #: SSRC of the first packet recorded (the feedback's media source field)
        self.media_ssrc = 0
        #: unwrapped sequence number -> arrival time (s)
        self._arrivals: dict[int, float] = {}
        self._highest: int | None = None
        #: the next sequence number to report (None: the lowest received)
        self._next: int | None = None
        self._count = 0
        self._last_feedback: float | None = None
        self.packets_recorded = 0
        self.feedback_sent = 0
        self.packets_reported = 0

    def on_rtp(self, data: bytes, ext_id: int, now: float) -> bool:
        """Record an RTP packet that arrived at ``now`` if it carries extension
        ``ext_id``; True when it did."""
        seq = transport_sequence(data, ext_id)
        if seq is None:
            return False
        self.on_packet(seq, struct.unpack_from("!I", data, 8)[0], now)
        return True

    def on_packet(self, seq: int, ssrc: int, now: float) -> None:
        """A packet with transport-wide sequence number ``seq`` arrived at ``now``."""
        if self._highest is None:
            unwrapped = seq
            self.media_ssrc = ssrc
        else:
            delta = (seq - self._highest) & 0xFFFF
            unwrapped = self._highest + (delta - 0x10000 if delta >= 0x8000 else delta)
        if self._next is not None and unwrapped < self._next:
            return  # already reported (as missing)
        self.packets_recorded += 1
        self._arrivals.setdefault(unwrapped, now)
        if self._highest is None or unwrapped > self._highest:
            self._highest = unwrapped
        if len(self._arrivals) > MAX_PENDING:
            oldest = min(self._arrivals)
            del self._arrivals[oldest]
            self._next = oldest + 1

    def due(self, now: float) -> bool:
        """Whether ``interval`` has passed since the last :meth:`poll` that sent."""
        return self._last_feedback is None or now - self._last_feedback >= self.interval

    def poll(self, now: float) -> list[bytes]:
        """The feedback packets when one is :meth:`due` (none otherwise, or when
        nothing arrived since the last)."""
        if not self.due(now):
            return []
        out = self.feedback()
        if out:
            self._last_feedback = now
        return out

    def feedback(self) -> list[bytes]:
        """Feedback packets for everything received since the last call (on demand;
        none when nothing was)."""
        out: list[bytes] = []
        arrivals = self._arrivals
        while arrivals and self._highest is not None:
            base = min(arrivals) if self._next is None else self._next
            last = min(self._highest, base + MAX_STATUS - 1)
            window = [arrivals.get(seq) for seq in range(base, last + 1)]
            packet, reported = build_feedback_prefix(
                base,
                window,
                self._count,
                self.own_ssrc,
                self.media_ssrc,
                rtcp_padding=True,
            )
            self._count = (self._count + 1) & 0xFF
            out.append(packet)
            self.packets_reported += sum(1 for a in window[:reported] if a is not None)
            self._next = base + reported
            for seq in [s for s in arrivals if s < self._next]:
                del arrivals[seq]
        self.feedback_sent += len(out)
        return out
