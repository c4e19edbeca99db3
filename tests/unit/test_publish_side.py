"""sfu.publish_side: the RTCP a publisher sends the SFU and the RTCP the SFU sends it,
one test each, over a fake port and a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import logging

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RtcpByePacket,
    RtcpPacket,
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

from sfu.config import SfuConfig
from sfu.publish_side import NACK_BATCH_DELAY, PublishSide
from sfu.rtp.malformed import MalformedLog
from sfu.source import Source, SourceParams
from sfu.tracks import PublishedTrack
from tests.fakes import FakeClock, FakePort, rtp, vp8_payload

PUB = 0x0A0A0A0A


class Setup:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.counters = {
            k: 0 for k in ("rtp_in", "rtp_unknown", "rtp_malformed", "rtcp_in", "rtcp_malformed")
        }
        self.log = MalformedLog("test", 10.0, logging.getLogger("test"))
        self.published: list[PublishedTrack] = []
        self.unpublished: list[PublishedTrack] = []
        self.side = PublishSide(
            "pub", SfuConfig(), self.clock, self.counters, self.log,
            on_published=lambda track, now: self.published.append(track),
            on_unpublished=self.unpublished.append,
        )  # fmt: skip
        self.port = FakePort()
        self.side.port = self.port  # type: ignore[assignment]
        params = SourceParams(
            track_id="cam", kind="video", codec="vp8", clock_rate=90000, payload_type=96,
            ssrc=PUB, mid="0",
        )  # fmt: skip
        self.source = Source(params, self.side, keyframe_interval=0.5)
        self.track = PublishedTrack("cam", "video", "0", (self.source,))
        self.side.add_track(self.track, self.clock.time())

    def receive(self, seq: int, keyframe: bool = False) -> None:
        payload = vp8_payload(keyframe=keyframe, picture_id=seq)
        self.side.on_rtp(rtp(seq, seq * 3000, PUB, 96, payload, marker=1), self.clock.time())

    def sent(self) -> list:
        return [p for data in self.port.sent for p in RtcpPacket.parse(data)]


def test_a_track_is_routed_and_announced():
    s = Setup()
    assert s.published == [s.track]
    s.receive(1, keyframe=True)
    assert s.source.packets == 1 and s.counters["rtp_in"] == 1
    s.side.close()
    assert s.unpublished == [s.track] and s.source.closed


def test_sender_report_from_the_publisher_keeps_its_clock_mapping():
    s = Setup()
    info = RtcpSenderInfo(ntp_timestamp=7 << 32, rtp_timestamp=1234, packet_count=1, octet_count=2)
    s.side.on_rtcp(bytes(RtcpSrPacket(ssrc=PUB, sender_info=info)), s.clock.time())
    assert s.source.sender_report == (7 << 32, 1234, s.clock.time())
    assert s.counters["rtcp_in"] == 1


def test_sender_report_of_an_unknown_ssrc_is_ignored():
    s = Setup()
    info = RtcpSenderInfo(ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4)
    s.side.on_rtcp(bytes(RtcpSrPacket(ssrc=0x77, sender_info=info)), s.clock.time())
    assert s.source.sender_report is None


def test_sdes_and_bye_from_the_publisher_are_counted_and_ignored():
    s = Setup()
    sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=PUB, items=[(1, b"cname")])])
    s.side.on_rtcp(bytes(sdes) + bytes(RtcpByePacket(sources=[PUB])), s.clock.time())
    assert s.counters["rtcp_in"] == 1 and s.counters["rtcp_malformed"] == 0
    assert s.port.sent == [] and s.track in s.side.tracks.values()


def test_malformed_rtcp_from_the_publisher_is_counted():
    s = Setup()
    s.side.on_rtcp(b"\x80\xc8\x00\x20" + bytes(4), s.clock.time())
    assert s.counters["rtcp_malformed"] == 1 and s.log.totals["rtcp"] == 1


def test_receiver_report_and_remb_go_upstream():
    s = Setup()
    for seq in range(1, 11):
        s.receive(seq, keyframe=seq == 1)
    s.side.send_receiver_reports(s.clock.time())
    rr, remb = s.sent()
    assert isinstance(rr, RtcpRrPacket)
    assert [r.ssrc for r in rr.reports] == [PUB] and rr.reports[0].highest_sequence == 10
    assert isinstance(remb, RtcpPsfbPacket) and remb.fmt == RTCP_PSFB_APP
    bitrate, ssrcs = unpack_remb_fci(remb.fci)
    assert ssrcs == [PUB]
    # no subscriber estimate: the most Parley asks of a publisher
    assert abs(bitrate - SfuConfig().max_publish_bitrate) <= SfuConfig().max_publish_bitrate / 1e4


def test_no_receiver_report_before_anything_arrived():
    s = Setup()
    s.side.send_receiver_reports(s.clock.time())
    assert s.port.sent == []


def test_a_gap_is_nacked_after_the_batch_delay():
    s = Setup()
    s.receive(1, keyframe=True)
    s.receive(3)
    assert s.port.sent == []  # reordering may still fill the gap
    s.clock.advance(NACK_BATCH_DELAY + 0.001)
    nacks = [p for p in s.sent() if isinstance(p, RtcpRtpfbPacket)]
    assert nacks and nacks[0].media_ssrc == PUB and nacks[0].lost == [2]


def test_pli_goes_upstream_and_a_second_one_is_deferred():
    s = Setup()
    s.source.request_keyframe(s.clock.time())
    (pli,) = s.sent()
    assert isinstance(pli, RtcpPsfbPacket) and pli.fmt == RTCP_PSFB_PLI
    assert pli.media_ssrc == PUB
    s.source.request_keyframe(s.clock.time() + 0.1)  # within the interval: deferred
    assert len(s.port.sent) == 1 and len(s.clock.pending()) == 1
    s.clock.advance(0.6)
    assert len(s.port.sent) == 2  # the deferred request went out on the fake clock's timer


def test_nothing_is_sent_without_a_transport():
    s = Setup()
    s.side.port = None
    s.source.request_keyframe(s.clock.time())
    s.side.send_receiver_reports(s.clock.time())
    assert s.port.sent == []


def test_rr_reports_each_stream():
    s = Setup()
    s.receive(1, keyframe=True)
    s.side.send_receiver_reports(s.clock.time())
    rr = s.sent()[0]
    assert isinstance(rr.reports[0], RtcpReceiverInfo) and rr.reports[0].fraction_lost == 0
