"""Minimal RTP header view, header-extension handling and VP8 payload descriptor.

Hot path: one ``parse_rtp`` per incoming packet, no aiortc ``RtpPacket`` objects.
"""

from __future__ import annotations

from struct import Struct

_HEADER = Struct("!BBHII")
_U16 = Struct("!H")

#: One-byte header extension profile (RFC 8285).
ONE_BYTE_PROFILE = 0xBEDE


class RtpError(ValueError):
    """A packet that is not valid RTP."""


class RtpView:
    """The fields of one RTP packet that forwarding needs, parsed once.

    ``payload`` offsets exclude padding. ``ext_start``/``ext_end`` bound the
    extension elements (after the 4-byte extension header) when ``ext_profile`` is set.
    """

    __slots__ = (
        "data",
        "payload_type",
        "marker",
        "seq",
        "timestamp",
        "ssrc",
        "csrc_end",
        "ext_profile",
        "ext_start",
        "ext_end",
        "payload_start",
        "payload_end",
        "padding",
        "audio_level",
        "abs_send_time",
    )

    def __init__(self, data: bytes) -> None:
        n = len(data)
        if n < 12:
            raise RtpError("packet shorter than an RTP header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data, 0)
        if b0 >> 6 != 2:
            raise RtpError("not RTP version 2")
        self.data = data
        #: the ssrc-audio-level byte, set by the Source that knows the extension id (-1: none)
        self.audio_level = -1
        #: the 3-byte abs-send-time value forwarded copies carry, set by the Source
        self.abs_send_time = b""
        self.payload_type = b1 & 0x7F
        self.marker = b1 >> 7
        self.seq = seq
        self.timestamp = ts
        self.ssrc = ssrc
        pos = 12 + 4 * (b0 & 0x0F)
        if pos > n:
            raise RtpError("truncated CSRC list")
        self.csrc_end = pos
        self.ext_profile = 0
        self.ext_start = self.ext_end = pos
        if b0 & 0x10:
            if pos + 4 > n:
                raise RtpError("truncated header extension")
            profile, words = _HEADER_EXT.unpack_from(data, pos)
            self.ext_profile = profile
            self.ext_start = pos + 4
            pos = self.ext_end = pos + 4 + 4 * words
            if pos > n:
                raise RtpError("truncated header extension")
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or pos + padding > n:
                raise RtpError("bad padding length")
        self.padding = padding
        self.payload_start = pos
        self.payload_end = n - padding

    @property
    def payload_size(self) -> int:
        return self.payload_end - self.payload_start

    def payload(self) -> bytes:
        return self.data[self.payload_start : self.payload_end]

    def extensions(self) -> dict[int, bytes]:
        """All header-extension elements by id (one-byte and two-byte forms)."""
        if not self.ext_profile:
            return {}
        return parse_extensions(self.data, self.ext_profile, self.ext_start, self.ext_end)

    def extension(self, ext_id: int) -> bytes | None:
        if not self.ext_profile or not ext_id:
            return None
        return self.extensions().get(ext_id)


_HEADER_EXT = Struct("!HH")


def parse_rtp(data: bytes) -> RtpView:
    return RtpView(data)


def parse_extensions(data: bytes, profile: int, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = start
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:  # padding
                pos += 1
                continue
            ext_id = b >> 4
            length = (b & 0x0F) + 1
            if ext_id == 15:
                break
            pos += 1
            if pos + length > end:
                raise RtpError("truncated one-byte extension element")
            out[ext_id] = data[pos : pos + length]
            pos += length
    elif profile & 0xFFF0 == 0x1000:
        while pos + 1 < end:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            length = data[pos + 1]
            pos += 2
            if pos + length > end:
                raise RtpError("truncated two-byte extension element")
            out[ext_id] = data[pos : pos + length]
            pos += length
    return out


def build_extension_block(elements: list[tuple[int, bytes]]) -> bytes:
    """A header-extension block (profile, length, elements, padding) in one-byte form.

    Elements with an id above 14 or a value longer than 16 bytes use the two-byte
    form for the whole block. Returns b"" for no elements.
    """
    if not elements:
        return b""
    if all(0 < i < 15 and 0 < len(v) <= 16 for i, v in elements):
        profile = ONE_BYTE_PROFILE
        body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    else:
        profile = 0x1000
        body = b"".join(bytes([i, len(v)]) + v for i, v in elements)
    body += b"\x00" * (-len(body) % 4)
    return _HEADER_EXT.pack(profile, len(body) // 4) + body


def abs_send_time(ntp_seconds: float) -> bytes:
    """The 3-byte abs-send-time value (6.18 fixed point seconds) for a wall-clock time."""
    value = int(ntp_seconds * (1 << 18)) & 0xFFFFFF
    return value.to_bytes(3, "big")


def build_rtp_header(
    marker: int, payload_type: int, seq: int, timestamp: int, ssrc: int, extension: bytes
) -> bytes:
    b0 = 0x90 if extension else 0x80
    return _HEADER.pack(b0, (marker << 7) | payload_type, seq, timestamp, ssrc) + extension


def is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and 191 < data[1] < 224


# --------------------------------------------------------------------------- VP8


class Vp8Descriptor:
    """The VP8 payload descriptor (RFC 7741 §4.2) of one packet.

    ``picture_id`` is -1 when absent; ``tl0picidx`` and ``tid`` likewise. ``size`` is
    the descriptor length in bytes. ``keyframe`` is true on the first packet of a
    keyframe (start of partition 0 with the P bit clear). ``width``/``height`` are
    set on such packets.
    """

    __slots__ = (
        "start",
        "partition_id",
        "picture_id",
        "picture_id_bits",
        "tl0picidx",
        "tid_byte",
        "tk_flags",
        "size",
        "keyframe",
        "width",
        "height",
        "non_reference",
    )

    def __init__(self, payload: bytes, offset: int = 0, end: int | None = None) -> None:
        end = len(payload) if end is None else end
        if offset >= end:
            raise RtpError("empty VP8 payload")
        b0 = payload[offset]
        pos = offset + 1
        self.start = (b0 >> 4) & 1
        self.non_reference = (b0 >> 5) & 1
        self.partition_id = b0 & 0x07  # bit 3 is reserved (R), ignored
        self.picture_id = -1
        self.picture_id_bits = 0
        self.tl0picidx = -1
        self.tid_byte = -1
        self.tk_flags = 0
        if b0 & 0x80:
            if pos >= end:
                raise RtpError("truncated VP8 descriptor")
            x = payload[pos]
            pos += 1
            if x & 0x80:
                if pos >= end:
                    raise RtpError("truncated VP8 picture id")
                p = payload[pos]
                if p & 0x80:
                    if pos + 1 >= end:
                        raise RtpError("truncated VP8 picture id")
                    self.picture_id = ((p & 0x7F) << 8) | payload[pos + 1]
                    self.picture_id_bits = 15
                    pos += 2
                else:
                    self.picture_id = p
                    self.picture_id_bits = 7
                    pos += 1
            if x & 0x40:
                if pos >= end:
                    raise RtpError("truncated VP8 TL0PICIDX")
                self.tl0picidx = payload[pos]
                pos += 1
            if x & 0x30:
                self.tk_flags = x & 0x30
                if pos >= end:
                    raise RtpError("truncated VP8 TID/KEYIDX")
                self.tid_byte = payload[pos]
                pos += 1
        self.size = pos - offset
        self.keyframe = False
        self.width = self.height = 0
        if self.start and self.partition_id == 0 and pos < end and not payload[pos] & 1:
            self.keyframe = True
            # frame tag (3) + start code 9d 01 2a (3) + width (2) + height (2)
            if pos + 10 <= end and payload[pos + 3 : pos + 6] == b"\x9d\x01\x2a":
                self.width = int.from_bytes(payload[pos + 6 : pos + 8], "little") & 0x3FFF
                self.height = int.from_bytes(payload[pos + 8 : pos + 10], "little") & 0x3FFF

    @property
    def tid(self) -> int:
        """The temporal layer (TID, 0-3), or -1 when the descriptor has none (T=0)."""
        return self.tid_byte >> 6 if self.tk_flags & 0x20 else -1

    @property
    def layer_sync(self) -> bool:
        """The Y bit: the frame references only the base temporal layer, so forwarding
        may take up this frame's TID from here."""
        return bool(self.tk_flags & 0x20 and self.tid_byte & 0x20)


def build_vp8_descriptor(desc: Vp8Descriptor, picture_id: int, tl0picidx: int) -> bytes:
    """A descriptor like ``desc`` with the picture id (always 15-bit) and TL0PICIDX replaced."""
    b0 = (desc.non_reference << 5) | (desc.start << 4) | desc.partition_id
    x = 0
    tail = b""
    if desc.picture_id >= 0:
        x |= 0x80
        pid = picture_id & 0x7FFF
        tail += bytes((0x80 | (pid >> 8), pid & 0xFF))
    if desc.tl0picidx >= 0:
        x |= 0x40
        tail += bytes((tl0picidx & 0xFF,))
    if desc.tid_byte >= 0:
        x |= desc.tk_flags
        tail += bytes((desc.tid_byte,))
    if x:
        return bytes((b0 | 0x80, x)) + tail
    return bytes((b0,))
