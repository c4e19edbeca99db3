"""Simulcast publishing for the bot: three VP8 encodings on one m-line, like Chromium.

aiortc cannot send simulcast (one encoding per sender, and its SDP model drops
``a=rid`` / ``a=simulcast``), so the bot keeps aiortc's sendonly video transceiver
for SDP, ICE and DTLS only and does the rest here:

* :func:`munge_simulcast_offer` rewrites the offer *text*: ``a=rid:… send`` and
  ``a=simulcast:send …`` lines, the mid / rtp-stream-id / repaired-rtp-stream-id
  extmaps, and no ``a=ssrc`` / ``a=ssrc-group`` lines (the server learns each
  layer's SSRC from the MID and RID header extensions, as with a browser).
* :class:`Vp8LayerEncoder` encodes one layer with libvpx through PyAV;
  :func:`vp8_packetize` splits a frame into payloads with a VP8 descriptor.
* :class:`LayerStream` (pure) turns payloads into RTP packets for one layer (own
  SSRC, sequence numbers, timestamp offset, MID + RID extensions), keeps a small
  packet cache and builds RTX retransmissions (OSN prefix, MID + repaired-RID).
* :class:`SimulcastSender` (pure) owns the layers and routes RTCP from the server:
  PLI/FIR set a keyframe request on the layer whose SSRC was named, generic NACKs
  return RTX packets, REMB is recorded (not acted on).
* :class:`SimulcastVideo` is the I/O edge: a paced loop that renders the pattern at
  each layer's size, encodes in a worker thread and sends through a callable
  (``MediaPort.send_rtp`` in the bot), plus a sender report per layer every second.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import re
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.rtp import (
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)
from av import VideoFrame

from loadgen.media.synthetic import VIDEO_CLOCK_RATE, PatternTrack
from sfu.rtp.packet import abs_send_time, build_extension_block, build_rtp_header
from sfu.rtp.rtcp import normalize_lost, parse_rtcp

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

#: Largest VP8 payload (descriptor included) per RTP packet.
MAX_PAYLOAD = 1200
#: Packets kept per layer for NACK answers (about 2 s of the 720p layer at 15 fps).
CACHE_PACKETS = 512
#: libvpx ``cpu-used`` for the realtime deadline: 16 is its fastest setting.
VP8_CPU_USED = 16

#: Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
_NTP_EPOCH_OFFSET = 2_208_988_800

_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\S+)? (\S+)")
_PSFB_PLI = 1
_PSFB_FIR = 4
_PSFB_REMB = 15
_RTPFB_NACK = 1


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One simulcast encoding: its RID, size and target bitrate (bits per second)."""

    rid: str
    width: int
    height: int
    bitrate: int


#: Chromium's three-layer shape for a 720p camera (scale 4, 2, 1).
DEFAULT_LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec("q", 320, 180, 150_000),
    LayerSpec("h", 640, 360, 500_000),
    LayerSpec("f", 1280, 720, 1_500_000),
)


# --------------------------------------------------------------------------- SDP


@dataclass(frozen=True, slots=True)
class SimulcastExtensions:
    """Header-extension ids the simulcast video m-line uses (0: not negotiated)."""

    mid: int
    rid: int
    repaired_rid: int
    abs_send_time: int = 0

    @classmethod
    def from_map(
        cls, extensions: dict[str, int], fallback: SimulcastExtensions
    ) -> SimulcastExtensions:
        """Ids from a negotiated ``uri -> id`` map, each falling back to ``fallback``'s."""
        return cls(
            mid=extensions.get(URI_MID, fallback.mid),
            rid=extensions.get(URI_RID, fallback.rid),
            repaired_rid=extensions.get(URI_REPAIRED_RID, fallback.repaired_rid),
            abs_send_time=extensions.get(URI_ABS_SEND_TIME, fallback.abs_send_time),
        )


@dataclass(frozen=True, slots=True)
class MungedOffer:
    sdp: str
    #: The mid of the video m-line that now announces simulcast.
    mid: str
    extensions: SimulcastExtensions


def _split_sections(lines: list[str]) -> list[list[str]]:
    """The session part, then one list of lines per m-line."""
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def munge_simulcast_offer(sdp: str, rids: Sequence[str]) -> MungedOffer:
    """Turn the first sendonly video m-line of ``sdp`` into a simulcast m-line.

    Adds ``a=rid:<rid> send`` per RID and ``a=simulcast:send r1;r2;…``, extmaps for
    mid, rtp-stream-id and repaired-rtp-stream-id (reusing an existing id for a URI
    already present, else picking ids 1–14 used by no section, so BUNDLEd m-lines
    never disagree), and drops the ``a=ssrc`` and ``a=ssrc-group`` lines of that
    section. Every other line is kept byte for byte. Raises ValueError when there is
    no sendonly video m-line or no free extension id.
    """
    if not rids:
        raise ValueError("no RIDs")
    newline = "\r\n" if "\r\n" in sdp else "\n"
    trailing = sdp.endswith(newline)
    lines = sdp.split(newline)
    if trailing:
        lines = lines[:-1]
    sections = _split_sections(lines)
    used: set[int] = set()
    for section in sections:
        for line in section:
            match = _EXTMAP.match(line)
            if match:
                used.add(int(match.group(1)))
    index = next(
        (
            i
            for i, s in enumerate(sections)
            if i > 0
            and s[0].startswith("m=video ")
            and "a=sendonly" in s
            and not any(line.startswith("a=simulcast:") for line in s)
        ),
        None,
    )
    if index is None:
        raise ValueError("the offer has no sendonly video m-line")
    section = sections[index]
    mid = next((line[6:] for line in section if line.startswith("a=mid:")), None)
    if mid is None:
        raise ValueError("the video m-line has no a=mid")
    present: dict[str, int] = {}
    for line in section:
        match = _EXTMAP.match(line)
        if match:
            present[match.group(2)] = int(match.group(1))
    free = (i for i in range(1, 15) if i not in used)
    ids: dict[str, int] = {}
    added: list[str] = []
    for uri in (URI_MID, URI_RID, URI_REPAIRED_RID):
        if uri in present:
            ids[uri] = present[uri]
            continue
        ext_id = next(free, None)
        if ext_id is None:
            raise ValueError("no free one-byte header extension id")
        ids[uri] = ext_id
        added.append(f"a=extmap:{ext_id} {uri}")
    kept = [line for line in section if not line.startswith(("a=ssrc:", "a=ssrc-group:"))]
    last_extmap = max((i for i, line in enumerate(kept) if _EXTMAP.match(line)), default=-1)
    if last_extmap < 0:
        last_extmap = next(i for i, line in enumerate(kept) if line.startswith("a=mid:"))
    kept[last_extmap + 1 : last_extmap + 1] = added
    kept += [f"a=rid:{rid} send" for rid in rids]
    kept.append("a=simulcast:send " + ";".join(rids))
    sections[index] = kept
    out = newline.join(line for s in sections for line in s)
    if trailing:
        out += newline
    extensions = SimulcastExtensions(
        mid=ids[URI_MID],
        rid=ids[URI_RID],
        repaired_rid=ids[URI_REPAIRED_RID],
        abs_send_time=present.get(URI_ABS_SEND_TIME, 0),
    )
    return MungedOffer(sdp=out, mid=mid, extensions=extensions)


# ----------------------------------------------------------------------- VP8


def vp8_packetize(frame: bytes, picture_id: int, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Split one VP8 frame into RTP payloads (RFC 7741), each with a 4-byte descriptor:
    X=1, S on the first, partition 0, a 15-bit picture id. Sizes are balanced."""
    if not frame:
        return []
    room = max_payload - 4
    count = -(-len(frame) // room)
    size = -(-len(frame) // count)
    pid = picture_id & 0x7FFF
    tail = bytes((0x80, 0x80 | (pid >> 8), pid & 0xFF))
    first = b"\x90" + tail
    rest = b"\x80" + tail
    return [(first if i == 0 else rest) + frame[i * size : (i + 1) * size] for i in range(count)]


def vp8_is_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a keyframe (P bit of the frame tag clear)."""
    return bool(frame) and not frame[0] & 1


class Vp8LayerEncoder:
    """libvpx (through PyAV) for one layer: CBR at ``bitrate``, realtime, fastest speed.

    Not thread-safe: the bot drives all its encoders from one worker thread.
    """

    def __init__(
        self, width: int, height: int, bitrate: int, fps: float, cpu_used: int = VP8_CPU_USED
    ) -> None:
        codec: Any = av.CodecContext.create("libvpx", "w")
        codec.width = width
        codec.height = height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(round(fps * 1000), 1000)
        codec.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        codec.gop_size = 3000  # keyframes only when asked for (PLI/FIR) or at start
        codec.qmin = 2
        codec.qmax = 56
        codec.thread_count = 1
        codec.options = {
            "bufsize": str(bitrate),
            "cpu-used": str(cpu_used),
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "overshoot-pct": "15",
            "undershoot-pct": "100",
            "partitions": "0",
            "static-thresh": "1",
            "error-resilient": "1",
        }
        self._codec: Any = codec
        self.width = width
        self.height = height

    def encode(self, image: np.ndarray, pts: int, keyframe: bool) -> bytes:
        """Encode one ``yuv420p`` ndarray; returns the VP8 frame (b"" if libvpx dropped it)."""
        codec = self._codec
        if codec is None:
            raise RuntimeError("encoder closed")
        frame = VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return b"".join(bytes(packet) for packet in codec.encode(frame))

    def close(self) -> None:
        self._codec = None


# ---------------------------------------------------------------- RTP layer


@dataclass(slots=True)
class _Cached:
    timestamp: int
    marker: int
    payload: bytes


@dataclass(slots=True)
class LayerStats:
    frames: int = 0
    keyframes: int = 0
    packets: int = 0
    octets: int = 0
    plis: int = 0
    firs: int = 0
    nacked: int = 0
    rtx_sent: int = 0
    rtx_missed: int = 0


class LayerStream:
    """RTP for one simulcast layer. Pure: no I/O, no clock.

    ``payload_type`` / ``rtx_payload_type`` / ``extensions`` are set from the server's
    answer (:meth:`configure`) before the first packet.
    """

    def __init__(
        self,
        spec: LayerSpec,
        mid: str,
        extensions: SimulcastExtensions,
        *,
        ssrc: int,
        rtx_ssrc: int,
        first_seq: int = 0,
        first_rtx_seq: int = 0,
        timestamp_offset: int = 0,
        picture_id: int = 0,
        payload_type: int = 96,
        rtx_payload_type: int | None = None,
        cache_packets: int = CACHE_PACKETS,
    ) -> None:
        self.spec = spec
        self.mid = mid
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.timestamp_offset = timestamp_offset
        self.picture_id = picture_id & 0x7FFF
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.extensions = extensions
        self._seq = first_seq & 0xFFFF
        self._rtx_seq = first_rtx_seq & 0xFFFF
        self._cache: OrderedDict[int, _Cached] = OrderedDict()
        self._cache_packets = cache_packets
        self.keyframe_requested = True  # the first frame of every layer is a keyframe
        #: RTP timestamp (offset applied) of the last frame sent, for sender reports.
        self.last_timestamp: int | None = None
        self.stats = LayerStats()
        self._mid_bytes = mid.encode()
        self._rid_bytes = spec.rid.encode()

    @property
    def rid(self) -> str:
        return self.spec.rid

    def configure(
        self, payload_type: int, rtx_payload_type: int | None, extensions: SimulcastExtensions
    ) -> None:
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.extensions = extensions

    def _extension(self, stream_id_ext: int, send_time: bytes | None) -> bytes:
        ext = self.extensions
        elements: list[tuple[int, bytes]] = []
        if ext.mid:
            elements.append((ext.mid, self._mid_bytes))
        if stream_id_ext:
            elements.append((stream_id_ext, self._rid_bytes))
        if ext.abs_send_time and send_time is not None:
            elements.append((ext.abs_send_time, send_time))
        return build_extension_block(elements)

    def take_keyframe_request(self) -> bool:
        requested = self.keyframe_requested
        self.keyframe_requested = False
        return requested

    def frame_packets(
        self, frame: bytes, capture_timestamp: int, send_time: bytes | None = None
    ) -> list[bytes]:
        """RTP packets for one encoded VP8 frame captured at ``capture_timestamp`` (90 kHz,
        before this layer's offset); marker on the last. Advances the picture id."""
        payloads = vp8_packetize(frame, self.picture_id)
        if not payloads:
            return []
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        timestamp = (capture_timestamp + self.timestamp_offset) & 0xFFFFFFFF
        extension = self._extension(self.extensions.rid, send_time)
        packets: list[bytes] = []
        last = len(payloads) - 1
        cache = self._cache
        for i, payload in enumerate(payloads):
            marker = int(i == last)
            seq = self._seq
            self._seq = (seq + 1) & 0xFFFF
            packet = (
                build_rtp_header(marker, self.payload_type, seq, timestamp, self.ssrc, extension)
                + payload
            )
            packets.append(packet)
            cache[seq] = _Cached(timestamp, marker, payload)
            cache.move_to_end(seq)
            self.stats.packets += 1
            self.stats.octets += len(payload)
        while len(cache) > self._cache_packets:
            cache.popitem(last=False)
        self.stats.frames += 1
        if vp8_is_keyframe(frame):
            self.stats.keyframes += 1
        self.last_timestamp = timestamp
        return packets

    def retransmission(self, seq: int, send_time: bytes | None = None) -> bytes | None:
        """The RTX packet (RFC 4588) for media ``seq``, or None when it is no longer
        cached or no RTX payload type was negotiated."""
        self.stats.nacked += 1
        cached = self._cache.get(seq & 0xFFFF)
        if cached is None or self.rtx_payload_type is None:
            self.stats.rtx_missed += 1
            return None
        rtx_seq = self._rtx_seq
        self._rtx_seq = (rtx_seq + 1) & 0xFFFF
        extension = self._extension(self.extensions.repaired_rid, send_time)
        self.stats.rtx_sent += 1
        return (
            build_rtp_header(
                cached.marker,
                self.rtx_payload_type,
                rtx_seq,
                cached.timestamp,
                self.rtx_ssrc,
                extension,
            )
            + struct.pack("!H", seq & 0xFFFF)
            + cached.payload
        )

    def sender_report(self, ntp_seconds: float, rtp_timestamp: int) -> bytes:
        """An RTCP SR mapping ``ntp_seconds`` (NTP epoch) to ``rtp_timestamp`` (offset applied)."""
        ntp = int(ntp_seconds * (1 << 32)) & 0xFFFFFFFFFFFFFFFF
        info = RtcpSenderInfo(
            ntp_timestamp=ntp,
            rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
            packet_count=self.stats.packets & 0xFFFFFFFF,
            octet_count=self.stats.octets & 0xFFFFFFFF,
        )
        return bytes(RtcpSrPacket(ssrc=self.ssrc, sender_info=info))


# ------------------------------------------------------------------- sender


@dataclass(slots=True)
class RtcpCounters:
    plis: int = 0
    firs: int = 0
    nacks: int = 0
    rembs: int = 0
    last_remb_bps: int | None = None
    unknown_ssrc: int = 0


@dataclass(slots=True)
class UplinkControl:
    """Loss-based layer control of a publisher, like a browser's (pure, time passed in).

    Receiver reports from the server give each layer's fraction lost. Above ``high``
    (10 %) in two reports in a row, the top layer still sent is dropped (at most one per
    ``settle`` seconds; reports in the ``settle`` seconds after a change still describe
    what was sent before it and are ignored). After ``calm`` seconds under ``low``
    (2 %) the next layer comes back; a layer that is dropped again within ``settle`` x 3
    of coming back doubles the calm needed next time (up to ``max_calm``).
    """

    layers: int
    high: float = 0.10
    low: float = 0.02
    settle: float = 3.0
    calm: float = 6.0
    max_calm: float = 60.0
    active: int = 0
    last_change: float = -1e9
    last_raise: float = -1e9
    calm_since: float | None = None
    previous_loss: float = 0.0
    changes: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.active = self.active or self.layers

    def on_loss(self, fraction: float, now: float) -> int | None:
        """Feed the worst loss of one report; returns the index of a layer turned back on."""
        if now - self.last_change < self.settle:
            return None
        previous, self.previous_loss = self.previous_loss, fraction
        if fraction > self.high:
            self.calm_since = None
            if self.active > 1 and (previous > self.high or fraction > 2 * self.high):
                if now - self.last_raise < 3 * self.settle:
                    self.calm = min(self.max_calm, self.calm * 2)  # that step failed
                self.active -= 1
                self.last_change = now
                self.previous_loss = 0.0
                self.changes.append((now, self.active))
            return None
        if fraction >= self.low:
            self.calm_since = None
            return None
        if self.calm_since is None:
            self.calm_since = now
        if self.active < self.layers and now - self.calm_since >= self.calm:
            self.active += 1
            self.last_change = self.last_raise = now
            self.calm_since = None
            self.changes.append((now, self.active))
            return self.active - 1
        return None


@dataclass(slots=True)
class SimulcastSender:
    """The layers of one simulcast video track, and the RTCP that steers them. Pure."""

    layers: list[LayerStream]
    counters: RtcpCounters = field(default_factory=RtcpCounters)
    uplink: UplinkControl | None = None

    def __post_init__(self) -> None:
        if self.uplink is None:
            self.uplink = UplinkControl(len(self.layers))

    def sends(self, index: int) -> bool:
        """Whether layer ``index`` is sent now (the uplink control may hold top ones back)."""
        return self.uplink is None or index < self.uplink.active

    @classmethod
    def create(
        cls,
        specs: Sequence[LayerSpec],
        mid: str,
        extensions: SimulcastExtensions,
        rng: random.Random,
    ) -> SimulcastSender:
        """Layers with random SSRCs (all distinct), sequence numbers, offsets, picture ids."""
        ssrcs: set[int] = set()

        def new_ssrc() -> int:
            while True:
                ssrc = rng.randint(1, 0xFFFFFFFF)
                if ssrc not in ssrcs:
                    ssrcs.add(ssrc)
                    return ssrc

        layers = [
            LayerStream(
                spec,
                mid,
                extensions,
                ssrc=new_ssrc(),
                rtx_ssrc=new_ssrc(),
                first_seq=rng.randint(0, 0xFFFF),
                first_rtx_seq=rng.randint(0, 0xFFFF),
                timestamp_offset=rng.randint(0, 0xFFFFFFFF),
                picture_id=rng.randint(0, 0x7FFF),
            )
            for spec in specs
        ]
        return cls(layers)

    def layer_for_ssrc(self, ssrc: int) -> LayerStream | None:
        for layer in self.layers:
            if ssrc in (layer.ssrc, layer.rtx_ssrc):
                return layer
        return None

    def configure(
        self, payload_type: int, rtx_payload_type: int | None, extensions: SimulcastExtensions
    ) -> None:
        for layer in self.layers:
            layer.configure(payload_type, rtx_payload_type, extensions)

    def handle_rtcp(
        self, data: bytes, send_time: bytes | None = None, now: float | None = None
    ) -> list[bytes]:
        """Act on one compound RTCP packet from the server; returns RTX packets to send.

        PLI (and FIR entries) request a keyframe on the named layer only; generic NACKs
        are answered from that layer's cache; REMB is counted and its bitrate kept;
        receiver reports' loss drives the uplink control (with ``now``).
        """
        out: list[bytes] = []
        for packet in parse_rtcp(data):
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)) and now is not None:
                sent = {layer.ssrc for i, layer in enumerate(self.layers) if self.sends(i)}
                worst = max(
                    (r.fraction_lost / 256 for r in packet.reports if r.ssrc in sent),
                    default=None,
                )
                if worst is not None and self.uplink is not None:
                    back = self.uplink.on_loss(worst, now)
                    if back is not None:
                        self.layers[back].keyframe_requested = True
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt == _PSFB_PLI:
                    self.counters.plis += 1
                    self._request_keyframe(packet.media_ssrc, fir=False)
                elif packet.fmt == _PSFB_FIR:
                    self.counters.firs += 1
                    fci = packet.fci
                    for pos in range(0, len(fci) - 7, 8):
                        self._request_keyframe(int.from_bytes(fci[pos : pos + 4]), fir=True)
                elif packet.fmt == _PSFB_REMB:
                    self.counters.rembs += 1
                    try:
                        self.counters.last_remb_bps = unpack_remb_fci(packet.fci)[0]
                    except (ValueError, struct.error):
                        pass
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == _RTPFB_NACK:
                self.counters.nacks += 1
                layer = self.layer_for_ssrc(packet.media_ssrc)
                if layer is None or packet.media_ssrc != layer.ssrc:
                    self.counters.unknown_ssrc += 1
                    continue
                for seq in normalize_lost(packet.lost):
                    rtx = layer.retransmission(seq, send_time)
                    if rtx is not None:
                        out.append(rtx)
        return out

    def _request_keyframe(self, ssrc: int, *, fir: bool) -> None:
        layer = self.layer_for_ssrc(ssrc)
        if layer is None:
            self.counters.unknown_ssrc += 1
            return
        layer.keyframe_requested = True
        if fir:
            layer.stats.firs += 1
        else:
            layer.stats.plis += 1

    def summary(self) -> dict[str, Any]:
        c = self.counters
        return {
            "layers": [
                {
                    "rid": layer.rid,
                    "width": layer.spec.width,
                    "height": layer.spec.height,
                    "ssrc": layer.ssrc,
                    "rtx_ssrc": layer.rtx_ssrc,
                    "frames": layer.stats.frames,
                    "keyframes": layer.stats.keyframes,
                    "packets": layer.stats.packets,
                    "bytes": layer.stats.octets,
                    "plis": layer.stats.plis,
                    "firs": layer.stats.firs,
                    "nacked": layer.stats.nacked,
                    "rtx_sent": layer.stats.rtx_sent,
                }
                for layer in self.layers
            ],
            "uplink": None
            if self.uplink is None
            else {
                "active_layers": self.uplink.active,
                "changes": [[round(t, 3), n] for t, n in self.uplink.changes],
            },
            "rtcp": {
                "plis": c.plis,
                "firs": c.firs,
                "nacks": c.nacks,
                "rembs": c.rembs,
                "last_remb_bps": c.last_remb_bps,
                "unknown_ssrc": c.unknown_ssrc,
            },
        }


# ------------------------------------------------------------------ I/O edge


class _LayerSource:
    """Pattern renderer + encoder of one layer (used only in the worker thread)."""

    def __init__(self, spec: LayerSpec, fps: float) -> None:
        self.pattern = PatternTrack(spec.width, spec.height, fps, paced=False)
        self.encoder = Vp8LayerEncoder(spec.width, spec.height, spec.bitrate, fps)

    def close(self) -> None:
        self.encoder.close()
        self.pattern.stop()


class SimulcastVideo:
    """Renders, encodes and sends the layers of ``sender`` in real time.

    ``send(packet)`` sends one RTP or RTCP packet (``MediaPort.send_rtp``). Frame ``n``
    is captured at ``start + n / fps``; when the loop falls more than a frame behind it
    skips frames, as a camera would. Encoding runs in one worker thread owned here.
    ``close()`` stops the loop and the thread; it is idempotent.
    """

    def __init__(
        self,
        sender: SimulcastSender,
        send: Callable[[bytes], bool],
        fps: float = 15.0,
        *,
        wall_clock: Callable[[], float] = time.time,
        sr_interval: float = 1.0,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.sender = sender
        self.fps = fps
        self._send = send
        self._wall_clock = wall_clock
        self._sr_interval = sr_interval
        self._sources = [_LayerSource(layer.spec, fps) for layer in sender.layers]
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="simulcast-vp8"
        )
        self._task: asyncio.Task[None] | None = None
        self.frames_skipped = 0
        self.encode_seconds = 0.0
        self.send_failures = 0
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.ensure_future(self._run())

    def _encode_all(self, n: int, pts: int, keyframes: list[bool]) -> tuple[list[bytes], float]:
        started = time.perf_counter()
        frames = [
            source.encoder.encode(source.pattern.render(n), pts, key)
            for source, key in zip(self._sources, keyframes, strict=True)
        ]
        return frames, time.perf_counter() - started

    def send_time(self) -> bytes:
        return abs_send_time(self._wall_clock() + _NTP_EPOCH_OFFSET)

    def send_packets(self, packets: list[bytes]) -> None:
        for packet in packets:
            if not self._send(packet):
                self.send_failures += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_sr = start
        n = 0
        while not self._closed:
            due = start + n / self.fps
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 1.0 / self.fps:
                skip = int(-delay * self.fps)
                self.frames_skipped += skip
                n += skip
            layers = self.sender.layers
            keyframes = [layer.take_keyframe_request() for layer in layers]
            capture = round(n * VIDEO_CLOCK_RATE / self.fps)
            executor = self._executor
            if executor is None:
                return
            frames, spent = await loop.run_in_executor(
                executor, self._encode_all, n, capture, keyframes
            )
            self.encode_seconds += spent
            if self._closed:
                return
            send_time = self.send_time()
            for index, (layer, frame, key) in enumerate(
                zip(layers, frames, keyframes, strict=True)
            ):
                if key and not vp8_is_keyframe(frame):
                    layer.keyframe_requested = True  # libvpx dropped it: ask again
                if self.sender.sends(index):
                    self.send_packets(layer.frame_packets(frame, capture, send_time))
            n += 1
            now = loop.time()
            if now >= next_sr:
                next_sr = now + self._sr_interval
                self._send_reports(now - start)

    def _send_reports(self, elapsed: float) -> None:
        ntp = self._wall_clock() + _NTP_EPOCH_OFFSET
        capture = round(elapsed * VIDEO_CLOCK_RATE)
        for layer in self.sender.layers:
            if layer.stats.packets:
                rtp = capture + layer.timestamp_offset
                self.send_packets([layer.sender_report(ntp, rtp)])

    def on_rtcp(self, data: bytes) -> None:
        """RTCP from the server: keyframe requests are noted, NACKs answered at once."""
        now = asyncio.get_running_loop().time()
        self.send_packets(self.sender.handle_rtcp(data, self.send_time(), now))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        executor = self._executor
        self._executor = None
        if executor is not None:
            # waits for an encode in flight (tens of ms) so encoders are not freed under it
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        for source in self._sources:
            source.close()
