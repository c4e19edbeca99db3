"""One layer's RTP stream (:class:`LayerStream`, pure): packets, a small cache, RTX."""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from aiortc.rtp import (
    RtcpSenderInfo,
    RtcpSrPacket,
)

from loadgen.media.simulcast.layers import CACHE_PACKETS, LayerSpec
from loadgen.media.simulcast.sdp import SimulcastExtensions
from loadgen.media.simulcast.vp8 import TemporalFrame, vp8_is_keyframe, vp8_packetize
from sfu.rtp.packet import build_extension_block, build_rtp_header

# ---------------------------------------------------------------- RTP layer


@dataclass(slots=True)
class _Cached:
    timestamp: int
    marker: int
    payload: bytes


@dataclass(slots=True)
class LayerStats:
    frames: int = 0
    #: frames sent per TID (one entry without temporal layers)
    frames_by_tid: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
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
        tl0picidx: int = 0,
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
        #: TL0PICIDX of the last TID 0 frame (RFC 7741: one more for each)
        self.tl0picidx = tl0picidx & 0xFF
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
        self,
        frame: bytes,
        capture_timestamp: int,
        send_time: bytes | None = None,
        temporal: TemporalFrame | None = None,
    ) -> list[bytes]:
        """RTP packets for one encoded VP8 frame captured at ``capture_timestamp`` (90 kHz,
        before this layer's offset); marker on the last. Advances the picture id, and
        with ``temporal`` (the frame's TID and layer sync bit) TL0PICIDX on TID 0."""
        if not frame:
            return []
        if temporal is not None and temporal.tid == 0:
            self.tl0picidx = (self.tl0picidx + 1) & 0xFF
        payloads = vp8_packetize(
            frame, self.picture_id, temporal=temporal, tl0picidx=self.tl0picidx
        )
        self.stats.frames_by_tid[temporal.tid if temporal is not None else 0] += 1
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
