"""H.264 passthrough (sfu/rtp/h264.py): NAL unit parsing of packetization-mode 1 payloads,
keyframes (IDR with SPS and PPS before it), SPS resolution, and the Source/Forwarder
gating on them. Real payloads from GStreamer's rtph264pay and aiortc's H264Encoder are in
tests/fixtures/h264_rtp.jsonl; hand-made ones test what encoders do not send."""

from __future__ import annotations

import json
import random
from itertools import pairwise
from pathlib import Path

import pytest

from sfu.forwarder import EgressParams, Forwarder
from sfu.rtp.extensions import MID_URI
from sfu.rtp.h264 import H264Tracker, parse_h264, sps_resolution
from sfu.rtp.packet import RtpError, RtpView
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CAPTURE = [json.loads(line) for line in (FIXTURES / "h264_rtp.jsonl").read_text().splitlines()]
HEADER = CAPTURE[0]
GST = [RtpView(bytes.fromhex(o["rtp"])) for o in CAPTURE[1:] if o["sender"] == "rtph264pay"]
AIORTC = [o for o in CAPTURE[1:] if o["sender"] == "aiortc"]

SSRC = 0x2640
SPS = bytes.fromhex("6742c00c8c8d40a0f900f08846a0")  # webrtcbin's sprop SPS: 320x240
PPS = bytes.fromhex("68ce3c80")
IDR = b"\x65\x88\x84\x00\x33"
SLICE = b"\x41\x9a\x02\x00"


def stap_a(*nals: bytes) -> bytes:
    return b"\x18" + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


def fu_a(nal: bytes, start: bool, end: bool, body: bytes = b"\x00\x01") -> bytes:
    indicator = (nal[0] & 0xE0) | 28
    return (
        bytes((indicator, (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F))) + body
    )


# ------------------------------------------------------------------ parsing


def test_single_nal_unit_packets() -> None:
    assert parse_h264(SPS).sps and parse_h264(SPS).types == [7]
    assert parse_h264(PPS).pps and not parse_h264(PPS).slice
    idr = parse_h264(IDR)
    assert idr.idr and idr.slice and idr.types == [5]
    delta = parse_h264(SLICE)
    assert delta.slice and not delta.idr and delta.types == [1]


def test_stap_a_with_sps_pps_and_idr() -> None:
    nals = parse_h264(stap_a(SPS, PPS, IDR))
    assert nals.types == [7, 8, 5]
    assert nals.sps and nals.pps and nals.idr and nals.slice
    assert nals.sps_at == (3, 3 + len(SPS))


def test_fu_a_start_middle_and_end() -> None:
    start = parse_h264(fu_a(IDR, True, False))
    assert start.fu_start and start.idr and start.types == [5] and start.slice
    middle = parse_h264(fu_a(IDR, False, False))
    assert not middle.idr and middle.types == [] and middle.slice
    end = parse_h264(fu_a(IDR, False, True))
    assert end.fu_end and not end.idr and end.slice
    assert parse_h264(fu_a(SLICE, True, False)).types == [1]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"\xe5\x00", "forbidden_zero_bit"),
        (b"\x19\x00\x01\x65", "STAP-B"),
        (b"\x1a\x00", "MTAP16"),
        (b"\x1d\x85\x00", "FU-B"),
        (b"\x00\x00", "reserved"),
        (b"\x1f\x00", "reserved"),
        (b"\x18\x00", "truncated STAP-A"),
        (b"\x18\x00\x09\x65\x00", "overruns"),
        (b"\x18\x00\x00", "overruns"),
        (b"\x18", "without NAL units"),
        (stap_a(stap_a(IDR)), "aggregation"),
        (b"\x1c\x85", "truncated FU-A"),
        (b"\x1c\xc5\x00", "both start and end"),
        (b"\x1c\x98\x00", "aggregation/fragment"),
        (b"\x1c\x99\x00", "STAP-B"),
        (stap_a(b"\x80\x00"), "forbidden_zero_bit"),
    ],
)
def test_malformed_payloads_raise(payload: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        parse_h264(payload)


def test_sps_resolution_of_real_encoders() -> None:
    assert sps_resolution(SPS) == (320, 240)
    # aiortc's libx264 at 320x180: 12 macroblock rows, cropped by 12 lines
    first = bytes.fromhex(AIORTC[0]["payload"])
    nals = parse_h264(first)
    assert nals.sps_at is not None
    assert sps_resolution(first[nals.sps_at[0] : nals.sps_at[1]]) == (320, 180)
    assert sps_resolution(b"\x67\x42") is None  # truncated


def test_sps_resolution_of_a_high_profile_sps() -> None:
    """A High profile SPS (chroma format, bit depth, scaling matrix fields) from
    libx264 at 640x360 (cropped: 23 macroblock rows)."""
    import av  # noqa: PLC0415 (PyAV: an encoder the tests have anyway)

    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 640, 360, "yuv420p"
    codec.options = {"profile": "high", "preset": "veryfast", "tune": "zerolatency"}
    frame = av.VideoFrame(640, 360, "yuv420p")
    data = b"".join(bytes(p) for p in codec.encode(frame))
    nals = [n for n in data.split(b"\x00\x00\x01") if n and n[0] & 0x1F == 7]
    assert nals and nals[0][1] == 100  # profile_idc High
    assert sps_resolution(nals[0].rstrip(b"\x00")) == (640, 360)


# ------------------------------------------------------------------ keyframes


def test_rtph264pay_keyframes_are_the_sps_pps_idr_runs() -> None:
    """rtph264pay sends SPS and PPS as single NAL unit packets before the IDR's FU-A:
    they are held until the IDR arrives, then the run of three is the keyframe."""
    tracker = H264Tracker()
    out = []
    for pkt in GST:
        out.extend(tracker.push(pkt, parse_h264(pkt.data, pkt.payload_start, pkt.payload_end)))
    assert [p.seq for p, _ in out] == [p.seq for p in GST]  # every packet, in order
    keys = [i for i, (_, d) in enumerate(out) if d.keyframe]
    assert keys == [0, 1, 2, 37, 38, 39]  # SPS, PPS, IDR start; twice (gop-size=30)
    assert tracker.keyframes == 2 and tracker.idr_without_parameter_sets == 0
    assert (out[0][1].width, out[0][1].height) == (HEADER["rtph264pay"]["width"], 240)
    assert not out[3][1].keyframe  # the IDR's last fragment


def test_stap_a_keyframe_is_one_packet() -> None:
    tracker = H264Tracker()
    for i, o in enumerate(AIORTC):
        pkt = RtpView(rtp(100 + i, o["ts"], SSRC, 102, bytes.fromhex(o["payload"]), o["marker"]))
        run = tracker.push(pkt, parse_h264(pkt.data, pkt.payload_start, pkt.payload_end))
        assert [p.seq for p, _ in run] == [100 + i]
        assert run[0][1].keyframe == (i == 0)
    assert tracker.keyframes == 1 and (tracker.width, tracker.height) == (320, 180)


def test_an_idr_without_parameter_sets_is_not_a_keyframe() -> None:
    tracker = H264Tracker()
    run = tracker.push(RtpView(rtp(1, 90, SSRC, 102, IDR, 1)), parse_h264(IDR))
    assert not run[0][1].keyframe and tracker.idr_without_parameter_sets == 1
    # SPS alone is not enough either
    tracker.push(RtpView(rtp(2, 180, SSRC, 102, SPS)), parse_h264(SPS))
    run = tracker.push(RtpView(rtp(3, 180, SSRC, 102, IDR, 1)), parse_h264(IDR))
    assert [p.seq for p, _ in run] == [2, 3] and not any(d.keyframe for _, d in run)
    # a delta slice after parameter sets is not a keyframe, and uses them up
    tracker.push(RtpView(rtp(4, 270, SSRC, 102, stap_a(SPS, PPS))), parse_h264(stap_a(SPS, PPS)))
    run = tracker.push(RtpView(rtp(5, 270, SSRC, 102, SLICE, 1)), parse_h264(SLICE))
    assert not any(d.keyframe for _, d in run)
    run = tracker.push(RtpView(rtp(6, 360, SSRC, 102, IDR, 1)), parse_h264(IDR))
    assert not run[0][1].keyframe and tracker.keyframes == 0


def test_a_second_idr_slice_of_the_same_picture_is_not_counted_as_bare() -> None:
    tracker = H264Tracker()
    tracker.push(RtpView(rtp(1, 90, SSRC, 102, stap_a(SPS, PPS))), parse_h264(stap_a(SPS, PPS)))
    first = tracker.push(RtpView(rtp(2, 90, SSRC, 102, IDR)), parse_h264(IDR))
    second = tracker.push(RtpView(rtp(3, 90, SSRC, 102, IDR, 1)), parse_h264(IDR))
    assert [d.keyframe for _, d in first] == [True, True] and not second[0][1].keyframe
    assert tracker.keyframes == 1 and tracker.idr_without_parameter_sets == 0


def test_held_packets_are_bounded() -> None:
    tracker = H264Tracker(max_held=3)
    runs = [tracker.push(RtpView(rtp(i, 0, SSRC, 102, SPS)), parse_h264(SPS)) for i in range(4)]
    assert [len(r) for r in runs] == [0, 0, 0, 4]
    assert [p.seq for p, _ in tracker.flush()] == []


# ------------------------------------------------------------------ Source + Forwarder


def h264_source() -> tuple[RecordingOwner, Source]:
    owner = RecordingOwner()
    params = SourceParams("cam", "video", "h264", 90000, 102, SSRC, mid="0")
    return owner, Source(params, owner, keyframe_interval=0.0)


def attach(source: Source) -> tuple[RecordingSink, Forwarder]:
    sink = RecordingSink()
    forwarder = Forwarder([source], sink, "sub")
    forwarder.configure(EgressParams("m", 99, 0xE1, 100, 0xE2, {MID_URI: 1}))
    forwarder.start(0.0)
    return sink, forwarder


def test_a_subscriber_starts_on_sps_pps_idr_and_not_before() -> None:
    owner, source = h264_source()
    sink, _ = attach(source)
    requests = len(owner.keyframe_requests)
    # a bare IDR and a delta slice: nothing forwarded, a keyframe asked for each time
    source.on_rtp(RtpView(rtp(10, 900, SSRC, 102, IDR, 1)), 1.0)
    source.on_rtp(RtpView(rtp(11, 1800, SSRC, 102, SLICE, 1)), 1.1)
    assert sink.packets == [] and len(owner.keyframe_requests) == requests + 2
    # rtph264pay's order: SPS, PPS (held), then the IDR's FU-A start and end
    source.on_rtp(RtpView(rtp(12, 2700, SSRC, 102, SPS)), 1.2)
    source.on_rtp(RtpView(rtp(13, 2700, SSRC, 102, PPS)), 1.2)
    assert sink.packets == []  # held until the slice after them
    source.on_rtp(RtpView(rtp(14, 2700, SSRC, 102, fu_a(IDR, True, False))), 1.2)
    source.on_rtp(RtpView(rtp(15, 2700, SSRC, 102, fu_a(IDR, False, True), 1)), 1.2)
    source.on_rtp(RtpView(rtp(16, 3600, SSRC, 102, SLICE, 1)), 1.3)
    out = [RtpView(data) for data in sink.packets]
    assert [p.payload() for p in out] == [
        SPS,
        PPS,
        fu_a(IDR, True, False),
        fu_a(IDR, False, True),
        SLICE,
    ]
    seqs = [p.seq for p in out]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]  # continuous, rewritten
    assert {p.ssrc for p in out} == {0xE1} and {p.payload_type for p in out} == {99}
    assert source.last_keyframe_time == 1.2 and (source.width, source.height) == (320, 240)


def test_malformed_h264_is_dropped_and_counted() -> None:
    _, source = h264_source()
    sink, _ = attach(source)
    source.on_rtp(RtpView(rtp(1, 90, SSRC, 102, b"\x1c\xc5\x00", 1)), 1.0)  # FU-A S+E
    source.on_rtp(RtpView(rtp(2, 90, SSRC, 102, b"\x19\x00", 1)), 1.0)  # STAP-B
    assert source.malformed == 2 and sink.packets == []
    source.on_rtp(RtpView(rtp(3, 180, SSRC, 102, stap_a(SPS, PPS, IDR), 1)), 1.1)
    assert [RtpView(d).payload() for d in sink.packets] == [stap_a(SPS, PPS, IDR)]


def test_h264_goes_native_in_the_steady_state_and_matches_python() -> None:
    """The C loop forwards H.264 as it forwards VP8 (no descriptor to rewrite: only
    sequence numbers and timestamps); it and the Python path send the same bytes."""
    from sfu import native
    from sfu.pacer import Pacer
    from sfu.rtp.extensions import ABS_SEND_TIME_URI
    from tests.unit.test_native import EgressSink, Wire

    _, source = h264_source()
    wires = (Wire(), Wire())
    pacer = Pacer()
    params = EgressParams("3", 99, 0xABCD, 100, 0xABCE, {MID_URI: 4, ABS_SEND_TIME_URI: 3})
    forwarders = []
    for wire, p in zip(wires, (pacer, Pacer()), strict=True):
        random.seed(3)
        forwarders.append(Forwarder([source], EgressSink(wire.egress, p), "sub"))
    fast, slow = forwarders
    try:
        for f in forwarders:
            f.configure(params)
        fast.egress, fast.pacer = wires[0].egress, pacer
        for f in forwarders:
            f.start(0.0)
        for i, pkt in enumerate(GST):
            data = rtp(pkt.seq, pkt.timestamp, SSRC, 102, pkt.payload(), pkt.marker)
            source.on_rtp(RtpView(data), 1.0 + i * 0.01)
        fast_out, slow_out = wires[0].received(), wires[1].received()
        assert len(slow_out) == len(GST) and fast_out == slow_out
        assert [RtpView(d).payload() for d in slow_out] == [p.payload() for p in GST]
        # the first packet of the keyframe run starts the stream in Python, the rest is C
        assert fast.native_packets == (len(GST) - 1 if native.NATIVE else 0)
    finally:
        for f in forwarders:
            f.close()
        for wire in wires:
            wire.close()


def test_an_h264_simulcast_switch_starts_on_the_target_keyframe_run() -> None:
    """Two H.264 layers: a forwarder aimed at the other layer keeps sending the old one
    until the new one's SPS+PPS+IDR run, then continues with contiguous sequence
    numbers and later timestamps; nothing but those two fields changes."""
    owner = RecordingOwner()
    layers = [
        Source(SourceParams("cam", "video", "h264", 90000, 102, 0x100 + i, rid=rid), owner)
        for i, rid in enumerate(("q", "f"))
    ]
    sink = RecordingSink()
    forwarder = Forwarder(layers, sink, "sub")
    forwarder.configure(EgressParams("m", 99, 0xE1, 100, 0xE2, {MID_URI: 1}))
    forwarder.set_target(layers[0], 0.0)
    seqs = [100, 5000]

    def send(layer: int, ts: int, *payloads: bytes) -> None:
        for i, payload in enumerate(payloads):
            marker = int(i == len(payloads) - 1)
            data = rtp(seqs[layer], ts, 0x100 + layer, 102, payload, marker)
            layers[layer].on_rtp(RtpView(data), ts / 90000)
            seqs[layer] += 1

    send(0, 9000, stap_a(SPS, PPS, IDR))
    send(0, 12000, SLICE)
    forwarder.set_target(layers[1], 0.2)
    send(1, 500_000, SLICE)  # a delta frame of the target: not a start
    send(0, 15000, SLICE)  # the old layer goes on meanwhile
    send(1, 503_000, SPS, PPS, fu_a(IDR, True, False), fu_a(IDR, False, True))
    send(1, 506_000, SLICE)
    send(0, 18000, SLICE)  # the old layer is left
    out = sink.views()
    assert [p.payload() for p in out] == [
        stap_a(SPS, PPS, IDR),
        SLICE,
        SLICE,
        SPS,
        PPS,
        fu_a(IDR, True, False),
        fu_a(IDR, False, True),
        SLICE,
    ]
    assert [(p.seq - out[0].seq) & 0xFFFF for p in out] == list(range(8))
    stamps = [p.timestamp for p in out]
    assert all(0 < (b - a) & 0xFFFFFFFF < 0x80000000 for a, b in pairwise(stamps) if a != b)
    assert stamps[3] == stamps[4] == stamps[5] == stamps[6]  # the run is one picture
    assert stamps[7] - stamps[6] == 3000  # the new layer's own spacing
    assert forwarder.current is layers[1] and forwarder.layer_switches == 1
    assert {p.ssrc for p in out} == {0xE1}


def test_a_nacked_h264_packet_is_resent_as_rtx_from_the_cache() -> None:
    _, source = h264_source()
    sink, forwarder = attach(source)
    source.on_rtp(RtpView(rtp(20, 900, SSRC, 102, SPS)), 1.0)
    source.on_rtp(RtpView(rtp(21, 900, SSRC, 102, PPS)), 1.0)
    source.on_rtp(RtpView(rtp(22, 900, SSRC, 102, IDR, 1)), 1.0)
    pps = sink.views()[1]
    sink.clear()
    assert forwarder.on_nack([pps.seq], 1.1)[0] == 1
    (rtx,) = sink.views()
    assert (rtx.ssrc, rtx.payload_type) == (0xE2, 100)  # the subscriber leg's RTX
    assert rtx.payload() == pps.seq.to_bytes(2, "big") + PPS
