"""sfu.subscribe_rtcp: each kind of RTCP feedback a subscriber's receiver sends, one test
each, dispatched to a real Forwarder (over a real Source) and the subscriber's
congestion controller; no sockets, time passed in."""

from __future__ import annotations

import logging

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
)

from sfu.congestion import CongestionController
from sfu.forwarder import EgressParams, Forwarder
from sfu.rtp.malformed import MalformedLog
from sfu.rtp.packet import RtpView
from sfu.rtp.rtcp import build_nack
from sfu.source import Source, SourceParams
from sfu.subscribe_rtcp import SubscriberRtcp, sender_report
from tests.fakes import RecordingOwner, RecordingSink, rtp, vp8_payload

PUB = 0x0A0A0A0A
OUT, OUT_RTX = 0xE0E0E0E0, 0xE0E0E0E1
T0 = 50.0


class Setup:
    def __init__(self) -> None:
        self.owner = RecordingOwner()
        params = SourceParams(
            track_id="cam", kind="video", codec="vp8", clock_rate=90000, payload_type=96,
            ssrc=PUB, rtx_payload_type=97, rtx_ssrc=PUB + 1, mid="0",
        )  # fmt: skip
        self.source = Source(params, self.owner)
        self.sink = RecordingSink()
        self.forwarder = Forwarder([self.source], self.sink, "sub")
        self.forwarder.configure(
            EgressParams(
                mid="0", payload_type=100, ssrc=OUT, rtx_payload_type=101, rtx_ssrc=OUT_RTX,
                extensions={},
            )
        )  # fmt: skip
        self.forwarder.start(T0)
        payload = vp8_payload(keyframe=True, picture_id=5)
        self.source.on_rtp(RtpView(rtp(1000, 90000, PUB, 96, payload, marker=1)), T0)
        self.congestion = CongestionController()
        self.counters = {
            k: 0 for k in ("rtcp_in", "rtcp_malformed", "nacks_in", "rtx_sent", "rtx_limited")
        }
        self.log = MalformedLog("test", 10.0, logging.getLogger("test"))
        self.lossy: list[int] = []
        self.estimates: list[float] = []
        self.rtcp = SubscriberRtcp(
            self.congestion,
            {OUT: self.forwarder, OUT_RTX: self.forwarder},
            self.counters,
            self.log,
            lambda: self.lossy.append(1),
            self.estimates.append,
        )

    def first_out_seq(self) -> int:
        return RtpView(self.sink.packets[0]).seq


def report(ssrc: int, fraction_lost: int = 0, lost: int = 0, highest: int = 100, lsr: int = 0,
           dlsr: int = 0) -> RtcpReceiverInfo:  # fmt: skip
    return RtcpReceiverInfo(
        ssrc=ssrc, fraction_lost=fraction_lost, packets_lost=lost, highest_sequence=highest,
        jitter=0, lsr=lsr, dlsr=dlsr,
    )  # fmt: skip


def test_nack_is_answered_as_rtx_from_the_cache():
    s = Setup()
    assert len(s.sink.packets) == 1
    s.rtcp.on_rtcp(build_nack(0x1234, OUT, [s.first_out_seq()]), T0 + 0.1)
    assert s.counters["nacks_in"] == 1 and s.counters["rtx_sent"] == 1
    rtx = RtpView(s.sink.packets[-1])
    assert (rtx.ssrc, rtx.payload_type) == (OUT_RTX, 101)
    # the RTX payload starts with the original (output) sequence number
    assert int.from_bytes(rtx.data[rtx.payload_start : rtx.payload_start + 2], "big") == (
        s.first_out_seq()
    )


def test_nack_of_an_unknown_ssrc_is_ignored():
    s = Setup()
    s.rtcp.on_rtcp(build_nack(0x1234, 0x99, [1]), T0 + 0.1)
    assert s.counters["nacks_in"] == 0 and len(s.sink.packets) == 1


def test_pli_asks_the_publisher_for_a_keyframe():
    s = Setup()
    before = len(s.owner.keyframe_requests)
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0x1234, media_ssrc=OUT)
    s.rtcp.on_rtcp(bytes(pli), T0 + 1.0)  # past the source's keyframe request interval
    assert s.forwarder.keyframes_requested == 1
    assert s.owner.keyframe_requests[before:] == [s.source]


def test_fir_asks_for_a_keyframe_per_fci_entry():
    s = Setup()
    before = len(s.owner.keyframe_requests)
    fci = OUT.to_bytes(4, "big") + bytes((7, 0, 0, 0)) + (0x55).to_bytes(4, "big") + bytes(4)
    fir = RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=0x1234, media_ssrc=0, fci=fci)
    s.rtcp.on_rtcp(bytes(fir), T0 + 1.0)
    assert s.forwarder.keyframes_requested == 1  # the second entry names no stream of ours
    assert s.owner.keyframe_requests[before:] == [s.source]


def test_remb_feeds_the_estimator_and_the_forwarder():
    s = Setup()
    remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=0x1234, media_ssrc=0)
    remb.fci = pack_remb_fci(500_000, [OUT])
    s.rtcp.on_rtcp(bytes(remb), T0 + 0.5)
    assert s.congestion.remb_bitrate == 500_000
    assert s.congestion.bwe.remb == 500_000
    assert s.forwarder.remb == 500_000  # believed: passed on to the publisher's REMB
    assert s.estimates == [T0 + 0.5]  # the allocation is redone


def test_a_malformed_remb_is_skipped():
    s = Setup()
    remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=0x1234, media_ssrc=0, fci=b"NOPE1234")
    s.rtcp.on_rtcp(bytes(remb), T0 + 0.5)
    assert s.congestion.remb_bitrate is None and s.estimates == []


def test_receiver_report_gives_loss_and_round_trip_time():
    s = Setup()
    s.source.on_sender_report(0x1234_5678_9ABC_DEF0, 90000, T0)
    packet = sender_report(s.forwarder, "pub", T0 + 1.0)  # our SR, whose LSR comes back
    assert packet is not None
    sr = RtcpPacket.parse(packet)[0]
    lsr = (sr.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    rr = RtcpRrPacket(ssrc=0x1234, reports=[report(OUT, 64, 3, lsr=lsr, dlsr=65536 // 10)])
    s.rtcp.on_rtcp(bytes(rr), T0 + 1.3)
    assert s.forwarder.fraction_lost == 0.25
    assert abs(s.forwarder.rtt - 0.2) < 1e-3  # 0.3 s after the SR, 0.1 s held by the receiver
    # 25 % lost on a link that is not congested: what receivers cannot repair goes twice
    assert s.lossy == [1]
    # just after the switch onto this stream: loss holds probing but lowers nothing
    assert s.congestion.bwe.last_signal == T0 + 1.3 and s.congestion.bwe.cap is None


def test_report_blocks_of_the_receivers_sender_report_count_too():
    s = Setup()
    info = RtcpSenderInfo(ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4)
    sr = RtcpSrPacket(ssrc=0x1234, sender_info=info, reports=[report(OUT, 128)])
    s.rtcp.on_rtcp(bytes(sr), T0 + 1.0)
    assert s.forwarder.fraction_lost == 0.5


def test_rtx_stream_loss_during_a_probe_fails_the_probe():
    s = Setup()
    bwe = s.congestion.bwe
    bwe.cap = 300_000.0
    assert bwe.start_probe(T0, wanted=True) is not None
    rr = RtcpRrPacket(ssrc=0x1234, reports=[report(OUT_RTX, 64)])
    s.rtcp.on_rtcp(bytes(rr), T0 + 0.2)
    assert bwe.probe is None and bwe.failed_probes == 1
    assert s.lossy == []  # RTX stream loss never turns redundancy on


def test_sdes_and_bye_from_the_receiver_are_counted_and_ignored():
    s = Setup()
    sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=0x1234, items=[(1, b"cname")])])
    bye = RtcpByePacket(sources=[0x1234])
    s.rtcp.on_rtcp(bytes(sdes) + bytes(bye), T0 + 0.1)
    assert s.counters["rtcp_in"] == 1 and s.counters["rtcp_malformed"] == 0
    assert len(s.sink.packets) == 1


def test_malformed_rtcp_is_dropped_and_counted():
    s = Setup()
    s.rtcp.on_rtcp(b"\x81\xc9\x00\x40" + bytes(8), T0)  # length past the end
    assert s.counters["rtcp_malformed"] == 1
    assert s.log.totals["rtcp"] == 1


def test_sender_report_maps_the_publishers_clock_onto_the_forwarded_stream():
    s = Setup()
    assert sender_report(s.forwarder, "pub", T0) is None  # no SR from the publisher yet
    s.source.on_sender_report(1 << 32, 90000, T0)
    packet = sender_report(s.forwarder, "pub", T0 + 0.5)
    assert packet is not None
    sr, sdes = RtcpPacket.parse(packet)
    assert sr.ssrc == OUT
    assert sr.sender_info.ntp_timestamp == (1 << 32) + (1 << 31)  # advanced by 0.5 s
    assert sr.sender_info.packet_count == 1
    assert sdes.chunks[0].items == [(1, b"parley-pub")]
