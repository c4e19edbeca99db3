"""RTCP transport-wide congestion control feedback (pure byte functions).

The format is draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1: an RTPFB
(PT 205) with FMT 15. After the common feedback header (sender SSRC, media SSRC):

* base sequence number (16 bits) and packet status count (16 bits): the packets
  reported are ``base``, ``base + 1``, ..., ``base + count - 1`` (mod 2^16);
* reference time (24 bits, signed, units of 64 ms) and feedback packet count (8 bits);
* packet chunks, 16 bits each, until ``count`` statuses are known. A run-length chunk
  (``0 SS LLLLLLLLLLLLL``) repeats status ``SS`` L times; a status-vector chunk
  (``1 S ...``) holds 14 one-bit symbols (S = 0: 0 not received, 1 received with a
  small delta) or 7 two-bit ones (S = 1). Statuses: 0 not received, 1 received with a
  small delta, 2 received with a large or negative delta, 3 reserved. Symbols past
  ``count`` in the last chunk are ignored;
* one receive delta per received packet, in 250 µs units: one unsigned byte for
  status 1, two signed bytes for status 2. The first is relative to the reference
  time, each next to the previous packet's arrival;
* zero padding to a 32-bit boundary (RTCP padding, P bit and count, in libwebrtc).

aiortc's RTCP parser reads FMT 15 as a generic NACK, so Parley reads the raw compound
itself: :func:`find_transport_feedback`. A malformed packet raises :class:`TwccError`;
callers count it and drop it.

:func:`build_feedback_prefix` is Parley's one feedback builder (tests, and the receivers
of ``loadgen/media/twcc.py``: ``parley load`` and ``parley bot``): chunks chosen as
libwebrtc chooses them, RTCP padding as libwebrtc sends it on request, and a packet that
ends before a receive delta too large for 16 bits; :func:`build_transport_feedback`
raises there instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from struct import Struct

__all__ = [
    "DELTA_UNIT",
    "REFERENCE_UNIT",
    "TransportFeedback",
    "TwccError",
    "build_feedback_prefix",
    "build_transport_feedback",
    "find_transport_feedback",
    "parse_transport_feedback",
]

RTPFB = 205
FMT_TRANSPORT_CC = 15
#: seconds per reference-time tick and per receive-delta tick
REFERENCE_UNIT = 0.064
DELTA_UNIT = 0.00025

_FIXED = Struct("!BBHIIHHI")  # header, SSRCs, base seq, status count, ref time + fb count
_NOT_RECEIVED, _SMALL, _LARGE = 0, 1, 2
#: one feedback reports at most this many packets (an RTCP packet is <= 256 kB anyway)
MAX_STATUS_COUNT = 0xFFFF


class TwccError(ValueError):
    """A transport-cc feedback packet that cannot be read."""


@dataclass(frozen=True, slots=True)
class TransportFeedback:
    """One transport-cc feedback packet.

    ``arrivals[i]`` is for transport sequence number ``(base_seq + i) & 0xFFFF``: its
    arrival time in seconds on the receiver's clock (``reference_time`` plus the
    receive deltas up to it), or None when reported not received.
    ``reference_ticks`` is the raw 24-bit field (to unwrap across its wrap);
    ``reference_time`` its value as signed 24 bits times 64 ms.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_ticks: int
    reference_time: float
    fb_count: int
    arrivals: tuple[float | None, ...]

    @property
    def received(self) -> int:
        return sum(1 for a in self.arrivals if a is not None)


def _signed24(value: int) -> int:
    return value - (1 << 24) if value & 0x800000 else value


def parse_transport_feedback(packet: bytes) -> TransportFeedback:
    """Read one RTPFB FMT 15 packet (exactly one RTCP packet, its own length)."""
    if len(packet) < _FIXED.size:
        raise TwccError(f"transport-cc feedback of {len(packet)} bytes: shorter than 20")
    b0, pt, length, sender, media, base, count, ref_fb = _FIXED.unpack_from(packet)
    if b0 >> 6 != 2 or pt != RTPFB or b0 & 0x1F != FMT_TRANSPORT_CC:
        raise TwccError("not an RTCP transport-cc feedback packet (V=2, PT 205, FMT 15)")
    end = (length + 1) * 4
    if end > len(packet):
        raise TwccError(f"transport-cc feedback says {end} bytes, has {len(packet)}")
    # RTCP padding (P bit, its count in the last byte) is not trusted: the statuses say
    # how many delta bytes follow; what is left after them may be padding (libwebrtc
    # pads to 32 bits, some senders set P with a wrong count).
    slack = max(3, packet[end - 1]) if b0 & 0x20 else 3
    if count == 0:
        raise TwccError("transport-cc feedback with a packet status count of 0")
    statuses: list[int] = []
    pos = _FIXED.size
    while len(statuses) < count:
        if pos + 2 > end:
            raise TwccError(f"packet chunks end after {len(statuses)} of {count} statuses")
        chunk = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
        left = count - len(statuses)
        if not chunk & 0x8000:  # run length
            symbol = (chunk >> 13) & 0x3
            run = chunk & 0x1FFF
            if run == 0:
                raise TwccError("run-length chunk of length 0")
            statuses.extend([symbol] * min(run, left))
        elif chunk & 0x4000:  # status vector, 7 two-bit symbols
            statuses.extend((chunk >> (12 - 2 * i)) & 0x3 for i in range(min(7, left)))
        else:  # status vector, 14 one-bit symbols
            statuses.extend((chunk >> (13 - i)) & 0x1 for i in range(min(14, left)))
    ref_ticks = ref_fb >> 8
    reference = _signed24(ref_ticks) * REFERENCE_UNIT
    ticks = 0
    arrivals: list[float | None] = []
    for i, status in enumerate(statuses):
        if status == _NOT_RECEIVED:
            arrivals.append(None)
            continue
        if status == _SMALL:
            if pos + 1 > end:
                raise TwccError(f"receive deltas end at packet {i} of {count}")
            ticks += packet[pos]
            pos += 1
        elif status == _LARGE:
            if pos + 2 > end:
                raise TwccError(f"receive deltas end at packet {i} of {count}")
            ticks += int.from_bytes(packet[pos : pos + 2], "big", signed=True)
            pos += 2
        else:
            raise TwccError(f"reserved packet status 3 for packet {i}")
        arrivals.append(reference + ticks * DELTA_UNIT)
    if end - pos > slack:
        raise TwccError(f"{end - pos} bytes after the receive deltas (not padding)")
    return TransportFeedback(
        sender_ssrc=sender,
        media_ssrc=media,
        base_seq=base,
        reference_ticks=ref_ticks,
        reference_time=reference,
        fb_count=ref_fb & 0xFF,
        arrivals=tuple(arrivals),
    )


def find_transport_feedback(compound: bytes) -> list[TransportFeedback]:
    """Every transport-cc feedback packet of an RTCP compound, in order.

    Raises :class:`TwccError` when one is malformed or overruns the compound; other
    RTCP packets are skipped (the scan stops at one whose length overruns the data,
    which is not this module's to judge).
    """
    found: list[TransportFeedback] = []
    pos = 0
    total = len(compound)
    while pos + 4 <= total:
        b0, pt = compound[pos], compound[pos + 1]
        size = (((compound[pos + 2] << 8) | compound[pos + 3]) + 1) * 4
        is_twcc = pt == RTPFB and b0 & 0x1F == FMT_TRANSPORT_CC and b0 >> 6 == 2
        if pos + size > total:
            if is_twcc:
                raise TwccError(f"transport-cc feedback of {size} bytes overruns the compound")
            break
        if is_twcc:
            found.append(parse_transport_feedback(compound[pos : pos + size]))
        pos += size
    return found


class _LastChunk:
    """The packet chunk being filled, as libwebrtc's ``TransportFeedback::LastChunk``:
    it takes symbols while one kind of chunk can hold them all (a two-bit vector up to
    7, a one-bit vector up to 14 without a large delta, a run length while all equal)."""

    def __init__(self) -> None:
        self.symbols: list[int] = []  # the first 14 at most (a longer chunk is a run)
        self.size = 0
        self.all_same = True
        self.has_large = False

    def clear(self) -> None:
        self.symbols = []
        self.size = 0
        self.all_same = True
        self.has_large = False

    def can_add(self, status: int) -> bool:
        if self.size < 7:
            return True
        if self.size < 14 and not self.has_large and status != _LARGE:
            return True
        return self.size < 0x1FFF and self.all_same and status == self.symbols[0]

    def add(self, status: int) -> None:
        if self.size < 14:
            self.symbols.append(status)
        self.all_same = self.all_same and status == self.symbols[0]
        self.has_large = self.has_large or status == _LARGE
        self.size += 1

    def emit(self) -> int:
        """The chunk for a full one: a run length when all equal, a one-bit vector when
        14 long, else a two-bit vector of its first 7 (the rest stays)."""
        if self.all_same:
            chunk = (self.symbols[0] << 13) | self.size
            self.clear()
            return chunk
        if self.size == 14:
            chunk = _vector(self.symbols, 1)
            self.clear()
            return chunk
        chunk = _vector(self.symbols[:7], 2)
        rest = self.symbols[7:]
        self.clear()
        for status in rest:
            self.add(status)
        return chunk

    def last(self) -> int:
        """The chunk for the last one: a run length when all equal, a two-bit vector up
        to 7, else a one-bit vector (unused slots: not received)."""
        if self.all_same:
            return (self.symbols[0] << 13) | self.size
        return _vector(self.symbols, 2 if self.size <= 7 else 1)


def _vector(symbols: Sequence[int], bits: int) -> int:
    chunk = 0xC000 if bits == 2 else 0x8000
    top = 12 if bits == 2 else 13
    for k, s in enumerate(symbols):
        chunk |= s << (top - bits * k)
    return chunk


def _chunks(statuses: Sequence[int]) -> list[int]:
    """Encode statuses as packet chunks, as libwebrtc does (:class:`_LastChunk`)."""
    out: list[int] = []
    chunk = _LastChunk()
    for status in statuses:
        if not chunk.can_add(status):
            out.append(chunk.emit())
        chunk.add(status)
    if chunk.size:
        out.append(chunk.last())
    return out


def build_transport_feedback(
    base_seq: int,
    arrivals: Sequence[float | None],
    fb_count: int,
    sender_ssrc: int = 1,
    media_ssrc: int = 0,
    reference_ticks: int | None = None,
    *,
    rtcp_padding: bool = False,
) -> bytes:
    """One RTPFB FMT 15 packet reporting ``arrivals`` (seconds, receiver clock, or None:
    not received) for transport sequence numbers from ``base_seq``; a receive delta
    that does not fit 16 signed bits raises ValueError (:func:`build_feedback_prefix`
    reports up to it instead). Options as :func:`build_feedback_prefix`."""
    packet, reported = build_feedback_prefix(
        base_seq,
        arrivals,
        fb_count,
        sender_ssrc,
        media_ssrc,
        reference_ticks,
        rtcp_padding=rtcp_padding,
    )
    if reported < len(arrivals):
        raise ValueError(f"the receive delta of packet {reported} does not fit 16 bits")
    return packet


def build_feedback_prefix(
    base_seq: int,
    arrivals: Sequence[float | None],
    fb_count: int,
    sender_ssrc: int = 1,
    media_ssrc: int = 0,
    reference_ticks: int | None = None,
    *,
    rtcp_padding: bool = False,
) -> tuple[bytes, int]:
    """One RTPFB FMT 15 packet reporting as many of ``arrivals`` as it can, and how many
    it reports: all, or those before the first whose receive delta does not fit 16
    signed bits (a receiver reports that one in its next packet, which gets its own
    reference time). ValueError when it cannot report even one.

    The reference time is ``reference_ticks`` (its 24 bits read as signed) when given,
    else the first arrival rounded down to 64 ms (written modulo 2^24: the clock may be
    past 2^23 ticks, 6.2 days). Deltas are rounded to 250 µs, cumulatively (no drift).
    The packet is zero-padded to 32 bits; with ``rtcp_padding`` the padding is RTCP
    padding (P bit set, its length in the last byte), as libwebrtc sends it.
    """
    if not arrivals or len(arrivals) > MAX_STATUS_COUNT:
        raise ValueError("a feedback reports 1 to 65535 packets")
    if reference_ticks is None:
        first = next((a for a in arrivals if a is not None), 0.0)
        ticks_at = int(first // REFERENCE_UNIT)
    else:
        ticks_at = _signed24(reference_ticks & 0xFFFFFF)
    reference = ticks_at * REFERENCE_UNIT
    statuses: list[int] = []
    deltas = bytearray()
    ticks = 0
    for arrival in arrivals:
        if arrival is None:
            statuses.append(_NOT_RECEIVED)
            continue
        target = round((arrival - reference) / DELTA_UNIT)
        delta = target - ticks
        if 0 <= delta <= 0xFF:
            statuses.append(_SMALL)
            deltas.append(delta)
        elif -0x8000 <= delta <= 0x7FFF:
            statuses.append(_LARGE)
            deltas += delta.to_bytes(2, "big", signed=True)
        elif any(statuses):
            break  # the next packet reports it
        else:
            raise ValueError("the first receive delta does not fit 16 bits")
        ticks = target
    body = b"".join(c.to_bytes(2, "big") for c in _chunks(statuses)) + bytes(deltas)
    padding = -len(body) % 4
    if padding and rtcp_padding:
        body += bytes(padding - 1) + bytes((padding,))
    else:
        body += bytes(padding)
    length = (_FIXED.size + len(body)) // 4 - 1
    head = _FIXED.pack(
        0x80 | (0x20 if padding and rtcp_padding else 0) | FMT_TRANSPORT_CC,
        RTPFB,
        length,
        sender_ssrc,
        media_ssrc,
        base_seq & 0xFFFF,
        len(statuses),
        ((ticks_at & 0xFFFFFF) << 8) | (fb_count & 0xFF),
    )
    return head + body, len(statuses)
