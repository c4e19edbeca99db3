"""Receiver feedback of the lean subscribers: RFC 3550 statistics, reports, NACKs."""

from __future__ import annotations

import struct

from aiortc.rtp import RtcpRrPacket, RtcpRtpfbPacket, RtcpSenderInfo, RtcpSrPacket

from loadgen.load.rtcp import (
    NACK_TRIES,
    ReceiverFeedback,
    SsrcStats,
    rtp_header,
    rtx_original_seq,
)
from sfu.rtp.rtcp import normalize_lost, parse_rtcp


def _rr(packet: bytes) -> RtcpRrPacket:
    (rr,) = parse_rtcp(packet)
    assert isinstance(rr, RtcpRrPacket)
    return rr


def test_stats_count_loss_across_wraparound() -> None:
    stats = SsrcStats(65530)
    for seq in [65531, 65533, 65535, 0, 1, 3]:  # 65532, 65534, 2 lost
        assert stats.update(seq) in (0, 1)
    assert stats.extended_max == 65536 + 3
    assert stats.expected == 10 and stats.received == 7 and stats.lost == 3
    block = stats.report(42, 0.0)
    assert block.fraction_lost == (3 << 8) // 10
    assert block.packets_lost == 3
    assert block.highest_sequence == 65536 + 3
    # the next interval: no loss, late arrival of 2 lowers the cumulative count
    for seq in [4, 5, 2]:
        stats.update(seq)
    block = stats.report(42, 1.0)
    assert block.fraction_lost == 0 and block.packets_lost == 2


def test_reports_carry_lsr_and_dlsr_of_the_last_sender_report() -> None:
    fb = ReceiverFeedback(own_ssrc=7)
    fb.on_rtp(1000, 10, 0.0)
    sr = RtcpSrPacket(
        ssrc=1000,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=0x1122334455667788, rtp_timestamp=0, packet_count=1, octet_count=1
        ),
    )
    fb.on_rtcp(bytes(sr), 5.0)
    (packet,) = fb.receiver_reports(5.5)
    rr = _rr(packet)
    assert rr.ssrc == 7
    (block,) = rr.reports
    assert block.ssrc == 1000 and block.lsr == 0x33445566
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s
    assert fb.reports_sent == 1


def test_video_gaps_are_nacked_then_retried_then_forgotten() -> None:
    fb = ReceiverFeedback(own_ssrc=7)
    fb.nack_ssrcs.add(500)
    assert fb.on_rtp(500, 65534, 0.0) is None
    nack = fb.on_rtp(500, 1, 0.01)  # 65535 and 0 missing
    assert nack is not None
    (packet,) = parse_rtcp(nack)
    assert isinstance(packet, RtcpRtpfbPacket) and packet.media_ssrc == 500
    assert normalize_lost(packet.lost) == [65535, 0]
    fb.repaired(500, 65535)  # RTX brought it
    assert fb.nack_retries(0.05) == []  # not due yet
    (retry,) = fb.nack_retries(0.12)
    (packet,) = parse_rtcp(retry)
    assert isinstance(packet, RtcpRtpfbPacket) and normalize_lost(packet.lost) == [0]
    for n in range(NACK_TRIES):
        fb.nack_retries(0.25 + n * 0.11)
    assert not fb.pending()
    # audio (not in nack_ssrcs) is never NACKed
    fb.on_rtp(600, 1, 0.0)
    assert fb.on_rtp(600, 5, 0.1) is None


def test_rtp_header_and_rtx_original_sequence() -> None:
    header = struct.pack("!BBHII", 0x90, 97, 321, 1234, 0xABCDEF01)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\x01\x00\x00"
    packet = header + extension + struct.pack("!H", 4242) + b"payload"
    assert rtp_header(packet) == (97, 321, 0xABCDEF01)
    assert rtx_original_seq(packet) == 4242
    assert rtx_original_seq(header[:13]) is None
