"""Transport-wide congestion control feedback of ``parley load``'s lean subscribers.

When the server's subscribe offer negotiates the transport-wide sequence number
(``a=extmap:<id> http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01``
and ``a=rtcp-fb:<pt> transport-cc``), a subscriber that keeps it in its answer promises to
report the arrival of every RTP packet carrying it. aiortc neither negotiates nor reports
it, so the lean subscriber adds the lines to its answer (:func:`answer_transport_cc`),
reads the 2-byte extension element of every packet it receives
(:func:`transport_sequence`), and sends the feedback packet that
:class:`TransportFeedback` builds about every :data:`FEEDBACK_INTERVAL` seconds.

The feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1: RTCP
RTPFB, PT 205, FMT 15): base sequence number and packet status count, a 24-bit
reference time in 64 ms units and an 8-bit feedback packet count, then packet status
chunks (run length chunks for runs of 7 or more equal symbols, otherwise status vector
chunks of fourteen 1-bit or seven 2-bit symbols), then the receive deltas (1 byte
unsigned for 0-63.75 ms, 2 bytes signed otherwise, in 250 us units; the first relative
to the reference time, each next one to the packet before it), zero-padded to 32 bits
with the padding bit set and the count in the last byte, as libwebrtc does. Pure: times
are arguments, packets come back as bytes.

Each feedback covers the sequence numbers from the one after the last it reported up to
the highest received; a packet that arrives after its number was reported as missing is
not reported again (libwebrtc would).
"""

from __future__ import annotations

import re
import struct

from sfu.rtp.extensions import TRANSPORT_CC_URI

#: Seconds between two feedback packets.
FEEDBACK_INTERVAL = 0.1
#: Sequence numbers one feedback packet reports at most (more go in the next).
MAX_STATUS = 1000
#: Packets remembered at most (a receiver that is not asked for feedback must not grow).
MAX_PENDING = 5000

NOT_RECEIVED, SMALL, LARGE = 0, 1, 2
TICK = 0.00025  # s: one unit of a receive delta
REF_TICKS = 256  # receive delta units in one reference time unit (64 ms)


# ------------------------------------------------------------------ SDP


def offered_transport_cc(sdp: str) -> dict[str, tuple[int, list[int]]]:
    """Per m-section (by its ``a=mid``): the transport-wide-cc extension id the offer
    gives and the payload types it asks ``transport-cc`` feedback for."""
    out: dict[str, tuple[int, list[int]]] = {}
    for section in _sections(sdp):
        mid = _mid(section)
        ext = re.search(
            rf"^a=extmap:(\d+)(?:/\w+)? {re.escape(TRANSPORT_CC_URI)}\s*$", section, re.M
        )
        if mid is None or ext is None:
            continue
        pts = [int(pt) for pt in re.findall(r"^a=rtcp-fb:(\d+) transport-cc\s*$", section, re.M)]
        out[mid] = (int(ext.group(1)), pts)
    return out


def answer_transport_cc(answer: str, offered: dict[str, tuple[int, list[int]]]) -> str:
    """``answer`` with the transport-wide-cc extension (same id) and ``transport-cc``
    feedback (for the offered payload types the answer keeps) in each m-section whose
    offer had them."""
    eol = "\r\n" if "\r\n" in answer else "\n"
    parts = re.split(r"(?m)^(?=m=)", answer)
    out = [parts[0]]
    for section in parts[1:]:
        mid = _mid(section)
        if mid not in offered or TRANSPORT_CC_URI in section:
            out.append(section)
            continue
        ext_id, pts = offered[mid]
        lines = section.split(eol)
        kept = {int(pt) for pt in re.findall(r"^a=rtpmap:(\d+) ", section, re.M)}
        extra = [f"a=extmap:{ext_id} {TRANSPORT_CC_URI}"]
        extra += [f"a=rtcp-fb:{pt} transport-cc" for pt in pts if pt in kept]
        # after the m-section's last attribute (before the trailing empty line, if any)
        end = len(lines)
        while end > 0 and lines[end - 1] == "":
            end -= 1
        out.append(eol.join(lines[:end] + extra + lines[end:]))
    return "".join(out)


def _sections(sdp: str) -> list[str]:
    return re.split(r"(?m)^(?=m=)", sdp)[1:]


def _mid(section: str) -> str | None:
    match = re.search(r"^a=mid:(\S+)", section, re.M)
    return match.group(1) if match else None


# ------------------------------------------------------------------ RTP


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


# ------------------------------------------------------------------ feedback


class TransportFeedback:
    """Arrival times of the packets of one receiving transport, and the feedback
    packets that report them."""

    def __init__(self, own_ssrc: int) -> None:
        self.own_ssrc = own_ssrc
        self.media_ssrc = 0
        #: unwrapped sequence number -> arrival time (s)
        self._arrivals: dict[int, float] = {}
        self._highest: int | None = None
        #: the next sequence number to report (None: the lowest received)
        self._next: int | None = None
        self._count = 0
        self.feedback_sent = 0
        self.packets_reported = 0

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
        self._arrivals.setdefault(unwrapped, now)
        if self._highest is None or unwrapped > self._highest:
            self._highest = unwrapped
        if len(self._arrivals) > MAX_PENDING:
            oldest = min(self._arrivals)
            del self._arrivals[oldest]
            self._next = oldest + 1

    def feedback(self) -> list[bytes]:
        """Feedback packets for everything received since the last call (none when
        nothing was)."""
        out: list[bytes] = []
        while self._arrivals:
            base = min(self._arrivals) if self._next is None else self._next
            packet, reported = self._build(base)
            out.append(packet)
            self._next = base + reported
            for seq in [s for s in self._arrivals if s < self._next]:
                del self._arrivals[seq]
        self.feedback_sent += len(out)
        return out

    def _build(self, base: int) -> tuple[bytes, int]:
        """One feedback packet from ``base``: its bytes and how many sequence numbers it
        reports (up to the highest received, at most ``MAX_STATUS``, and ending before a
        packet whose delta a 2-byte field cannot hold)."""
        arrivals = self._arrivals
        first = min(s for s in arrivals if s >= base)
        ref = int(round(arrivals[first] / TICK)) // REF_TICKS
        previous = ref * REF_TICKS
        symbols: list[int] = []
        deltas = bytearray()
        highest = max(arrivals)
        seq = base
        while seq <= highest and len(symbols) < MAX_STATUS:
            at = arrivals.get(seq)
            if at is None:
                symbols.append(NOT_RECEIVED)
            else:
                ticks = int(round(at / TICK))
                delta = ticks - previous
                if 0 <= delta <= 0xFF:
                    symbols.append(SMALL)
                    deltas.append(delta)
                elif -0x8000 <= delta <= 0x7FFF:
                    symbols.append(LARGE)
                    deltas += struct.pack("!h", delta)
                else:
                    break  # reported by the next packet, with its own reference time
                previous = ticks
                self.packets_reported += 1
            seq += 1
        self._count = (self._count + 1) & 0xFF
        body = struct.pack(
            "!IIHHI",
            self.own_ssrc,
            self.media_ssrc,
            base & 0xFFFF,
            len(symbols),
            ((ref & 0xFFFFFF) << 8) | ((self._count - 1) & 0xFF),
        )
        body += encode_chunks(symbols) + bytes(deltas)
        padding = -(len(body) + 4) % 4
        if padding:
            body += bytes(padding - 1) + bytes((padding,))
        words = (len(body) + 4) // 4 - 1
        header = struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | 15, 205, words)
        return header + body, len(symbols)


def encode_chunks(symbols: list[int]) -> bytes:
    """Packet status chunks for ``symbols`` (0 not received, 1 small delta, 2 large)."""
    out = bytearray()
    i, n = 0, len(symbols)
    while i < n:
        run = 1
        while i + run < n and symbols[i + run] == symbols[i] and run < 0x1FFF:
            run += 1
        if run >= 7:
            out += struct.pack("!H", (symbols[i] << 13) | run)
            i += run
            continue
        window = symbols[i : i + 14]
        if len(window) == 14 and max(window) <= SMALL:
            word = 0x8000  # status vector, 1-bit symbols
            for k, s in enumerate(window):
                word |= s << (13 - k)
            out += struct.pack("!H", word)
            i += 14
            continue
        window = symbols[i : i + 7]
        if len(window) < 7 and len(set(window)) == 1:
            out += struct.pack("!H", (window[0] << 13) | len(window))
            i += len(window)
            continue
        word = 0xC000  # status vector, 2-bit symbols (unused slots: not received)
        for k, s in enumerate(window):
            word |= s << (2 * (6 - k))
        out += struct.pack("!H", word)
        i += len(window)
    return bytes(out)
