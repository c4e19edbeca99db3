"""What a subscriber's receiver sends back (RR, NACK, PLI, FIR, REMB), dispatched to the
forwarder of the stream it is about and to the subscriber's congestion control; and the
sender reports the SFU sends that receiver.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)

from .congestion import CongestionController, ReportBlock
from .forwarder import Forwarder
from .rtp.malformed import MalformedLog
from .rtp.rtcp import normalize_lost, parse_rtcp_counted
from .rtp.twcc import TransportFeedback, TwccError, find_transport_feedback


class SubscriberRtcp:
    """Downstream RTCP of one subscriber. ``by_out_ssrc`` maps each SSRC the SFU sends
    it (media and RTX) to its forwarder; ``on_lossy`` is told when what receivers cannot
    repair should be sent twice, ``on_estimate`` when a REMB may change the allocation."""

    def __init__(
        self,
        congestion: CongestionController,
        by_out_ssrc: dict[int, Forwarder],
        counters: dict[str, int],
        malformed: MalformedLog,
        on_lossy: Callable[[], None],
        on_estimate: Callable[[float], None],
        on_transport_feedback: Callable[[TransportFeedback, float], None] | None = None,
    ) -> None:
        self.congestion = congestion
        self._by_out_ssrc = by_out_ssrc
        self.counters = counters
        self.malformed = malformed
        self._on_lossy = on_lossy
        self._on_estimate = on_estimate
        self._on_transport_feedback = on_transport_feedback
        #: transport-cc was negotiated: look for its feedback in every compound
        self.transport_cc = False

    def on_rtcp(self, data: bytes, now: float) -> None:
        self.counters["rtcp_in"] += 1
        if self.transport_cc and self._on_transport_feedback is not None:
            # (aiortc's parser reads transport-cc feedback as a NACK: parsed here)
            try:
                feedback = find_transport_feedback(data)
            except TwccError as exc:
                self.counters["rtcp_malformed"] += 1
                self.malformed.add("transport-cc", str(exc)[:80], now)
                feedback = []
            for item in feedback:
                self._on_transport_feedback(item, now)
        for packet in parse_rtcp_counted(data, now, self.counters, self.malformed):
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    self.on_report(report, now)
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                self.on_nack(packet, now)
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    self.on_keyframe_request(packet, now)
                elif packet.fmt == RTCP_PSFB_APP:
                    self.on_remb(packet, now)

    def on_report(self, report: RtcpReceiverInfo, now: float) -> None:
        """A report block (of an RR, or of the receiver's SR)."""
        forwarder = self._by_out_ssrc.get(report.ssrc)
        if forwarder is None:
            return
        forwarder.on_receiver_report(report.fraction_lost, report.lsr, report.dlsr, now)
        params = forwarder.params
        media = params is not None and report.ssrc == params.ssrc
        link_loss = None
        upstream = 0.0
        if media:
            # what the subscriber's own link lost: packets lost upstream (publisher to
            # SFU) are gaps in what the SFU forwards, too
            link_loss = forwarder.link_loss(report.highest_sequence, report.packets_lost)
            source = forwarder.current
            upstream = source.upstream_loss if source is not None else 0.0
        block = ReportBlock(
            ssrc=report.ssrc,
            fraction_lost=report.fraction_lost,
            highest=report.highest_sequence,
            cumulative_lost=report.packets_lost,
            media=media,
            video=forwarder.is_video,
            link_loss=link_loss,
            upstream_loss=upstream,
            packets_sent=forwarder.packets_sent,
            bytes_sent=forwarder.bytes_sent,
            not_sent=forwarder.rewriter.skipped,
            switched_at=forwarder.switched_at,
        )
        if self.congestion.on_report(block, now):
            self._on_lossy()

    def on_nack(self, packet: RtcpRtpfbPacket, now: float) -> None:
        """Retransmit what was lost, within the retransmission budget."""
        forwarder = self._by_out_ssrc.get(packet.media_ssrc)
        if forwarder is None:
            return
        self.counters["nacks_in"] += 1
        budget = self.congestion.rtx_budget(now)
        sent, spent = forwarder.on_nack(normalize_lost(packet.lost), now, budget)
        self.counters["rtx_sent"] += sent
        if self.congestion.rtx_spent(spent, budget):
            self.counters["rtx_limited"] += 1

    def on_keyframe_request(self, packet: RtcpPsfbPacket, now: float) -> None:
        """PLI (one media SSRC) or FIR (one FCI entry per SSRC)."""
        targets = [packet.media_ssrc]
        if packet.fmt == RTCP_PSFB_FIR and len(packet.fci) >= 4:
            targets = [
                int.from_bytes(packet.fci[i : i + 4], "big")
                for i in range(0, len(packet.fci) - 3, 8)
            ]
        for ssrc in targets:
            forwarder = self._by_out_ssrc.get(ssrc)
            if forwarder is not None:
                forwarder.on_keyframe_request(now)

    def on_remb(self, packet: RtcpPsfbPacket, now: float) -> None:
        try:
            bitrate, ssrcs = unpack_remb_fci(packet.fci)
        except ValueError:
            return
        # a REMB far below what the receiver acknowledged without loss is not believed:
        # it lowers neither the cap nor the publisher's rate
        believed = self.congestion.on_remb(bitrate, now)
        for ssrc in ssrcs:
            forwarder = self._by_out_ssrc.get(ssrc)
            if forwarder is not None and believed:
                forwarder.remb = bitrate
        self._on_estimate(now)


def sender_report(forwarder: Forwarder, publisher_id: str, now: float) -> bytes | None:
    """The SR (and SDES) for one forwarder's stream, or None before there is a mapping."""
    report = forwarder.sender_report(now)
    if report is None or forwarder.params is None:
        return None
    ntp, rtp_ts, packets, octets = report
    ssrc = forwarder.params.ssrc
    sr = RtcpSrPacket(
        ssrc=ssrc,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp,
            rtp_timestamp=rtp_ts,
            packet_count=packets,
            octet_count=octets,
        ),
    )
    sdes = RtcpSdesPacket(
        chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, f"parley-{publisher_id}".encode())])]
    )
    return bytes(sr) + bytes(sdes)
