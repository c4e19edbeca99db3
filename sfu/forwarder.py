"""A Forwarder sends one Source to one subscriber m-line, rewriting headers.

Per packet it rewrites SSRC, sequence number, timestamp, payload type, the
header extensions (MID, audio level, abs-send-time with the subscriber leg's ids)
and the VP8 picture id / TL0PICIDX, so the subscriber sees one continuous stream
whatever happens upstream. Video starts (and restarts after the input changes) only
on a keyframe. It answers the subscriber's NACKs from the Source's packet cache
(as RTX when negotiated), passes PLI/FIR upstream and builds sender reports from
the publisher's, shifted by its timestamp offset, so receivers keep lip sync.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from struct import Struct
from typing import Protocol, cast

from .rtp.packet import RtpView, Vp8Descriptor, abs_send_time, build_vp8_descriptor
from .rtp.rewrite import StreamRewriter
from .source import Source

_HDR = Struct("!BBHII")
_EXT_HDR = Struct("!HH")

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class PacketSink(Protocol):
    """Where a forwarder's packets go (the subscriber's transport)."""

    def send_rtp(self, data: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class EgressParams:
    """What the subscriber's m-line negotiated."""

    mid: str
    payload_type: int
    ssrc: int
    rtx_payload_type: int | None
    rtx_ssrc: int | None
    extensions: dict[str, int]


def _element(ext_id: int, value_len: int) -> int:
    return (ext_id << 4) | (value_len - 1)


class Forwarder:
    def __init__(self, source: Source, sink: PacketSink, subscriber_id: str) -> None:
        self.source = source
        self.subscriber_id = subscriber_id
        self._sink = sink
        self.params: EgressParams | None = None
        self.rewriter = StreamRewriter(
            source.clock_rate,
            first_seq=random.randrange(0, 0x8000),
            first_ts=random.getrandbits(32),
            first_pid=None,  # the first input keeps its ids: no descriptor rewrite
            first_tl0=None,
        )
        self.paused = False
        self.closed = False
        self.packets_sent = 0
        self.bytes_sent = 0
        self.retransmitted = 0
        self.send_failures = 0
        self.keyframes_requested = 0
        #: (fraction lost 0..1, cumulative lost, rtt s or None) from the last receiver report
        self.fraction_lost = 0.0
        self.rtt: float | None = None
        self.remb: int | None = None
        self._rtx_seq = random.randrange(0, 0x8000)
        self._al_id = 0
        self._ast_id = 0
        self._ast_byte = b""
        self._has_ext = False
        self._b0 = 0x80
        self._pt = 0
        self._ssrc = 0
        self._rtx_pt = 0
        self._rtx_ssrc: int | None = None
        self._ext_plain = (b"", b"")
        self._ext_with_level = (b"", b"")
        self._sr_sent: dict[int, float] = {}

    # ------------------------------------------------------------ configuration

    def configure(self, params: EgressParams) -> None:
        self.params = params
        mid = params.mid.encode()
        mid_id = params.extensions.get(MID_URI, 0)
        mid_element = bytes((_element(mid_id, len(mid)),)) + mid if mid_id and mid else b""
        self._al_id = params.extensions.get(AUDIO_LEVEL_URI, 0)
        self._ast_id = params.extensions.get(ABS_SEND_TIME_URI, 0)
        self._ast_byte = bytes((_element(self._ast_id, 3),)) if self._ast_id else b""
        self._has_ext = bool(mid_element or self._al_id or self._ast_id)
        self._b0 = 0x90 if self._has_ext else 0x80
        self._pt = params.payload_type
        self._ssrc = params.ssrc
        self._rtx_pt = params.rtx_payload_type or 0
        self._rtx_ssrc = params.rtx_ssrc if params.rtx_payload_type is not None else None

        def layout(with_level: bool) -> tuple[bytes, bytes]:
            size = len(mid_element) + (2 if with_level else 0) + (4 if self._ast_id else 0)
            pad = -size % 4
            head = _EXT_HDR.pack(0xBEDE, (size + pad) >> 2) + mid_element
            return head, b"\x00" * pad

        self._ext_plain = layout(False)
        self._ext_with_level = layout(True)

    @property
    def started(self) -> bool:
        return self.rewriter.started

    # ------------------------------------------------------------ packet path

    def _extension(self, pkt: RtpView, now: float) -> bytes:
        """The subscriber leg's extension block: MID, audio level, abs-send-time."""
        level = pkt.audio_level if self._al_id else -1
        prefix, pad = self._ext_with_level if level >= 0 else self._ext_plain
        body = prefix
        if level >= 0:
            body += bytes((self._al_id << 4, level))
        if self._ast_id:
            ast = pkt.abs_send_time or abs_send_time(now)
            body += self._ast_byte + ast
        return body + pad

    def _render(
        self,
        pkt: RtpView,
        vp8: Vp8Descriptor | None,
        out_seq: int,
        now: float,
        rtx: bool = False,
    ) -> tuple[bytes, int, int, int]:
        rw = self.rewriter
        out_ts = (pkt.timestamp + rw.ts_offset) & 0xFFFFFFFF
        data = pkt.data
        pid = tl0 = -1
        if vp8 is not None and (vp8.picture_id >= 0 or vp8.tl0picidx >= 0):
            if vp8.picture_id >= 0:
                pid = rw.picture_id(vp8.picture_id)
            if vp8.tl0picidx >= 0:
                tl0 = (vp8.tl0picidx + rw.tl0_offset) & 0xFF
            if rw.pid_offset or rw.tl0_offset or vp8.picture_id_bits == 7:
                payload = (
                    build_vp8_descriptor(vp8, pid, tl0)
                    + data[pkt.payload_start + vp8.size : pkt.payload_end]
                )
            else:  # ids pass through unchanged
                payload = data[pkt.payload_start : pkt.payload_end]
        else:
            payload = data[pkt.payload_start : pkt.payload_end]
        ext = self._extension(pkt, now) if self._has_ext else b""
        if rtx and self._rtx_ssrc is not None:
            header = _HDR.pack(
                self._b0,
                (pkt.marker << 7) | self._rtx_pt,
                self._rtx_seq,
                out_ts,
                self._rtx_ssrc,
            )
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            payload = out_seq.to_bytes(2, "big") + payload
        else:
            header = _HDR.pack(self._b0, (pkt.marker << 7) | self._pt, out_seq, out_ts, self._ssrc)
        return header + ext + payload, out_ts, pid, tl0

    def forward(self, pkt: RtpView, vp8: Vp8Descriptor | None, now: float) -> None:
        if self.paused or self.params is None or self.closed:
            if self.paused:
                # resume like an input change: on a keyframe, with no sequence gap
                self.rewriter.in_ssrc = -1
            return
        rw = self.rewriter
        if pkt.ssrc != rw.in_ssrc or not rw.started:
            if self.source.is_video and (vp8 is None or not vp8.keyframe):
                self.source.request_keyframe(now)
                return
            if vp8 is not None:
                rw.switch(
                    pkt.ssrc,
                    pkt.seq,
                    pkt.timestamp,
                    now,
                    vp8.picture_id,
                    vp8.tl0picidx,
                    vp8.picture_id_bits,
                )
            else:
                rw.switch(pkt.ssrc, pkt.seq, pkt.timestamp, now)
        elif not rw.accepts(pkt.seq):
            return
        out_seq = (pkt.seq + rw.seq_offset) & 0xFFFF
        if not 0 < ((out_seq - rw.out_seq) & 0xFFFF) < 0x8000:
            out_seq = rw.seq(pkt.seq)  # late: it may predate a drop that shifted the mapping
        out, out_ts, pid, tl0 = self._render(pkt, vp8, out_seq, now)
        if self._sink.send_rtp(out):
            self.packets_sent += 1
            self.bytes_sent += len(out)
            rw.sent(out_seq, out_ts, now, pid, tl0)
        else:
            self.send_failures += 1

    def skip(self, pkt: RtpView) -> None:
        if pkt.ssrc == self.rewriter.in_ssrc:
            self.rewriter.drop(pkt.seq)

    # ------------------------------------------------------------ feedback

    def on_nack(self, seqs: list[int], now: float) -> int:
        """Retransmit what the subscriber lost; returns the number of packets resent."""
        if self.params is None or self.closed:
            return 0
        rw = self.rewriter
        sent = 0
        for out_seq in seqs:
            original = rw.original(out_seq)
            if original is None or original[0] != rw.in_ssrc:
                continue
            entry = self.source.cache.get(original[1])
            if entry is None:
                continue
            pkt, vp8 = cast("tuple[RtpView, Vp8Descriptor | None]", entry[1])
            if pkt.ssrc != original[0]:
                continue
            out, _, _, _ = self._render(pkt, vp8, out_seq, now, rtx=True)
            if self._sink.send_rtp(out):
                sent += 1
        self.retransmitted += sent
        return sent

    def on_keyframe_request(self, now: float) -> None:
        self.keyframes_requested += 1
        self.source.request_keyframe(now)

    def on_receiver_report(self, fraction_lost: int, lsr: int, dlsr: int, now: float) -> None:
        self.fraction_lost = fraction_lost / 256.0
        sent_at = self._sr_sent.get(lsr)
        if lsr and sent_at is not None:
            self.rtt = max(0.0, now - sent_at - dlsr / 65536.0)

    def sender_report(self, now: float) -> tuple[int, int, int, int] | None:
        """(ntp64, rtp timestamp, packets, octets) for an SR, or None before there is a mapping."""
        sr = self.source.sender_report
        if sr is None or not self.rewriter.started or self.packets_sent == 0:
            return None
        ntp, rtp_ts, arrival = sr
        elapsed = now - arrival
        ntp_out = (ntp + int(elapsed * (1 << 32))) & 0xFFFFFFFFFFFFFFFF
        rtp_out = (
            rtp_ts + int(elapsed * self.source.clock_rate) + self.rewriter.ts_offset
        ) & 0xFFFFFFFF
        lsr_key = (ntp_out >> 16) & 0xFFFFFFFF
        self._sr_sent[lsr_key] = now
        if len(self._sr_sent) > 16:
            del self._sr_sent[next(iter(self._sr_sent))]
        return ntp_out, rtp_out, self.packets_sent & 0xFFFFFFFF, self.bytes_sent & 0xFFFFFFFF

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.source.remove_forwarder(self)
