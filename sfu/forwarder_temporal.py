"""A forwarder's VP8 temporal layers: frames above a temporal limit are left out.

``ForwarderTemporal`` is a part of ``sfu.forwarder.Forwarder`` (its base class). The
allocation (``SubscribeSide.update_layers``) sets a target, the highest TID to forward
(``set_temporal``); the packet path (``Forwarder._send``) asks ``_temporal_drop`` about
every packet while a limit is in force. A frame left out closes up behind it: its
sequence numbers (``StreamRewriter.drop``) and its picture id
(``StreamRewriter.skip_picture``), so the receiver sees one contiguous stream, NACKs
nothing and finds no hole in the picture ids; TL0PICIDX is untouched, since TID 0 is
never left out. Its packets are never retransmitted (``ForwarderFeedback.on_nack``).

While the limit is >= 0 the C fast path (``sfu/_native.c``) leaves the forwarder's
packets to Python: it reads ``ForwarderCore._tid_limit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ports import PacketSink
from .rtp.packet import RtpView, Vp8Descriptor
from .rtp.rewrite import StreamRewriter
from .source import Source

#: A temporal limit that leaves nothing out (VP8's TID has 2 bits): the packets still
#: take the Python path, where the next frame boundary applies a pending limit.
TID_ALL = 3
#: Sequence numbers of packets left out remembered (a NACK for one resends nothing).
LEFT_OUT_KEPT = 512


class ForwarderTemporal:
    # (set by Forwarder.__init__, some in its C base class)
    closed: bool
    rewriter: StreamRewriter
    current: Source | None
    _sink: PacketSink[Any]
    _tid_limit: int

    if TYPE_CHECKING:

        def padding_packet(self, out_seq: int, out_ts: int, now: float) -> bytes | None: ...

    def init_temporal(self) -> None:
        #: the highest VP8 temporal layer (TID) wanted, -1: all (``set_temporal``), and
        #: the one in force, -1: no limit (while it is >= 0 the C path leaves this
        #: forwarder's packets to ``Forwarder.forward``)
        self.tid_target = -1
        self._tid_limit = -1
        #: packets of frames left out for the temporal limit
        self.temporal_dropped = 0
        #: input sequence numbers of the last packets left out (never retransmitted)
        self.left_out: dict[int, None] = {}

    @property
    def temporal_layer(self) -> int | None:
        """The highest temporal layer forwarded now (None: all of them)."""
        limit = self._tid_limit
        return limit if 0 <= limit < TID_ALL else None

    def set_temporal(self, tid: int | None) -> None:
        """Forward temporal layers up to ``tid`` only (None: all). Down takes effect at
        the next frame boundary, up at the next frame that may start the higher layer
        (a layer sync frame, or a keyframe): see ``_temporal_step``."""
        target = -1 if tid is None else tid
        if self.closed or target == self.tid_target:
            return
        self.tid_target = target
        if target < 0 and self._tid_limit == TID_ALL:
            self._tid_limit = -1  # the pending limit was never applied
        elif target >= 0 and self._tid_limit < 0:
            # the C path must leave this forwarder's packets to forward() from now on;
            # TID_ALL drops nothing until the next frame boundary lowers it
            self._tid_limit = TID_ALL

    def _temporal_step(self, vp8: Vp8Descriptor) -> None:
        """At the first packet of a frame: move the temporal limit toward the target.
        Down at once; up only where the receiver can decode the higher layer from: a
        keyframe (straight to the target), or a layer sync frame (Y=1, it references
        the base layer only) of a TID above the limit (to that TID)."""
        target = self.tid_target
        limit = self._tid_limit
        if target >= 0 and limit > target:
            limit = target
        elif vp8.keyframe or (target < 0 and limit == TID_ALL):
            limit = target
        elif vp8.layer_sync and vp8.tid > limit and (target < 0 or vp8.tid <= target):
            limit = vp8.tid
            top = len(self.current.temporal) - 1 if self.current is not None else -1
            if target < 0 and limit >= top:
                limit = -1  # every temporal layer again: the C path may take over
        if limit != self._tid_limit:
            shown = self.temporal_layer
            self._tid_limit = limit
            if self.temporal_layer != shown:
                self._sink.layer_changed(self)

    def _fill(self, pkt: RtpView, now: float) -> None:
        """A packet left out that cannot close up (it comes after a gap the publisher's
        uplink left, or late, after packets behind it were sent): a padding-only packet
        takes its sequence number, so no hole is left that the receiver would wait for
        (aiortc's jitter buffer stalls at one) or NACK in vain. It carries the timestamp
        of the packet sent before it, so a receiver that groups packets by timestamp
        counts it with that frame instead of taking it for an empty one."""
        rw = self.rewriter
        out_seq = rw.seq(pkt.seq)
        out_ts = rw.out_ts
        before = rw.original((out_seq - 1) & 0xFFFF)
        source = self.current
        if before is not None and source is not None and before[0] == rw.in_ssrc:
            entry = source.cache.get(before[1])
            if entry is not None:
                in_ts = int.from_bytes(entry[0][4:8], "big")  # the RTP header's timestamp
                out_ts = (in_ts + rw.ts_offset) & 0xFFFFFFFF
        packet = self.padding_packet(out_seq, out_ts, now)
        if packet is not None and self._sink.send_video(packet, now):
            rw.sent(out_seq, out_ts, now)

    def _temporal_drop(self, pkt: RtpView, vp8: Vp8Descriptor, now: float) -> bool:
        """Whether this packet's frame is left out (its TID is above the limit). Its
        sequence numbers and picture id close up: the receiver sees no gap, NACKs
        nothing, and its picture ids stay contiguous. Keyframes are never left out."""
        if vp8.start and not vp8.partition_id:
            self._temporal_step(vp8)
        limit = self._tid_limit
        if limit < 0 or vp8.tid <= limit or vp8.keyframe:
            return False
        rw = self.rewriter
        if vp8.picture_id >= 0:
            rw.skip_picture(vp8.picture_id)
        if (pkt.seq + rw.seq_offset - rw.out_seq) & 0xFFFF == 1:
            rw.drop(pkt.seq)  # the next one: the numbers after it close up
        else:
            self._fill(pkt, now)
        self.temporal_dropped += 1
        left_out = self.left_out
        left_out[pkt.seq] = None
        if len(left_out) > LEFT_OUT_KEPT:
            del left_out[next(iter(left_out))]
        return True
