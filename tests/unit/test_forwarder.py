"""sfu.forwarder.Forwarder fed by a real Source, sending into a recording sink."""

from __future__ import annotations

import pytest

from sfu.forwarder import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    EgressParams,
    Forwarder,
)
from sfu.rtp.packet import RtpView, Vp8Descriptor, abs_send_time
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp, vp8_payload

PUB, PUB2 = 0x0A0A0A0A, 0x0B0B0B0B
PUB_RTX = 0x0A0A0A0B
OUT, OUT_RTX = 0xE0E0E0E0, 0xE0E0E0E1
# the publisher leg's extension ids (as in the Chromium capture)
IN_AST, IN_MID, IN_RID, IN_RRID, IN_LEVEL, IN_TWCC = 2, 9, 10, 11, 12, 4
# the subscriber leg's ids deliberately reuse the publisher's for other extensions
OUT_MID, OUT_AST, OUT_LEVEL = 10, 9, 2


def video_source(owner, cache_size=1024, keyframe_interval=0.5) -> Source:
    params = SourceParams(
        track_id="cam",
        kind="video",
        codec="vp8",
        clock_rate=90000,
        payload_type=96,
        ssrc=PUB,
        rtx_payload_type=97,
        rtx_ssrc=PUB_RTX,
        mid="0",
    )
    return Source(params, owner, cache_size=cache_size, keyframe_interval=keyframe_interval)


def audio_source(owner, level_ext=IN_LEVEL) -> Source:
    params = SourceParams(
        track_id="mic",
        kind="audio",
        codec="opus",
        clock_rate=48000,
        payload_type=111,
        ssrc=PUB,
        audio_level_ext=level_ext,
        mid="1",
    )
    return Source(params, owner)


def egress(rtx=True, extensions=None, pt=100, mid="5") -> EgressParams:
    if extensions is None:
        extensions = {MID_URI: OUT_MID, ABS_SEND_TIME_URI: OUT_AST}
    return EgressParams(
        mid=mid,
        payload_type=pt,
        ssrc=OUT,
        rtx_payload_type=101 if rtx else None,
        rtx_ssrc=OUT_RTX if rtx else None,
        extensions=extensions,
    )


def setup(kind="video", rtx=True, extensions=None, now=0.0, **source_kw):
    owner = RecordingOwner()
    source = video_source(owner, **source_kw) if kind == "video" else audio_source(owner)
    sink = RecordingSink()
    fwd = Forwarder([source], sink, "sub-1")
    fwd.configure(egress(rtx=rtx, extensions=extensions, pt=100 if kind == "video" else 109))
    fwd.start(now)
    return owner, source, sink, fwd


PUB_EXTS = [(IN_AST, b"\x01\x02\x03"), (IN_MID, b"0"), (IN_RID, b"q"), (IN_TWCC, b"\x00\x07")]


def video(
    seq,
    ts,
    pid,
    tl0,
    keyframe=False,
    start=True,
    ssrc=PUB,
    marker=1,
    body=b"frame",
    exts=PUB_EXTS,
    pid_bits=15,
):
    payload = vp8_payload(
        keyframe=keyframe,
        start=start,
        picture_id=pid,
        pid_bits=pid_bits,
        tl0picidx=tl0,
        tid=0,
        body=body,
    )
    return rtp(seq, ts, ssrc=ssrc, pt=96, payload=payload, marker=marker, extensions=exts)


def feed(source, data, now):
    source.on_rtp(RtpView(data), now)


def frame_body(view: RtpView) -> bytes:
    """The payload after the VP8 descriptor."""
    desc = Vp8Descriptor(view.data, view.payload_start, view.payload_end)
    return view.data[view.payload_start + desc.size : view.payload_end]


def u16(x):
    return x & 0xFFFF


def u32(x):
    return x & 0xFFFFFFFF


# ------------------------------------------------------------------ starting


def test_video_drops_until_a_keyframe_and_asks_for_one():
    owner, source, sink, fwd = setup()
    assert owner.keyframe_requests == [source]  # subscribing asks at once
    feed(source, video(100, 9000, 7, 1), 0.1)
    feed(source, video(101, 12000, 8, 2), 0.2)
    assert sink.packets == [] and not fwd.started
    assert len(owner.keyframe_requests) == 1  # throttled (interval 0.5 s)
    assert source.keyframe_pending
    feed(source, video(102, 15000, 9, 3), 0.6)
    assert len(owner.keyframe_requests) == 2
    assert sink.packets == []
    # a keyframe continuation packet is not a keyframe start either
    feed(source, video(103, 18000, 10, 4, keyframe=True, start=False), 0.7)
    assert sink.packets == []
    feed(source, video(104, 21000, 11, 5, keyframe=True, marker=0), 0.8)
    feed(source, video(105, 21000, 11, 5, start=False), 0.8)
    feed(source, video(106, 24000, 12, 5), 0.85)
    assert len(sink.packets) == 3 and fwd.started
    assert fwd.packets_sent == 3 and fwd.bytes_sent == sum(map(len, sink.packets))
    assert not source.keyframe_pending
    assert len(owner.keyframe_requests) == 2


def test_output_header_extensions_and_payload():
    owner, source, sink, fwd = setup()
    inputs = [
        video(5000, 90000, 300, 20, keyframe=True, marker=0, body=b"key-1"),
        video(5001, 90000, 300, 20, start=False, marker=1, body=b"key-2"),
        video(5002, 93000, 301, 21, body=b"delta"),
    ]
    for i, data in enumerate(inputs):
        feed(source, data, 1.0 + i * 0.01)
    out = sink.views()
    assert len(out) == 3
    first = out[0]
    for i, (v, data) in enumerate(zip(out, inputs, strict=True)):
        src = RtpView(data)
        assert v.ssrc == OUT and v.payload_type == 100
        assert v.seq == u16(first.seq + i)
        assert v.timestamp == u32(first.timestamp + src.timestamp - 90000)
        assert v.marker == src.marker
        # only the subscriber leg's extensions: its MID and a fresh abs-send-time
        assert v.extensions() == {OUT_MID: b"5", OUT_AST: abs_send_time(1.0 + i * 0.01)}
        assert frame_body(v) == frame_body(src)
        assert v.padding == 0 and v.csrc_end == 12
    descs = [Vp8Descriptor(v.data, v.payload_start, v.payload_end) for v in out]
    assert [d.picture_id_bits for d in descs] == [15, 15, 15]
    pid0, tl00 = descs[0].picture_id, descs[0].tl0picidx
    assert [d.picture_id for d in descs] == [pid0, pid0, (pid0 + 1) & 0x7FFF]
    assert [d.tl0picidx for d in descs] == [tl00, tl00, (tl00 + 1) & 0xFF]
    assert descs[0].keyframe and (descs[0].width, descs[0].height) == (640, 360)
    assert [d.start for d in descs] == [1, 0, 1]
    assert owner.keyframe_requests == [source]


@pytest.mark.parametrize("extensions", [{}, {MID_URI: 3}, {ABS_SEND_TIME_URI: 5}])
def test_only_negotiated_extensions(extensions):
    _, source, sink, _ = setup(extensions=extensions)
    feed(source, video(1, 0, 1, 1, keyframe=True), 0.5)
    (v,) = sink.views()
    expected = {}
    if MID_URI in extensions:
        expected[extensions[MID_URI]] = b"5"
    if ABS_SEND_TIME_URI in extensions:
        expected[extensions[ABS_SEND_TIME_URI]] = abs_send_time(0.5)
    assert v.extensions() == expected
    assert bool(v.data[0] & 0x10) == bool(expected)


def test_audio_starts_at_once_with_remapped_audio_level():
    exts = {MID_URI: 1, AUDIO_LEVEL_URI: OUT_LEVEL}
    owner, source, sink, fwd = setup(kind="audio", extensions=exts)
    levels = [b"\x85", b"\x7f", b"\x00"]
    for i, level in enumerate(levels):
        data = rtp(
            7 + i,
            960 * i,
            ssrc=PUB,
            pt=111,
            payload=b"opus%d" % i,
            extensions=[(IN_MID, b"1"), (IN_LEVEL, level), (IN_RID, b"x"), (IN_AST, b"abc")],
        )
        feed(source, data, 0.02 * i)
    feed(source, rtp(10, 2880, ssrc=PUB, pt=111, payload=b"no-level"), 0.06)
    out = sink.views()
    assert len(out) == 4
    assert owner.keyframe_requests == []
    for i, v in enumerate(out[:3]):
        assert v.payload_type == 109 and v.ssrc == OUT
        assert v.extensions() == {1: b"5", OUT_LEVEL: levels[i]}
        assert v.payload() == b"opus%d" % i
        assert v.seq == u16(out[0].seq + i)
    assert out[3].extensions() == {1: b"5"}
    assert out[3].timestamp == u32(out[0].timestamp + 2880)


def test_audio_level_not_sent_when_the_subscriber_did_not_negotiate_it():
    _, source, sink, _ = setup(kind="audio", extensions={MID_URI: 1})
    feed(source, rtp(1, 0, pt=111, ssrc=PUB, extensions=[(IN_LEVEL, b"\x10")]), 0.0)
    assert sink.views()[0].extensions() == {1: b"5"}


def test_vp8_without_picture_id_passes_unchanged():
    _, source, sink, _ = setup()
    payload = vp8_payload(keyframe=True, body=b"plain")
    feed(source, rtp(1, 0, ssrc=PUB, payload=payload), 0.0)
    assert sink.views()[0].payload() == payload


# ------------------------------------------------------------------ switching inputs


def test_continuous_across_a_publisher_ssrc_change():
    owner, source, sink, fwd = setup()
    for i in range(5):
        feed(source, video(40000 + i, 1000 + 3000 * i, 500 + i, 60 + i, keyframe=i == 0), i / 30)
    last = sink.views()[-1]
    last_desc = Vp8Descriptor(last.data, last.payload_start, last.payload_end)
    requests = len(owner.keyframe_requests)
    # the publisher restarts with a new SSRC, seq, timestamp and picture ids
    feed(source, video(7, 555, 20, 3, ssrc=PUB2), 1.0)
    assert len(sink.packets) == 5
    assert len(owner.keyframe_requests) == requests + 1
    feed(source, video(8, 555, 20, 3, ssrc=PUB2, keyframe=True), 1.5)
    feed(source, video(9, 3555, 21, 4, ssrc=PUB2), 1.53)
    # a late packet of the old input is not forwarded
    feed(source, video(40005, 16000, 505, 65), 1.54)
    out = sink.views()
    assert len(out) == 7
    new, after = out[5], out[6]
    assert new.ssrc == OUT and new.seq == u16(last.seq + 1)
    assert new.timestamp == u32(last.timestamp + round((1.5 - 4 / 30) * 90000))
    assert after.seq == u16(last.seq + 2) and after.timestamp == u32(new.timestamp + 3000)
    d_new = Vp8Descriptor(new.data, new.payload_start, new.payload_end)
    d_after = Vp8Descriptor(after.data, after.payload_start, after.payload_end)
    assert d_new.picture_id == (last_desc.picture_id + 1) & 0x7FFF
    assert d_after.picture_id == (last_desc.picture_id + 2) & 0x7FFF
    assert d_new.tl0picidx == (last_desc.tl0picidx + 1) & 0xFF
    assert d_after.tl0picidx == (last_desc.tl0picidx + 2) & 0xFF
    assert fwd.rewriter.in_ssrc == PUB2


def test_reordered_packet_from_before_the_switch_is_dropped():
    _, source, sink, _ = setup()
    feed(source, video(100, 0, 1, 1, keyframe=True), 0.0)
    feed(source, video(99, 0, 0, 0), 0.01)  # older than the keyframe we started on
    feed(source, video(101, 3000, 2, 2), 0.02)
    assert [v.seq - sink.views()[0].seq for v in sink.views()] == [0, 1]


# ------------------------------------------------------------------ NACK / RTX


def _started(rtx=True, n=5, extensions=None, **kw):
    owner, source, sink, fwd = setup(rtx=rtx, extensions=extensions, **kw)
    for i in range(n):
        feed(
            source,
            video(1000 + i, 3000 * i, 10 + i, 1 + i, keyframe=i == 0, body=b"b%d" % i),
            i * 0.03,
        )
    return owner, source, sink, fwd


def test_nack_answered_as_rtx():
    _, source, sink, fwd = _started()
    sent = sink.views()
    sink.clear()
    target = sent[2]
    assert fwd.on_nack([target.seq], 1.0)[0] == 1
    (rtx,) = sink.views()
    assert rtx.payload_type == 101 and rtx.ssrc == OUT_RTX
    assert int.from_bytes(rtx.payload()[:2], "big") == target.seq  # OSN
    assert rtx.payload()[2:] == target.payload()  # same (rewritten) payload
    assert rtx.timestamp == target.timestamp and rtx.marker == target.marker
    assert rtx.extensions()[OUT_MID] == b"5"
    # RTX has its own consecutive sequence numbers
    assert fwd.on_nack([sent[0].seq, sent[4].seq], 1.1)[0] == 2
    rtx_seqs = [v.seq for v in sink.views()]
    assert rtx_seqs == [rtx.seq, u16(rtx.seq + 1), u16(rtx.seq + 2)]
    assert [int.from_bytes(v.payload()[:2], "big") for v in sink.views()[1:]] == [
        sent[0].seq,
        sent[4].seq,
    ]
    assert sink.views()[1].payload()[2:] == sent[0].payload()
    assert fwd.retransmitted == 3
    assert fwd.packets_sent == 5  # retransmissions are not new packets


def test_nack_plain_retransmission_without_rtx():
    # without abs-send-time the retransmission is byte-identical to the original
    _, _, sink, fwd = _started(rtx=False, extensions={MID_URI: 4})
    sent = list(sink.packets)
    sink.clear()
    seqs = [RtpView(p).seq for p in sent]
    assert fwd.on_nack([seqs[1], seqs[3]], 2.0)[0] == 2
    assert sink.packets == [sent[1], sent[3]]


def test_nack_for_unknown_sequence_numbers():
    _, _, sink, fwd = _started()
    seqs = [v.seq for v in sink.views()]
    sink.clear()
    assert fwd.on_nack([u16(seqs[-1] + 1), u16(seqs[-1] + 100), u16(seqs[0] - 1)], 1.0)[0] == 0
    assert sink.packets == []


def test_nack_before_start_or_unconfigured():
    owner = RecordingOwner()
    source = video_source(owner)
    sink = RecordingSink()
    fwd = Forwarder([source], sink, "x")
    assert fwd.on_nack([1, 2, 3], 0.0)[0] == 0
    fwd.configure(egress())
    assert fwd.on_nack([1, 2, 3], 0.0)[0] == 0
    assert sink.packets == []


def test_nack_for_packet_evicted_from_the_cache():
    _, _, sink, fwd = _started(n=20, cache_size=8)
    seqs = [v.seq for v in sink.views()]
    sink.clear()
    assert fwd.on_nack([seqs[0]], 1.0)[0] == 0
    assert fwd.on_nack([seqs[-1]], 1.0)[0] == 1


def test_nack_for_packet_of_a_previous_input_is_not_answered():
    _, source, sink, fwd = _started()
    old = [v.seq for v in sink.views()]
    feed(source, video(1, 0, 1, 1, ssrc=PUB2, keyframe=True), 1.0)
    sink.clear()
    assert fwd.on_nack(old, 1.1)[0] == 0
    assert fwd.on_nack([u16(old[-1] + 1)], 1.1)[0] == 1


def test_nack_across_a_padding_drop():
    _, source, sink, fwd = setup()
    feed(source, video(10, 0, 1, 1, keyframe=True, body=b"ten"), 0.0)
    feed(source, video(11, 3000, 2, 2, body=b"eleven"), 0.03)
    feed(source, rtp(12, 3000, ssrc=PUB, payload=b"", padding=200), 0.04)
    feed(source, video(13, 6000, 3, 3, body=b"thirteen"), 0.06)
    out = sink.views()
    assert [u16(v.seq - out[0].seq) for v in out] == [0, 1, 2]
    sink.clear()
    assert fwd.on_nack([out[2].seq, out[1].seq], 0.1)[0] == 2
    rtx = sink.views()
    assert [int.from_bytes(v.payload()[:2], "big") for v in rtx] == [out[2].seq, out[1].seq]
    assert [v.payload()[2:] for v in rtx] == [out[2].payload(), out[1].payload()]
    assert out[2].payload().endswith(b"thirteen") and out[1].payload().endswith(b"eleven")


def test_rtx_repair_after_a_padding_drop_keeps_its_sequence_number():
    # Regression: 11 lost, 13 padding dropped (shifting the mapping), then the RTX
    # repair of 11 was sent with the same number as 10.
    _, source, sink, _ = setup()
    feed(source, video(10, 0, 1, 1, keyframe=True, body=b"ten"), 0.0)
    feed(source, video(12, 6000, 3, 3, body=b"twelve"), 0.06)
    feed(source, rtp(13, 6000, ssrc=PUB, payload=b"", padding=100), 0.07)
    assert source.nack.missing == [11]
    repair = video(11, 3000, 2, 2, body=b"eleven")
    rtx = rtp(
        555, 3000, ssrc=PUB_RTX, pt=97, payload=(11).to_bytes(2, "big") + RtpView(repair).payload()
    )
    source.on_rtx(RtpView(rtx), 0.1)
    feed(source, video(14, 9000, 4, 4, body=b"fourteen"), 0.1)
    out = sink.views()
    base = out[0].seq
    expected = [(0, b"ten"), (2, b"twelve"), (1, b"eleven"), (3, b"fourteen")]
    assert len(out) == len(expected)
    for v, (offset, body) in zip(out, expected, strict=True):
        assert u16(v.seq - base) == offset and frame_body(v).endswith(body)
    pids = [Vp8Descriptor(v.data, v.payload_start, v.payload_end).picture_id for v in out]
    assert [(p - pids[0]) & 0x7FFF for p in pids] == [0, 2, 1, 3]


# ------------------------------------------------------------------ padding


def test_padding_is_not_forwarded_and_leaves_no_gap():
    _, source, sink, fwd = setup()
    feed(source, video(65534, 0, 1, 1, keyframe=True), 0.0)
    feed(source, rtp(65535, 0, ssrc=PUB, payload=b"", padding=255), 0.01)
    feed(source, rtp(0, 0, ssrc=PUB, payload=b"", padding=4), 0.02)
    feed(source, video(1, 3000, 2, 2), 0.03)
    # padding of another SSRC does not touch this mapping
    feed(source, rtp(2, 0, ssrc=PUB2, payload=b"", padding=4), 0.04)
    feed(source, video(2, 6000, 3, 3), 0.05)
    out = sink.views()
    assert len(out) == 3
    assert [u16(v.seq - out[0].seq) for v in out] == [0, 1, 2]
    assert all(v.payload_size > 0 for v in out)


# ------------------------------------------------------------------ sender reports


def test_sender_report_maps_the_publisher_clock_into_the_output_timestamps():
    _, source, sink, fwd = setup()
    assert fwd.sender_report(1.0) is None
    ntp = (3_900_000_000 << 32) | (1 << 31)  # some wall-clock time + 0.5 s
    rtp_ts = 4_294_000_000  # close to the wrap
    source.on_sender_report(ntp, rtp_ts, now=2.0)
    assert fwd.sender_report(2.0) is None  # nothing sent yet: no mapping
    # a packet captured 50 ms after the SR's instant, arriving at 2.05
    pkt_ts = u32(rtp_ts + 4500)
    feed(source, video(1, pkt_ts, 1, 1, keyframe=True), 2.05)
    (out,) = sink.views()
    ntp_out, rtp_out, packets, octets = fwd.sender_report(3.0)
    assert (packets, octets) == (1, len(sink.packets[0]))
    assert ntp_out == ntp + (1 << 32)  # one second later
    assert u32(rtp_out - fwd.rewriter.ts_offset) == u32(rtp_ts + 90000)
    # lip sync: the forwarded packet has the same NTP time for the subscriber as the
    # original had for the SFU
    at_pub = ntp / 2**32 + (u32(pkt_ts - rtp_ts)) / 90000
    delta = (out.timestamp - rtp_out + 2**31) % 2**32 - 2**31
    at_sub = ntp_out / 2**32 + delta / 90000
    assert at_sub == pytest.approx(at_pub, abs=1e-4)


def test_sender_report_follows_a_switch():
    _, source, sink, fwd = setup()
    source.on_sender_report(1 << 40, 1000, now=0.0)
    feed(source, video(1, 1000, 1, 1, keyframe=True), 0.0)
    feed(source, video(500, 77777, 1, 1, ssrc=PUB2, keyframe=True), 3.0)
    source.on_sender_report(2 << 40, 70000, now=3.0)
    ntp_out, rtp_out, packets, _ = fwd.sender_report(3.0)
    assert packets == 2 and ntp_out == 2 << 40
    new = sink.views()[-1]
    assert u32(new.timestamp - rtp_out) == 77777 - 70000


def test_receiver_report_gives_rtt_from_our_sender_report():
    _, source, _, fwd = _started()
    source.on_sender_report(5 << 32, 0, now=1.0)
    ntp_out, *_ = fwd.sender_report(1.5)
    lsr = (ntp_out >> 16) & 0xFFFFFFFF
    fwd.on_receiver_report(64, lsr, int(0.05 * 65536), now=1.8)
    assert fwd.fraction_lost == 0.25
    assert fwd.rtt == pytest.approx(0.25, abs=1e-4)
    fwd.on_receiver_report(0, 12345, 0, now=2.0)  # an LSR we never sent
    assert fwd.rtt == pytest.approx(0.25, abs=1e-4) and fwd.fraction_lost == 0.0


# ------------------------------------------------------------------ pause / close / errors


def test_paused_forwarder_sends_nothing_and_resumes_on_a_keyframe_without_gap():
    owner, source, sink, fwd = setup()
    feed(source, video(1, 0, 1, 1, keyframe=True), 0.0)
    feed(source, video(2, 3000, 2, 2), 0.03)
    last = sink.views()[-1]
    fwd.set_target(None, 0.03)
    assert sink.layers == [(source, source), (None, None)]  # started, paused
    assert fwd not in source.forwarders  # a paused forwarder costs nothing
    for i in range(3, 40):
        feed(source, video(i, 3000 * i, i, i, keyframe=i == 20), i * 0.03)
    feed(source, rtp(40, 0, ssrc=PUB, payload=b"", padding=8), 1.2)
    assert len(sink.packets) == 2 and fwd.packets_sent == 2
    requests = len(owner.keyframe_requests)
    fwd.set_target(source, 1.2)
    assert len(owner.keyframe_requests) == requests + 1  # resuming asks for a keyframe
    feed(source, video(41, 3000 * 41, 41, 41), 1.23)
    assert len(sink.packets) == 2  # resuming mid-GOP would not decode: wait for a keyframe
    feed(source, video(42, 3000 * 42, 42, 42, keyframe=True), 1.26)
    feed(source, video(43, 3000 * 43, 43, 43), 1.29)
    out = sink.views()
    assert len(out) == 4
    assert out[2].seq == u16(last.seq + 1) and out[3].seq == u16(last.seq + 2)
    assert out[2].timestamp == u32(last.timestamp + round((1.26 - 0.03) * 90000))


def test_paused_audio_resumes_without_gap():
    _, source, sink, fwd = setup(kind="audio", extensions={})
    feed(source, rtp(1, 0, ssrc=PUB, pt=111), 0.0)
    fwd.set_target(None, 0.01)
    for i in range(2, 10):
        feed(source, rtp(i, 960 * i, ssrc=PUB, pt=111), i * 0.02)
    fwd.set_target(source, 0.19)
    feed(source, rtp(10, 9600, ssrc=PUB, pt=111), 0.2)
    out = sink.views()
    assert len(out) == 2 and out[1].seq == u16(out[0].seq + 1)


def test_closed_or_unconfigured_forwarder_sends_nothing():
    owner = RecordingOwner()
    source = video_source(owner)
    sink = RecordingSink()
    fwd = Forwarder([source], sink, "x")
    fwd.start(0.0)
    feed(source, video(1, 0, 1, 1, keyframe=True), 0.0)
    assert sink.packets == []  # not configured
    fwd.configure(egress())
    feed(source, video(2, 0, 1, 1, keyframe=True), 0.1)
    assert len(sink.packets) == 1
    fwd.close()
    assert fwd.closed and fwd not in source.forwarders
    fwd.forward(source, RtpView(video(3, 0, 1, 1, keyframe=True)), None, 0.2)
    assert len(sink.packets) == 1
    assert fwd.on_nack([RtpView(sink.packets[0]).seq], 0.3)[0] == 0
    fwd.close()  # idempotent


def test_send_failure_is_counted_and_not_recorded_as_sent():
    _, source, sink, fwd = setup(kind="audio", extensions={})
    sink.accept = False
    feed(source, rtp(1, 0, ssrc=PUB, pt=111), 0.0)
    assert fwd.send_failures == 1 and fwd.packets_sent == 0
    assert fwd.sender_report(0.1) is None
    sink.accept = True
    feed(source, rtp(2, 960, ssrc=PUB, pt=111), 0.02)
    (v,) = sink.views()
    assert v.seq == u16(RtpView(sink.refused[0]).seq + 1)  # the failed one is a loss


def test_keyframe_request_from_subscriber_goes_to_the_source():
    owner, source, _, fwd = _started()
    before = len(owner.keyframe_requests)
    fwd.on_keyframe_request(10.0)
    fwd.on_keyframe_request(10.1)  # throttled by the source
    assert fwd.keyframes_requested == 2
    assert len(owner.keyframe_requests) == before + 1


def test_two_subscribers_are_independent():
    owner = RecordingOwner()
    source = video_source(owner)
    sinks = [RecordingSink(), RecordingSink()]
    fwds = [Forwarder([source], s, f"sub{i}") for i, s in enumerate(sinks)]
    fwds[0].configure(egress())
    fwds[1].configure(egress(rtx=False, pt=120, mid="9"))
    fwds[0].start(0.0)
    feed(source, video(1, 0, 1, 1, keyframe=True), 0.0)
    fwds[1].start(0.05)
    feed(source, video(2, 3000, 2, 2), 0.1)
    feed(source, video(3, 6000, 3, 3, keyframe=True), 0.6)
    # the second starts on the cached keyframe (Source.recent_keyframe), then goes on live
    assert len(sinks[0].packets) == 3 and len(sinks[1].packets) == 3
    a, b = sinks[0].views()[-1], sinks[1].views()[-1]
    assert b.payload_type == 120 and b.extensions()[OUT_MID] == b"9"
    assert frame_body(a) == frame_body(b)


def test_long_running_stream_keeps_flowing_and_answering_nacks():
    # Regression: 32768 packets after the forwarder started, every packet looked older
    # than the switch point (nothing forwarded) and NACKs were no longer mapped.
    _, source, sink, fwd = setup(kind="audio", extensions={}, rtx=False)
    n = 40_000
    for i in range(n):
        source.on_rtp(RtpView(rtp(60000 + i, 960 * i, ssrc=PUB, pt=111, payload=b"%d" % i)), i / 50)
    assert fwd.packets_sent == n and fwd.send_failures == 0
    first, last = RtpView(sink.packets[0]), RtpView(sink.packets[-1])
    assert last.seq == u16(first.seq + n - 1)
    sink.clear()
    assert fwd.on_nack([u16(last.seq - 5)], n / 50)[0] == 1
    assert sink.views()[0].payload() == b"%d" % (n - 6)


def test_redundant_forwarder_sends_each_packet_twice():
    _, source, sink, fwd = setup(kind="audio", extensions={})
    feed(source, rtp(1, 0, ssrc=PUB, pt=111), 0.0)
    fwd.redundant = True
    feed(source, rtp(2, 960, ssrc=PUB, pt=111), 0.02)
    fwd.redundant = False
    feed(source, rtp(3, 1920, ssrc=PUB, pt=111), 0.04)
    seqs = [v.seq for v in sink.views()]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 1, seqs[0] + 2]
    assert fwd.packets_sent == 3


def test_nack_retransmissions_stop_at_the_byte_budget():
    _, _, sink, fwd = _started(rtx=False, extensions={MID_URI: 4})
    sent = list(sink.packets)
    sink.clear()
    seqs = [RtpView(p).seq for p in sent]
    count, spent = fwd.on_nack(seqs[:4], 2.0, max_bytes=len(sent[0]) + 1)
    # the budget is checked before each packet: the second one still goes
    assert count == 2 and spent == len(sent[0]) + len(sent[1])
    assert fwd.on_nack(seqs[:4], 2.0, max_bytes=0) == (0, 0)
    assert fwd.on_nack(seqs[:4], 2.0)[0] == 4
