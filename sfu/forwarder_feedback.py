"""A forwarder's side of the feedback its subscriber sends: retransmissions (NACK) from
the source's packet cache, keyframe requests (PLI/FIR) passed upstream, loss and round
trip time from receiver reports, and sender reports built from the publisher's.

``ForwarderFeedback`` is a part of ``sfu.forwarder.Forwarder`` (its base class): the
packet path is there, what feedback does to the stream is here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .egress_params import EgressParams
from .ports import PacketSink
from .rtp.packet import RtpView, Vp8Descriptor
from .rtp.rewrite import StreamRewriter
from .source import Source


class ForwarderFeedback:
    # (set by Forwarder.__init__, some in its C base class)
    params: EgressParams | None
    closed: bool
    rewriter: StreamRewriter
    current: Source | None
    target: Source | None
    redundant: bool
    retransmitted: int
    keyframes_requested: int
    clock_rate: int
    packets_sent: int
    bytes_sent: int
    fraction_lost: float
    rtt: float | None
    _sink: PacketSink[Any]
    left_out: dict[int, None]
    _cut: bool
    _broken: bool
    _rr_mark: tuple[int, int, int] | None
    _sr_sent: dict[int, float]

    if TYPE_CHECKING:

        def _render(
            self,
            pkt: RtpView,
            vp8: Vp8Descriptor | None,
            out_seq: int,
            now: float,
            rtx: bool = False,
        ) -> tuple[bytes, int, int, int]: ...

    def on_nack(
        self, seqs: list[int], now: float, max_bytes: float | None = None
    ) -> tuple[int, int]:
        """Retransmit what the subscriber lost, oldest first, within ``max_bytes`` (None:
        no limit); returns (packets resent, bytes)."""
        if self.params is None or self.closed:
            return 0, 0
        rw = self.rewriter
        source = self.current
        if source is None or self._cut or self._broken:
            # (cut, or broken: the stream starts again on a keyframe, and what it lost
            # before would only queue ahead of that keyframe on a link already full)
            return 0, 0
        sent = spent = 0
        for out_seq in seqs:
            if max_bytes is not None and spent >= max_bytes:
                break
            original = rw.original(out_seq)
            if original is None or original[0] != rw.in_ssrc:
                continue  # from a stream left behind: its timestamps no longer map
            entry = source.cache.get(original[1])
            if entry is None:
                continue
            pkt, vp8 = cast("tuple[RtpView, Vp8Descriptor | None]", entry[1])
            if pkt.ssrc != original[0]:
                continue
            if original[1] in self.left_out:
                continue  # a frame left out for the temporal limit: never sent
            out, _, _, _ = self._render(pkt, vp8, out_seq, now, rtx=True)
            sink = self._sink
            if sink.send_rtp_twice(out) if self.redundant else sink.send_rtp(out):
                sent += 1
                spent += len(out) * (2 if self.redundant else 1)
        self.retransmitted += sent
        return sent, spent

    def on_keyframe_request(self, now: float) -> None:
        self.keyframes_requested += 1
        wanted = self.target or self.current
        if wanted is not None:
            wanted.request_keyframe(now)

    def link_loss(self, highest: int, cumulative_lost: int) -> float | None:
        """The fraction of packets the subscriber's own link lost since the previous
        report, from a report block's extended highest sequence number and cumulative
        lost count, less what never left the SFU (lost upstream: ``skipped``)."""
        mark = (highest, cumulative_lost, self.rewriter.skipped)
        previous, self._rr_mark = self._rr_mark, mark
        if previous is None:
            return None
        expected = (highest - previous[0]) & 0xFFFFFFFF
        if not 0 < expected < 0x8000:
            return None
        lost = (cumulative_lost - previous[1]) - (mark[2] - previous[2])
        return min(1.0, max(0.0, lost / expected))

    def on_receiver_report(self, fraction_lost: int, lsr: int, dlsr: int, now: float) -> None:
        self.fraction_lost = fraction_lost / 256.0
        sent_at = self._sr_sent.get(lsr)
        if lsr and sent_at is not None:
            self.rtt = max(0.0, now - sent_at - dlsr / 65536.0)

    def sender_report(self, now: float) -> tuple[int, int, int, int] | None:
        """(ntp64, rtp timestamp, packets, octets) for an SR, or None before there is a mapping."""
        if self.current is None:
            return None
        sr = self.current.sender_report
        if sr is None or not self.rewriter.started or self.packets_sent == 0:
            return None
        ntp, rtp_ts, arrival = sr
        elapsed = now - arrival
        ntp_out = (ntp + int(elapsed * (1 << 32))) & 0xFFFFFFFFFFFFFFFF
        rtp_out = (rtp_ts + int(elapsed * self.clock_rate) + self.rewriter.ts_offset) & 0xFFFFFFFF
        lsr_key = (ntp_out >> 16) & 0xFFFFFFFF
        self._sr_sent[lsr_key] = now
        if len(self._sr_sent) > 16:
            del self._sr_sent[next(iter(self._sr_sent))]
        return ntp_out, rtp_out, self.packets_sent & 0xFFFFFFFF, self.bytes_sent & 0xFFFFFFFF
