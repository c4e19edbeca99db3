"""sfu.source.Source: ingress checks, RTX unwrapping, padding, keyframe requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu.forwarder import EgressParams, Forwarder
from sfu.rtp.extensions import MID_URI
from sfu.rtp.packet import RtpView, Vp8Descriptor
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, load_capture, rtp, vp8_payload

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PUBLISH_CAPTURE = FIXTURES / "chromium_publish_rtp.jsonl"

SSRC, RTX_SSRC = 0x12345678, 0x87654321


def make_source(kind="video", ssrc=SSRC, keyframe_interval=0.5, cache_size=64):
    owner = RecordingOwner()
    if kind == "video":
        params = SourceParams("cam", "video", "vp8", 90000, 96, ssrc, 97, RTX_SSRC, mid="0")
    else:
        params = SourceParams("mic", "audio", "opus", 48000, 111, ssrc, audio_level_ext=12)
    source = Source(params, owner, cache_size=cache_size, keyframe_interval=keyframe_interval)
    return owner, source


def attach(source, kind="video"):
    sink = RecordingSink()
    fwd = Forwarder([source], sink, "sub")
    pt = 100 if kind == "video" else 109
    fwd.configure(EgressParams("m", pt, 0xE1, 101, 0xE2, {MID_URI: 1}))
    fwd.start(0.0)
    return sink, fwd


def vp8(seq, keyframe=False, ts=None, ssrc=SSRC, body=b"x", pid=None):
    pid = seq & 0x7FFF if pid is None else pid
    payload = vp8_payload(keyframe=keyframe, picture_id=pid, tl0picidx=seq & 0xFF, body=body)
    return rtp(seq, 3000 * seq if ts is None else ts, ssrc=ssrc, pt=96, payload=payload)


def rtx_of(data: bytes, rtx_seq: int, ssrc=RTX_SSRC, pt=97, padding=0) -> bytes:
    """RFC 4588 RTX packet carrying ``data`` (same timestamp and marker, OSN first)."""
    v = RtpView(data)
    return rtp(
        rtx_seq,
        v.timestamp,
        ssrc=ssrc,
        pt=pt,
        marker=v.marker,
        payload=v.seq.to_bytes(2, "big") + v.payload(),
        extensions=list(v.extensions().items()),
        padding=padding,
    )


def feed(source, data, now):
    source.on_rtp(RtpView(data), now)


# ------------------------------------------------------------------ ingress


def test_wrong_payload_type_is_dropped():
    owner, source = make_source()
    sink, _ = attach(source)
    feed(source, rtp(1, 0, ssrc=SSRC, pt=97, payload=vp8_payload(keyframe=True)), 0.0)
    feed(source, rtp(2, 0, ssrc=SSRC, pt=100, payload=vp8_payload(keyframe=True)), 0.0)
    assert source.dropped == 2 and source.packets == 0 and source.bytes == 0
    assert source.cache.get(1) is None and source.cache.newest is None
    assert sink.packets == [] and source.last_packet_time is None
    feed(source, vp8(3, keyframe=True), 0.1)
    assert source.packets == 1 and len(sink.packets) == 1
    assert source.nack.missing == []  # the dropped ones did not count as received


def test_media_packet_is_cached_counted_and_forwarded():
    _, source = make_source()
    sink, _ = attach(source)
    data = vp8(10, keyframe=True)
    feed(source, data, 1.5)
    assert source.packets == 1 and source.bytes == len(data) and source.last_packet_time == 1.5
    stored, (view, desc) = source.cache.get(10)
    assert stored == data and view.seq == 10 and desc.keyframe
    assert source.last_keyframe_time == 1.5 and (source.width, source.height) == (640, 360)
    assert len(sink.packets) == 1


def test_bad_vp8_descriptor_is_dropped():
    _, source = make_source()
    sink, _ = attach(source)
    feed(source, rtp(1, 0, ssrc=SSRC, pt=96, payload=b"\x90\x80"), 0.0)  # truncated
    assert source.dropped == 1 and sink.packets == [] and source.cache.get(1) is None


def test_gap_reports_missing_to_the_owner():
    owner, source = make_source()
    feed(source, vp8(1, keyframe=True), 0.0)
    feed(source, vp8(2), 0.01)
    assert owner.missing_calls == []
    feed(source, vp8(5), 0.02)
    assert source.nack.missing == [3, 4]
    assert owner.missing_calls == [source]


def test_sender_report_is_kept():
    _, source = make_source()
    source.on_sender_report(123 << 32, 456, 7.5)
    assert source.sender_report == (123 << 32, 456, 7.5)


# ------------------------------------------------------------------ RTX


def test_rtx_accepted_only_for_a_missing_osn():
    owner, source = make_source()
    sink, _ = attach(source)
    packets = {s: vp8(s, keyframe=s == 1, body=b"body%d" % s) for s in range(1, 6)}
    for s in (1, 2, 4, 5):
        feed(source, packets[s], s * 0.01)
    assert source.nack.missing == [3]
    sent = len(sink.packets)
    # a copy of a packet we have (bandwidth probing "payload padding"): ignored
    source.on_rtx(RtpView(rtx_of(packets[2], 900)), 0.1)
    assert len(sink.packets) == sent and source.packets == 4
    # the repair we asked for
    source.on_rtx(RtpView(rtx_of(packets[3], 901)), 0.11)
    assert len(sink.packets) == sent + 1 and source.nack.missing == []
    stored, (view, _) = source.cache.get(3)
    assert stored == packets[3]  # the original packet exactly (seq, ssrc, pt, ts, exts)
    assert (view.seq, view.ssrc, view.payload_type) == (3, SSRC, 96)
    # the same repair again: no longer missing, ignored
    source.on_rtx(RtpView(rtx_of(packets[3], 902)), 0.12)
    assert len(sink.packets) == sent + 1 and source.packets == 5


def test_rtx_with_padding_and_marker_unwraps_to_the_original():
    _, source = make_source()
    feed(source, vp8(1, keyframe=True), 0.0)
    original = rtp(
        3,
        9000,
        ssrc=SSRC,
        pt=96,
        marker=1,
        payload=vp8_payload(picture_id=3, body=b"three"),
        extensions=[(9, b"0"), (2, b"abc")],
    )
    feed(source, vp8(4), 0.02)
    assert source.nack.missing == [2, 3]
    source.on_rtx(RtpView(rtx_of(original, 77, padding=20)), 0.03)
    stored, (view, desc) = source.cache.get(3)
    assert stored == original
    assert view.marker == 1 and view.padding == 0 and desc.picture_id == 3
    assert source.nack.missing == [2]


def test_rtx_padding_probe_and_unknown_ssrc_are_ignored():
    _, source = make_source()
    sink, _ = attach(source)
    feed(source, vp8(1, keyframe=True), 0.0)
    feed(source, vp8(3), 0.0)
    probe = rtp(50, 0, ssrc=RTX_SSRC, pt=97, payload=b"", padding=255)
    source.on_rtx(RtpView(probe), 0.01)
    one_byte = rtp(51, 0, ssrc=RTX_SSRC, pt=97, payload=b"\x00")
    source.on_rtx(RtpView(one_byte), 0.01)
    assert source.nack.missing == [2] and len(sink.packets) == 2
    # an unbound source (no SSRC yet) cannot rebuild packets
    params = SourceParams("cam", "video", "vp8", 90000, 96, None, 97, RTX_SSRC)
    unbound = Source(params, RecordingOwner())
    unbound.on_rtx(RtpView(rtx_of(vp8(2), 52)), 0.0)
    assert unbound.packets == 0


@pytest.fixture(scope="module")
def capture():
    assert PUBLISH_CAPTURE.exists(), f"fixture missing: {PUBLISH_CAPTURE}"
    return load_capture(PUBLISH_CAPTURE)


@pytest.mark.parametrize("rid", ["q", "h", "f"])
def test_capture_rtx_only_the_nacked_repair_is_accepted(capture, rid):
    header, records = capture
    layer = header["rids"][rid]
    answer = next(a for a in header["nack_retransmissions_in_file"] if a["rid"] == rid)
    params = SourceParams(rid, "video", "vp8", 90000, 96, layer["ssrc"], 97, layer["rtx_ssrc"])
    owner = RecordingOwner()
    source = Source(params, owner, cache_size=1024)
    sink = RecordingSink()
    fwd = Forwarder([source], sink, "sub")
    fwd.configure(EgressParams("0", 96, 0xABC, 97, 0xABD, {}))
    fwd.start(0.0)
    nacked = answer["seq"]
    original = None
    rtx_seen = rtx_accepted = 0
    for r in records:
        if r["kind"] != "rtp":
            continue
        v = RtpView(r["data"])
        now = r["t_ms"] / 1000
        if v.ssrc == layer["ssrc"]:
            if v.seq == nacked:
                original = v  # pretend it was lost
                continue
            source.on_rtp(v, now)
        elif v.ssrc == layer["rtx_ssrc"]:
            rtx_seen += 1
            before = source.packets
            source.on_rtx(v, now)
            rtx_accepted += source.packets - before
    assert rtx_seen == layer["rtx_packets_in_file"]
    assert rtx_accepted == 1  # probes and unsolicited copies are never forwarded
    assert source.nack.missing == []
    assert original is not None
    _, (repaired, _) = source.cache.get(nacked)
    assert repaired.payload() == original.payload()
    assert (repaired.ssrc, repaired.payload_type, repaired.timestamp, repaired.marker) == (
        original.ssrc,
        96,
        original.timestamp,
        original.marker,
    )
    assert source.packets == layer["packets_in_file"]
    keyframes = layer["keyframes_in_file"]
    assert (source.width, source.height) == tuple(map(int, keyframes[0]["size"].split("x")))
    # forwarded output: started on the first keyframe, consecutive from there
    out = sink.views()
    assert out and Vp8Descriptor(out[0].data, out[0].payload_start, out[0].payload_end).keyframe
    assert (out[0].timestamp - fwd.rewriter.ts_offset) & 0xFFFFFFFF == keyframes[0]["rtp_ts"]


# ------------------------------------------------------------------ padding


def test_padding_only_packets_are_not_forwarded_but_keep_continuity():
    _, source = make_source()
    sink, _ = attach(source)
    feed(source, vp8(100, keyframe=True), 0.0)
    for s in range(101, 105):
        feed(source, rtp(s, 0, ssrc=SSRC, pt=96, payload=b"", padding=255), 0.01)
    feed(source, vp8(105), 0.02)
    out = sink.views()
    assert len(out) == 2 and (out[1].seq - out[0].seq) & 0xFFFF == 1
    assert source.packets == 6 and source.nack.missing == []  # padding counts as received
    assert source.cache.get(102) is None  # and is not cached


def test_padding_with_wrong_payload_type_is_dropped():
    _, source = make_source()
    feed(source, rtp(1, 0, ssrc=SSRC, pt=50, payload=b"", padding=10), 0.0)
    assert source.dropped == 1 and source.packets == 0


# ------------------------------------------------------------------ keyframe requests


def test_keyframe_requests_are_throttled_and_deferred():
    owner, source = make_source(keyframe_interval=0.5)
    source.request_keyframe(10.0)
    assert len(owner.keyframe_requests) == 1 and not source.keyframe_pending
    source.request_keyframe(10.2)
    source.request_keyframe(10.4)
    assert len(owner.keyframe_requests) == 1 and source.keyframe_pending
    source.poll(10.45)
    assert len(owner.keyframe_requests) == 1 and source.keyframe_pending
    source.poll(10.5)  # the deferred request fires once the interval has passed
    assert len(owner.keyframe_requests) == 2 and not source.keyframe_pending
    source.poll(11.5)
    assert len(owner.keyframe_requests) == 2  # nothing pending: nothing sent
    source.request_keyframe(11.5)
    assert len(owner.keyframe_requests) == 3


def test_keyframe_arrival_cancels_a_deferred_request():
    owner, source = make_source(keyframe_interval=1.0)
    source.request_keyframe(0.0)
    source.request_keyframe(0.1)
    assert source.keyframe_pending
    feed(source, vp8(1, keyframe=True), 0.2)
    assert not source.keyframe_pending and source.last_keyframe_time == 0.2
    source.poll(5.0)
    assert len(owner.keyframe_requests) == 1
    feed(source, vp8(2), 0.3)  # a delta frame changes nothing
    assert source.last_keyframe_time == 0.2


def test_audio_and_closed_sources_never_request_keyframes():
    owner, audio = make_source(kind="audio")
    audio.request_keyframe(0.0)
    attach(audio, kind="audio")
    audio.poll(10.0)
    assert owner.keyframe_requests == []
    owner, video = make_source()
    video.close()
    video.request_keyframe(100.0)
    assert owner.keyframe_requests == []


def test_add_forwarder_requests_a_keyframe():
    owner, source = make_source()
    _, fwd = attach(source)
    assert owner.keyframe_requests == [source]
    assert source.forwarders == (fwd,)


# ------------------------------------------------------------------ lifecycle


def test_close_detaches_forwarders_and_clears_the_cache():
    _, source = make_source()
    sink, fwd = attach(source)
    _, fwd2 = attach(source)
    feed(source, vp8(1, keyframe=True), 0.0)
    assert fwd.current is source and fwd2.current is source
    source.close()
    assert source.closed
    assert fwd.current is None and fwd.target is None and fwd2.current is None
    assert source.forwarders == () and source.cache.get(1) is None
    source.close()  # idempotent


def test_remove_forwarder():
    _, source = make_source()
    sink, fwd = attach(source)
    source.remove_forwarder(fwd)
    source.remove_forwarder(fwd)
    feed(source, vp8(1, keyframe=True), 0.0)
    assert sink.packets == [] and source.forwarders == ()
