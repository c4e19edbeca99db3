"""H.264 RTP payloads (RFC 6184, packetization-mode 1): what the SFU reads of them.

Parley passes H.264 through: it never depacketizes nor re-packetizes. Per packet it
reads the NAL unit types (single NAL unit packets, STAP-A aggregates, FU-A fragments)
to know where a decodable start is, and the resolution from a sequence parameter set.

* :func:`parse_h264` reads one payload: the NAL types that begin in it (an FU-A start
  fragment counts as the NAL it begins), whether it carries slice data, and the SPS.
  Payloads of packetization-mode 2 (STAP-B, MTAP16/24, FU-B), of the reserved types 0,
  30 and 31, with the forbidden bit set, or whose aggregate/fragment structure overruns
  the payload raise ``RtpError`` (the Source drops them, as it drops a bad VP8
  descriptor).
* :class:`H264Tracker` (one per H.264 Source) marks the packets a subscriber may start
  on. An IDR slice alone is not enough: the decoder needs the SPS and PPS too.
  Packets that carry only parameter sets (SPS, PPS, SEI, AUD) are held back until the
  next packet with slice data; if that one begins an IDR slice and the held packets or
  the packet itself carry an SPS and a PPS, the whole run (parameter sets, then the IDR
  start) is a keyframe. Senders that aggregate SPS+PPS+IDR in one STAP-A (libwebrtc,
  Chromium) give runs of one packet; ``rtph264pay`` (GStreamer) sends them as single NAL
  unit packets, held for the microseconds until the IDR's first fragment arrives. An
  IDR without SPS and PPS just before it is not a keyframe: a subscriber waiting for
  one asks again (PLI) rather than start on a picture it cannot decode.

:class:`H264Descriptor` is what the forwarding path reads of a packet (it reads a VP8
descriptor's fields): H.264 has no picture id, TL0PICIDX nor temporal layer index to
rewrite, so those are absent (-1) and only sequence numbers and timestamps are
rewritten.
"""

from __future__ import annotations

from .packet import RtpError, RtpView, Vp8Descriptor

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
STAP_A = 24
FU_A = 28
#: types of packetization modes 0 and 2 that mode 1 never carries (RFC 6184 table 3)
_NOT_MODE_1 = {25: "STAP-B", 26: "MTAP16", 27: "MTAP24", 29: "FU-B"}
#: at most this many parameter-set-only packets are held before one with slice data
MAX_HELD = 16


class H264Nals:
    """The NAL units of one RTP payload (``parse_h264``)."""

    __slots__ = ("types", "slice", "sps", "pps", "idr", "fu_start", "fu_end", "sps_at")

    def __init__(self) -> None:
        #: the NAL types that begin in this packet (an FU-A start: its NAL's type)
        self.types: list[int] = []
        #: slice data (types 1-5) begins or continues here
        self.slice = False
        self.sps = self.pps = self.idr = False
        self.fu_start = self.fu_end = False
        #: (start, end) of the first SPS NAL unit, for its resolution
        self.sps_at: tuple[int, int] | None = None

    def _add(self, nal_type: int, start: int, end: int) -> None:
        self.types.append(nal_type)
        if 1 <= nal_type <= 5:
            self.slice = True
        if nal_type == NAL_IDR:
            self.idr = True
        elif nal_type == NAL_SPS:
            self.sps = True
            if self.sps_at is None:
                self.sps_at = (start, end)
        elif nal_type == NAL_PPS:
            self.pps = True


def _check_type(nal_type: int, header: int, where: str) -> None:
    if header & 0x80:
        raise RtpError(f"H.264 {where}: forbidden_zero_bit set")
    if nal_type in _NOT_MODE_1:
        raise RtpError(f"H.264 {where}: {_NOT_MODE_1[nal_type]} is not packetization-mode 1")
    if nal_type in (0, 30, 31):
        raise RtpError(f"H.264 {where}: reserved NAL unit type {nal_type}")


def parse_h264(data: bytes, start: int = 0, end: int | None = None) -> H264Nals:
    """The NAL units of the H.264 payload ``data[start:end]``; RtpError when malformed."""
    end = len(data) if end is None else end
    if start >= end:
        raise RtpError("empty H.264 payload")
    out = H264Nals()
    header = data[start]
    nal_type = header & 0x1F
    _check_type(nal_type, header, "payload")
    if nal_type == STAP_A:
        pos = start + 1
        while pos < end:
            if pos + 2 > end:
                raise RtpError("truncated STAP-A NAL unit size")
            size = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if size == 0 or pos + size > end:
                raise RtpError("STAP-A NAL unit overruns the payload")
            inner = data[pos] & 0x1F
            _check_type(inner, data[pos], "STAP-A")
            if inner in (STAP_A, FU_A):
                raise RtpError(f"STAP-A holds an aggregation/fragment unit (type {inner})")
            out._add(inner, pos, pos + size)
            pos += size
        if not out.types:
            raise RtpError("STAP-A without NAL units")
    elif nal_type == FU_A:
        if start + 2 >= end:
            raise RtpError("truncated FU-A")
        fu = data[start + 1]
        inner = fu & 0x1F
        out.fu_start, out.fu_end = bool(fu & 0x80), bool(fu & 0x40)
        if out.fu_start and out.fu_end:
            raise RtpError("FU-A with both start and end bits")
        _check_type(inner, 0, "FU-A")
        if inner in (STAP_A, FU_A):
            raise RtpError(f"FU-A fragments an aggregation/fragment unit (type {inner})")
        if out.fu_start:
            out._add(inner, start + 1, end)  # (an SPS is never read from a fragment)
            out.sps_at = None
        elif 1 <= inner <= 5:
            out.slice = True
    else:
        out._add(nal_type, start, end)
    return out


class H264Descriptor(Vp8Descriptor):
    """What the forwarding path reads of an H.264 packet: ``keyframe`` (a subscriber
    may start here, :class:`H264Tracker`), no picture id / TL0PICIDX / temporal layer."""

    __slots__ = ()

    def __init__(self, keyframe: bool, start: bool, width: int = 0, height: int = 0) -> None:
        self.start = int(start)
        self.non_reference = 0
        self.partition_id = 0
        self.picture_id = -1
        self.picture_id_bits = 0
        self.tl0picidx = -1
        self.tid_byte = -1
        self.tk_flags = 0
        self.size = 0
        self.keyframe = keyframe
        self.width = width
        self.height = height


class H264Tracker:
    """Marks keyframes (IDR preceded by SPS and PPS) in one H.264 stream, holding
    parameter-set-only packets until the packet with slice data after them arrives."""

    def __init__(self, max_held: int = MAX_HELD) -> None:
        self._max_held = max_held
        self._held: list[RtpView] = []
        self._sps = self._pps = False
        self._idr_ts = -1
        self.width = self.height = 0
        #: keyframes seen, and IDR slices that had no SPS+PPS before them
        self.keyframes = 0
        self.idr_without_parameter_sets = 0

    def push(self, pkt: RtpView, nals: H264Nals) -> list[tuple[RtpView, H264Descriptor]]:
        """The packets to forward now, in order (``pkt`` may be held: then maybe none)."""
        self._sps |= nals.sps
        self._pps |= nals.pps
        if nals.sps_at is not None:
            size = sps_resolution(pkt.data[nals.sps_at[0] : nals.sps_at[1]])
            if size is not None:
                self.width, self.height = size
        if not nals.slice and len(self._held) < self._max_held:
            self._held.append(pkt)
            return []
        run, self._held = [*self._held, pkt], []
        key = nals.idr and self._sps and self._pps
        if nals.idr and not key and pkt.timestamp != self._idr_ts:
            self.idr_without_parameter_sets += 1  # (not a later slice of the same IDR)
        if nals.idr:
            self._idr_ts = pkt.timestamp
        if nals.slice:
            self._sps = self._pps = False
        if key:
            self.keyframes += 1
        w, h = (self.width, self.height) if key else (0, 0)
        return [(p, H264Descriptor(key, True, w, h)) for p in run[:-1]] + [
            (pkt, H264Descriptor(key, bool(nals.types), w, h))
        ]

    def flush(self) -> list[tuple[RtpView, H264Descriptor]]:
        """The held packets, as not-keyframes (the stream ends or is reset)."""
        run, self._held = self._held, []
        self._sps = self._pps = False
        return [(p, H264Descriptor(False, True)) for p in run]


# ------------------------------------------------------------------ SPS resolution


class _Bits:
    def __init__(self, rbsp: bytes) -> None:
        self._data = rbsp
        self._pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self._pos >> 3
            if byte >= len(self._data):
                raise RtpError("SPS too short")
            value = (value << 1) | ((self._data[byte] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise RtpError("bad exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def sps_resolution(nal: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from an SPS NAL unit (header byte included), or None
    when it cannot be read (H.264 §7.3.2.1.1, cropping applied)."""
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention
    try:
        bits = _Bits(rbsp)
        profile = bits.u(8)
        bits.u(16)  # constraint flags, level
        bits.ue()  # seq_parameter_set_id
        chroma = 1
        frame_mbs_only = 1
        if profile in _HIGH_PROFILES:
            chroma = bits.ue()
            if chroma == 3:
                bits.u(1)
            bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass
            if bits.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma != 3 else 12):
                    if bits.u(1):
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + bits.se() + 256) % 256
                            last = nxt or last
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()
        elif poc_type == 1:
            bits.u(1), bits.se(), bits.se()
            for _ in range(bits.ue()):
                bits.se()
        bits.ue(), bits.u(1)  # max_num_ref_frames, gaps_in_frame_num_allowed
        width_mbs = bits.ue() + 1
        height_units = bits.ue() + 1
        frame_mbs_only = bits.u(1)
        if not frame_mbs_only:
            bits.u(1)
        bits.u(1)  # direct_8x8_inference
        crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue()) if bits.u(1) else (0, 0, 0, 0)
    except RtpError:
        return None
    unit_x = 1 if chroma in (0, 3) else 2
    unit_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        return None
    return width, height
