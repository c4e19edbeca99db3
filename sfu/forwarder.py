"""A Forwarder sends one Source to one subscriber m-line, rewriting headers.

Per packet: SSRC, sequence number, timestamp, payload type, the header extensions (MID,
audio level, abs-send-time with the subscriber leg's ids), the VP8 picture id /
TL0PICIDX and Opus RED (``ForwarderRed``), so the subscriber sees one continuous stream
whatever happens upstream. Video starts (and restarts after the input changes) only on
a keyframe. NACKs (as RTX when negotiated) from the Source's cache, PLI/FIR upstream and
sender reports shifted by its timestamp offset (lip sync): ``ForwarderFeedback``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from struct import Struct
from typing import TYPE_CHECKING, Any

from .egress_params import EgressParams, element
from .forwarder_feedback import ForwarderFeedback
from .forwarder_red import ForwarderRed
from .forwarder_temporal import ForwarderTemporal
from .layers import LayerInfo, LayerRequest, LayerSelector
from .native import ForwarderCore
from .ports import PacketSink
from .rtp.extensions import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI
from .rtp.packet import RtpView, Vp8Descriptor, abs_send_time, build_vp8_descriptor
from .rtp.rewrite import StreamRewriter
from .source import Source

if TYPE_CHECKING:
    from .pacer import Pacer

__all__ = ["ABS_SEND_TIME_URI", "AUDIO_LEVEL_URI", "MID_URI", "EgressParams", "Forwarder"]

_HDR = Struct("!BBHII")


#: While a switch waits for the old layer's frame to end, at most this many packets of
#: the new layer (or this many seconds) are held back before switching anyway.
SWITCH_QUEUE_PACKETS = 128
SWITCH_QUEUE_SECONDS = 0.1


class Forwarder(ForwarderFeedback, ForwarderTemporal, ForwarderRed, ForwarderCore):
    """Forwards one published track to one subscriber m-line.

    ``layers`` are the track's Sources: one, or one per simulcast layer. The forwarder
    is attached (``Source.add_forwarder``) only to the layer it forwards (``current``)
    and, while a switch is pending, to the layer it wants (``target``): a layer no
    forwarder wants costs no forwarding work. A switch happens on the target layer's
    keyframe, after the current layer's frame in flight has ended.

    Its hot fields live in its C base (``sfu.native.ForwarderCore``): with ``egress``
    (the subscriber transport's ``sfu.native.Egress``) and ``pacer`` set, ``fanout``
    serves the steady state in C and calls :meth:`forward` for everything else."""

    def __init__(
        self, layers: Sequence[Source], sink: PacketSink[Forwarder], subscriber_id: str
    ) -> None:
        if not layers:
            raise ValueError("a forwarder needs at least one layer")
        self.layers: tuple[Source, ...] = tuple(layers)
        first = self.layers[0]
        self.kind = first.kind
        self.is_video = first.is_video
        self.clock_rate = first.clock_rate
        #: the layer being forwarded, and the one wanted (None: nothing)
        self.current: Source | None = None
        self.target: Source | None = None
        self.request = LayerRequest()
        self.selector = LayerSelector()
        self.layer_switches = 0
        #: when the current input started (a switch, a resume)
        self.switched_at: float | None = None
        self.subscriber_id = subscriber_id
        self._sink = sink
        self.params: EgressParams | None = None
        self._mid_frame = False
        self._queue: list[tuple[Source, RtpView, Vp8Descriptor | None]] = []
        self._queue_since = 0.0
        self.rewriter = StreamRewriter(
            first.clock_rate,
            first_seq=random.randrange(0, 0x8000),
            first_ts=random.getrandbits(32),
            first_pid=None,  # the first input keeps its ids: no descriptor rewrite
            first_tl0=None,
        )
        self.closed = False
        #: the subscriber transport's native egress and the pacer whose ``idle`` gates
        #: video on the native path (None: every packet takes :meth:`forward`)
        self.egress: Any = None
        self.pacer: Pacer | None = None
        #: packets the native path sent (also counted in ``packets_sent``)
        self.native_packets = 0
        #: the subscriber loses packets at random: send audio packets twice (receivers do
        #: not NACK audio) and video retransmissions twice (receivers NACK a packet once)
        self.redundant = False
        self.packets_sent = 0
        self.bytes_sent = 0
        self.retransmitted = 0
        self.send_failures = 0
        self.keyframes_requested = 0
        #: frames dropped whole for want of room in the pacer's queue, and the delta
        #: frames after them (until a keyframe)
        self.frames_dropped = 0
        #: dropping the rest of a frame / waiting for a keyframe after a dropped frame
        self._dropping = False
        self._broken = False
        #: stop the current layer at its next frame (``set_target(cut=True)``)
        self._cut = False
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
        #: highest VP8 temporal layer forwarded, -1: all; while >= 0 the native path
        #: leaves this forwarder to :meth:`forward`
        self._tid_limit = -1
        self._sr_sent: dict[int, float] = {}
        self._rr_mark: tuple[int, int, int] | None = None
        self.init_temporal()  # the VP8 temporal limit (sfu/forwarder_temporal.py)
        self.init_red()  # Opus RED: passed on or stripped (sfu/forwarder_red.py)

    # ------------------------------------------------------------ configuration

    def configure(self, params: EgressParams) -> None:
        self.params = params
        self._al_id = params.extensions.get(AUDIO_LEVEL_URI, 0)
        self._ast_id = params.extensions.get(ABS_SEND_TIME_URI, 0)
        self._ast_byte = bytes((element(self._ast_id, 3),)) if self._ast_id else b""
        self._ext_plain = params.extension_layout(False)
        self._ext_with_level = params.extension_layout(True)
        self._has_ext = len(self._ext_plain[0]) > 4 or bool(self._al_id or self._ast_id)
        self._b0 = 0x90 if self._has_ext else 0x80
        self._pt = params.payload_type
        self._ssrc = params.ssrc
        self._rtx_pt = params.rtx_payload_type or 0
        self._rtx_ssrc = params.rtx_ssrc if params.rtx_payload_type is not None else None

    @property
    def started(self) -> bool:
        return self.rewriter.started

    @property
    def source(self) -> Source:
        """The layer forwarded now, else the one wanted, else the first."""
        return self.current or self.target or self.layers[0]

    @property
    def target_index(self) -> int | None:
        """Position of ``target`` in ``layers`` (None: nothing wanted)."""
        return self.layers.index(self.target) if self.target is not None else None

    @property
    def paused(self) -> bool:
        return self.request.paused

    @property
    def simulcast(self) -> bool:
        return len(self.layers) > 1

    def layer_infos(self, now: float, active_timeout: float) -> list[LayerInfo]:
        return [
            LayerInfo(i, s.width, s.height, s.bitrate, s.active(now, active_timeout))
            for i, s in enumerate(self.layers)
        ]

    # ------------------------------------------------------------ layer control

    def set_target(self, target: Source | None, now: float, *, cut: bool = False) -> None:
        """Aim at ``target`` (one of ``layers``), or forward nothing (None).

        Stays on the current layer until the target's keyframe arrives; None (pause)
        takes effect at once. ``cut``: the current layer no longer fits the link (a
        switch down under congestion): its frames stop at once, from the next one, so
        that what the link still queues of it drains before the target's keyframe
        comes (its frames would only be lost at the bottleneck, and take the keyframe
        with them).
        """
        if cut and target is not None and self.current is not None and target is not self.current:
            self._cut = True
        if self.closed or target is self.target:
            return
        if target is not None and target not in self.layers:
            raise ValueError("not a layer of this track")
        previous = self.target
        self.target = target
        if previous is not None and previous is not self.current:
            previous.remove_forwarder(self)
        self._queue.clear()
        if target is None:
            if self.current is not None:
                self.current.remove_forwarder(self)
                self.current = None
                self._mid_frame = False
                self._sink.layer_changed(self)
            return
        if target is self.current:
            return
        if self.params is not None:
            target.add_forwarder(self, now)  # asks for a keyframe

    def start(self, now: float) -> None:
        """The m-line is negotiated: start on the target (or the only) layer."""
        if self.target is None and not self.request.paused and not self.simulcast:
            self.target = self.layers[0]
        if self.target is not None and self.target is not self.current:
            self.target.add_forwarder(self, now, replay=not self.started)

    def source_closed(self, source: Source) -> None:
        if source is self.current:
            self.current = None
            self._mid_frame = False
        if source is self.target:
            self.target = None
        self._queue = [q for q in self._queue if q[0] is not source]

    # ------------------------------------------------------------ packet path

    def _extension(self, pkt: RtpView, now: float) -> bytes:
        """The subscriber leg's extension block: transport-cc placeholder, MID, audio level,
        abs-send-time."""
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
        pt, payload = self.red_render(pkt, payload, self._pt)
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
            header = _HDR.pack(self._b0, (pkt.marker << 7) | pt, out_seq, out_ts, self._ssrc)
        return header + ext + payload, out_ts, pid, tl0

    def forward(self, source: Source, pkt: RtpView, vp8: Vp8Descriptor | None, now: float) -> None:
        """A packet of ``source``, one of the layers this forwarder is attached to."""
        rw = self.rewriter
        if source is self.current and pkt.ssrc == rw.in_ssrc:
            if not rw.accepts(pkt.seq):
                return
            self._send(pkt, vp8, now)
            if self._queue and not self._mid_frame:
                self._finish_switch(now)
            return
        if self.params is None or self.closed:
            return
        if source is not self.target:
            return  # a layer being left, or one attached a moment ago
        if self._queue:
            self._queue.append((source, pkt, vp8))
            if (
                len(self._queue) > SWITCH_QUEUE_PACKETS
                or now - self._queue_since > SWITCH_QUEUE_SECONDS
            ):
                self._finish_switch(now)
            return
        if self.is_video and (vp8 is None or not vp8.keyframe):
            source.request_keyframe(now)
            return
        if self._mid_frame and self.current is not None and source is not self.current:
            # let the frame in flight on the old layer end first
            self._queue.append((source, pkt, vp8))
            self._queue_since = now
            return
        self._switch(source, pkt, vp8, now)
        self._send(pkt, vp8, now)

    def _switch(self, source: Source, pkt: RtpView, vp8: Vp8Descriptor | None, now: float) -> None:
        rw = self.rewriter
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
        previous = self.current
        self.current = source
        self.switched_at = now
        self._dropping = self._broken = self._cut = False  # a switch starts on a keyframe
        self.left_out.clear()
        if previous is not source:
            if previous is not None:
                previous.remove_forwarder(self)
                self.layer_switches += 1
            self._sink.layer_changed(self)

    def _finish_switch(self, now: float) -> None:
        queue, self._queue = self._queue, []
        source, pkt, vp8 = queue[0]
        if source is not self.target:
            return
        self._switch(source, pkt, vp8, now)
        rw = self.rewriter
        for _, pkt, vp8 in queue:
            if pkt.ssrc == rw.in_ssrc and rw.accepts(pkt.seq):
                self._send(pkt, vp8, now)

    def _send(self, pkt: RtpView, vp8: Vp8Descriptor | None, now: float) -> None:
        rw = self.rewriter
        if self._tid_limit >= 0 and vp8 is not None and vp8.tid >= 0:
            if self._temporal_drop(pkt, vp8, now):
                return
        if self.is_video and (self._dropping or self._broken or not self._mid_frame):
            if not self._admit(pkt, vp8, now):
                return
        out_seq = (pkt.seq + rw.seq_offset) & 0xFFFF
        if not 0 < ((out_seq - rw.out_seq) & 0xFFFF) < 0x8000:
            out_seq = rw.seq(pkt.seq)  # late: it may predate a drop that shifted the mapping
        out, out_ts, pid, tl0 = self._render(pkt, vp8, out_seq, now)
        sink = self._sink  # inline, not via a helper: this runs per forwarded packet
        if self.is_video:
            ok = sink.send_video(out, now)
        else:
            twice = self.redundant and self.send_twice(pkt)  # RED: once (forwarder_red.py)
            ok = sink.send_rtp_twice(out) if twice else sink.send_rtp(out)
        if ok:
            self.packets_sent += 1
            self.bytes_sent += len(out)
            rw.sent(out_seq, out_ts, now, pid, tl0)
            self._mid_frame = not pkt.marker
        else:
            self.send_failures += 1

    def _admit(self, pkt: RtpView, vp8: Vp8Descriptor | None, now: float) -> bool:
        """Video at a frame boundary, or while frames are being dropped: whether this
        packet goes out. A frame starts only when the pacer's queue has room; one
        that does not is dropped whole (its sequence numbers closed up, so the
        receiver NACKs nothing) and delta frames are dropped until a keyframe."""
        if self._dropping:
            self._drop(pkt)
            return False
        if self._cut:
            self._cut = False
            self._broken = True  # until a keyframe: the target's, normally
        if self._broken and not (vp8 is not None and vp8.keyframe):
            self.frames_dropped += 1
            self._drop(pkt)
            source = self.target or self.current
            if source is not None and self._sink.room_for_frame():
                source.request_keyframe(now)  # (a keyframe into a full queue is lost)
            return False
        if not self._sink.room_for_frame():
            self.frames_dropped += 1
            self._broken = True
            self._drop(pkt)
            self._sink.frame_dropped(self, now)
            return False
        self._broken = False
        return True

    def _drop(self, pkt: RtpView) -> None:
        self.rewriter.drop(pkt.seq)
        self._dropping = not pkt.marker

    def continue_from(self, previous: Forwarder) -> None:
        """Take over ``previous``'s outgoing stream (the same m-line, reused): the
        receiver sees one continuous stream on that SSRC, not a jump."""
        self.rewriter.continue_from(previous.rewriter)
        self._rtx_seq = previous._rtx_seq

    def padding(self, size: int, now: float) -> bytes | None:
        """A padding-only RTX packet of ``size`` padding bytes (1-255), to probe the link.

        It carries MID and abs-send-time like media, so the receiver's bandwidth
        estimator counts it; receivers drop it after that. None without RTX.
        """
        rtx_ssrc = self._rtx_ssrc
        if self.params is None or rtx_ssrc is None or self.closed:
            return None
        size = max(1, min(255, size))
        ext = self._plain_ext(now)
        header = _HDR.pack(
            self._b0 | 0x20, self._rtx_pt, self._rtx_seq, self.rewriter.out_ts, rtx_ssrc
        )
        self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        return header + ext + bytes(size - 1) + bytes((size,))

    def padding_packet(self, out_seq: int, out_ts: int, now: float) -> bytes | None:
        """A padding-only media packet numbered ``out_seq`` (``ForwarderTemporal._fill``)."""
        if self.params is None or self.closed:
            return None
        header = _HDR.pack(self._b0 | 0x20, self._pt, out_seq, out_ts, self._ssrc)
        return header + self._plain_ext(now) + b"\x01"

    def _plain_ext(self, now: float) -> bytes:
        if not self._has_ext:
            return b""
        prefix, pad = self._ext_plain
        return prefix + (self._ast_byte + abs_send_time(now) if self._ast_id else b"") + pad

    def skip(self, pkt: RtpView) -> None:
        if pkt.ssrc == self.rewriter.in_ssrc:
            self.rewriter.drop(pkt.seq)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        for layer in self.layers:
            layer.remove_forwarder(self)
        self.current = self.target = None
