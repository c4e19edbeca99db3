"""sfu/counters.py and the counters it reads: keyframe requests sent and throttled by a
Source, packets and bytes in and out, totals kept across departed streams."""

from __future__ import annotations

from sfu.counters import StreamTotals
from sfu.forwarder import EgressParams, Forwarder
from sfu.rtp.extensions import MID_URI
from sfu.rtp.packet import RtpView
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp, vp8_payload

SSRC = 0x12345678


def video_source() -> tuple[RecordingOwner, Source]:
    owner = RecordingOwner()
    params = SourceParams("cam", "video", "vp8", 90000, 96, SSRC, 97, 0x87654321, mid="0")
    return owner, Source(params, owner, keyframe_interval=0.5)


def keyframe(seq: int) -> bytes:
    payload = vp8_payload(keyframe=True, picture_id=seq, tl0picidx=seq, body=b"frame")
    return rtp(seq, 3000 * seq, ssrc=SSRC, pt=96, payload=payload, marker=1)


def test_a_source_counts_keyframe_requests_sent_and_throttled() -> None:
    owner, source = video_source()
    for now in (0.0, 0.1, 0.2, 0.6, 0.61):
        source.request_keyframe(now)
    # sent at 0.0 and 0.6; the three in between were held back by keyframe_interval
    assert len(owner.keyframe_requests) == 2
    assert source.keyframe_requests_sent == 2
    assert source.keyframe_requests_throttled == 3
    source.poll(1.2)  # the request deferred at 0.61 goes out when due
    assert source.keyframe_requests_sent == len(owner.keyframe_requests) == 3


def test_totals_add_what_sources_and_forwarders_counted() -> None:
    _, source = video_source()
    sink = RecordingSink()
    forwarder = Forwarder([source], sink, "sub")
    forwarder.configure(EgressParams("m", 100, 0xE1, 101, 0xE2, {MID_URI: 1}))
    forwarder.start(0.0)
    packets = [keyframe(seq) for seq in range(1, 6)]
    for i, data in enumerate(packets):
        source.on_rtp(RtpView(data), 0.1 * i)
    forwarder.on_keyframe_request(1.0)
    totals = StreamTotals()
    totals.add_source(source)
    totals.add_forwarder(forwarder)
    assert totals.get("packets_in", "video") == 5
    assert totals.get("bytes_in", "video") == sum(map(len, packets))
    assert totals.get("packets_out", "video") == len(sink.packets) == 5
    assert totals.get("bytes_out", "video") == sum(map(len, sink.packets))
    assert totals.get("plis_in", "video") == 1
    assert totals.get("plis_sent", "video") == source.keyframe_requests_sent >= 1
    assert totals.get("packets_in", "audio") == 0
    # a later total keeps what an earlier one held
    later = StreamTotals()
    later.add(totals)
    later.add_forwarder(forwarder)
    assert later.get("packets_out", "video") == 10
