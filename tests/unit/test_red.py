"""Opus RED (RFC 2198): parsing, stripping and payload-type rewriting of real RED
payload bytes (sfu/rtp/red.py), and a Forwarder fed by a real Source passing RED to a
subscriber that negotiated it and plain Opus to one that did not."""

from __future__ import annotations

import random

import pytest

from sfu.forwarder import AUDIO_LEVEL_URI, MID_URI, EgressParams, Forwarder
from sfu.rtp.packet import RtpError, RtpView
from sfu.rtp.red import MAX_BLOCKS, build_red, check_red, parse_red, red_payload
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp

PUB, OUT = 0x0A0A0A0A, 0xE0E0E0E0
IN_OPUS, IN_RED = 111, 63  # Chromium's
OUT_OPUS, OUT_RED = 96, 63  # aiortc's Opus on the subscribe leg, RED as Parley offers it
IN_LEVEL, OUT_MID, OUT_LEVEL = 1, 3, 2

#: A RED payload laid out by hand from RFC 2198 section 3: one redundant block (F=1,
#: PT 111, timestamp offset 960 = one 20 ms Opus frame, length 5) and the primary (F=0,
#: PT 111), then the redundant data (5 bytes), then the primary data (7 bytes).
REDUNDANT_DATA = b"\x78\x01\x02\x03\x04"
PRIMARY_DATA = b"\x78\xaa\xbb\xcc\xdd\xee\xff"
RED_BYTES = (
    bytes((0x80 | 111,))
    + ((960 << 10) | 5).to_bytes(3, "big")
    + bytes((111,))
    + REDUNDANT_DATA
    + PRIMARY_DATA
)


def test_a_red_payload_is_parsed_into_its_blocks_primary_last():
    assert RED_BYTES[:5] == bytes.fromhex("ef0f0005") + b"\x6f"
    blocks = parse_red(RED_BYTES)
    assert [(b.payload_type, b.ts_offset) for b in blocks] == [(111, 960), (111, 0)]
    assert RED_BYTES[blocks[0].start : blocks[0].end] == REDUNDANT_DATA
    assert RED_BYTES[blocks[1].start : blocks[1].end] == PRIMARY_DATA
    assert build_red(PRIMARY_DATA, [(960, REDUNDANT_DATA)], 111) == RED_BYTES
    # a RED packet with no redundancy (libwebrtc's first packet): the primary alone
    assert parse_red(b"\x6fabc") == [(111, 0, 1, 4)]


def test_stripping_gives_the_primary_as_plain_opus_of_the_subscribers_type():
    assert red_payload(RED_BYTES, None, OUT_OPUS) == (OUT_OPUS, PRIMARY_DATA)


def test_passing_on_rewrites_every_block_payload_type():
    pt, out = red_payload(RED_BYTES, OUT_RED, OUT_OPUS)
    assert pt == OUT_RED
    assert out[0] == 0x80 | OUT_OPUS and out[4] == OUT_OPUS  # F bits kept
    assert out[1:4] == RED_BYTES[1:4] and out[5:] == RED_BYTES[5:]  # offsets, lengths, data
    assert [(b.payload_type, b.ts_offset) for b in parse_red(out)] == [(96, 960), (96, 0)]
    # same Opus type on both legs: the payload is passed on as it came
    assert red_payload(RED_BYTES, 100, IN_OPUS) == (100, RED_BYTES)
    # two redundant blocks (distance 2)
    two = build_red(b"P" * 3, [(1920, b"A" * 4), (960, b"B" * 2)], 111)
    pt, out = red_payload(two, OUT_RED, OUT_OPUS)
    assert out == build_red(b"P" * 3, [(1920, b"A" * 4), (960, b"B" * 2)], OUT_OPUS)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "ends inside"),
        (bytes((0x80 | 111, 0x0F)), "truncated"),  # a redundant header cut short
        (bytes((0x80 | 111,)) + ((960 << 10) | 5).to_bytes(3, "big"), "ends inside"),
        (RED_BYTES[:8], "past the payload"),  # the redundant block's length overruns
        (bytes((0x80 | 111, 0, 0, 0)) * MAX_BLOCKS + b"\x6fx", "more than"),
        (build_red(b"\x01", [], 0), "not Opus"),  # a PCMU block
        (build_red(b"\x01", [(960, b"\x02")], 13), "not Opus"),  # comfort noise
        (build_red(b"", [(960, b"\x02")], 111), "empty primary"),
    ],
)
def test_malformed_red_is_refused_with_a_reason(payload: bytes, reason: str):
    with pytest.raises(RtpError, match=reason):
        check_red(payload, IN_OPUS)


def test_random_bytes_never_raise_anything_but_rtp_error():
    rng = random.Random(2198)
    for _ in range(3000):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 24)))
        try:
            check_red(payload, rng.choice((IN_OPUS, payload[0] & 0x7F if payload else 0)))
        except RtpError:
            continue
        # what the check accepts, both ways of sending work on
        pt, primary = red_payload(payload, None, OUT_OPUS)
        assert pt == OUT_OPUS and primary
        assert red_payload(payload, OUT_RED, OUT_OPUS)[0] == OUT_RED


# ------------------------------------------------------------------ forwarding


def red_source(owner: RecordingOwner, red: int | None = IN_RED) -> Source:
    params = SourceParams(
        track_id="mic",
        kind="audio",
        codec="opus",
        clock_rate=48000,
        payload_type=IN_OPUS,
        ssrc=PUB,
        audio_level_ext=IN_LEVEL,
        mid="0",
        red_payload_type=red,
    )
    return Source(params, owner)


def subscriber(source: Source, red: int | None) -> tuple[RecordingSink, Forwarder]:
    sink = RecordingSink()
    fwd = Forwarder([source], sink, "sub")
    fwd.configure(
        EgressParams(
            mid="4",
            payload_type=OUT_OPUS,
            ssrc=OUT,
            rtx_payload_type=None,
            rtx_ssrc=None,
            extensions={MID_URI: OUT_MID, AUDIO_LEVEL_URI: OUT_LEVEL},
            red_payload_type=red,
        )
    )
    fwd.start(0.0)
    return sink, fwd


def red_packet(seq: int, ts: int, payload: bytes = RED_BYTES, pt: int = IN_RED) -> bytes:
    return rtp(seq, ts, ssrc=PUB, pt=pt, payload=payload, extensions=[(IN_LEVEL, b"\x1e")])


def views(sink: RecordingSink) -> list[RtpView]:
    return [RtpView(p) for p in sink.packets]


def test_red_goes_to_red_subscribers_and_plain_opus_to_the_others():
    owner = RecordingOwner()
    source = red_source(owner)
    red_sink, _ = subscriber(source, OUT_RED)
    plain_sink, _ = subscriber(source, None)
    for i in range(5):
        source.on_rtp(RtpView(red_packet(1000 + i, 48000 + 960 * i)), 0.02 * i)
    # a plain Opus packet (a publisher that stops using RED) passes as Opus to both
    source.on_rtp(RtpView(red_packet(1005, 48000 + 960 * 5, payload=b"op", pt=IN_OPUS)), 0.1)
    red_out, plain_out = views(red_sink), views(plain_sink)
    assert [p.payload_type for p in red_out] == [OUT_RED] * 5 + [OUT_OPUS]
    assert [p.payload_type for p in plain_out] == [OUT_OPUS] * 6
    for view in red_out[:5]:
        body = view.data[view.payload_start : view.payload_end]
        assert body == red_payload(RED_BYTES, OUT_RED, OUT_OPUS)[1]
    for view in plain_out[:5]:
        assert view.data[view.payload_start : view.payload_end] == PRIMARY_DATA
    # headers: one continuous stream each, the subscriber's SSRC, the audio level kept
    for out in (red_out, plain_out):
        assert [(p.seq - out[0].seq) & 0xFFFF for p in out] == list(range(6))
        assert [(p.timestamp - out[0].timestamp) & 0xFFFFFFFF for p in out] == [
            960 * i for i in range(6)
        ]
        assert {p.ssrc for p in out} == {OUT}
        assert {p.extension(OUT_LEVEL) for p in out} == {b"\x1e"}


def test_malformed_red_is_dropped_and_counted_and_nothing_else_breaks():
    owner = RecordingOwner()
    source = red_source(owner)
    red_sink, _ = subscriber(source, OUT_RED)
    plain_sink, _ = subscriber(source, None)
    source.on_rtp(RtpView(red_packet(1, 960)), 0.0)
    source.on_rtp(RtpView(red_packet(2, 1920, payload=RED_BYTES[:8])), 0.02)
    source.on_rtp(RtpView(red_packet(3, 2880, payload=build_red(b"x", [], 0))), 0.04)
    source.on_rtp(RtpView(red_packet(4, 3840)), 0.06)
    assert source.malformed == 2
    assert len(red_sink.packets) == len(plain_sink.packets) == 2
    # a source whose publisher did not negotiate RED drops RED packets as unknown
    other = red_source(RecordingOwner(), red=None)
    sink, _ = subscriber(other, None)
    other.on_rtp(RtpView(red_packet(1, 960)), 0.0)
    assert sink.packets == [] and other.dropped == 1 and other.malformed == 0


def test_a_redundant_forwarder_sends_red_once_and_stripped_opus_twice():
    owner = RecordingOwner()
    source = red_source(owner)
    red_sink, red_fwd = subscriber(source, OUT_RED)
    plain_sink, plain_fwd = subscriber(source, None)
    red_fwd.redundant = plain_fwd.redundant = True
    for i in range(3):
        source.on_rtp(RtpView(red_packet(10 + i, 960 * i)), 0.02 * i)
    assert len(red_sink.packets) == 3  # RED carries its own repair
    assert len(plain_sink.packets) == 6  # each stripped packet twice


def test_dtx_gaps_keep_both_streams_continuous_and_the_track_active():
    """Opus DTX: in silence a packet every 400 ms (sequence numbers contiguous, the
    timestamp jumping by 19200), then talk again. The output must keep the same
    sequence and timestamp steps (no rewrite resets), and the track counts as active."""
    owner = RecordingOwner()
    source = red_source(owner)
    red_sink, red_fwd = subscriber(source, OUT_RED)
    plain_sink, _ = subscriber(source, None)
    seq, ts, now = 5000, 0, 0.0
    steps = [960] * 5 + [19200] * 8 + [960] * 5  # talk, 3.2 s of DTX, talk
    sent_ts = []
    for step in steps:
        seq, ts, now = seq + 1, ts + step, now + step / 48000
        source.on_rtp(RtpView(red_packet(seq, ts)), now)
        sent_ts.append(ts)
        assert source.active(now, 1.5)  # 400 ms apart never looks like a stopped stream
    for sink in (red_sink, plain_sink):
        out = views(sink)
        assert len(out) == len(steps)
        assert [(p.seq - out[0].seq) & 0xFFFF for p in out] == list(range(len(steps)))
        assert [(p.timestamp - out[0].timestamp) & 0xFFFFFFFF for p in out] == [
            t - sent_ts[0] for t in sent_ts
        ]
    assert red_fwd.packets_sent == len(steps)


def test_the_native_path_leaves_red_to_python_over_a_real_srtp_wire():
    """With the C loop serving steady forwarders (sfu/_native.c), a forwarder of a RED
    source must still strip: what arrives over real SRTP and UDP is plain Opus."""
    from sfu import native
    from sfu.pacer import Pacer
    from tests.unit.test_native import EgressSink, Wire

    source = red_source(RecordingOwner())
    wire = Wire()
    try:
        pacer = Pacer()
        fwd = Forwarder([source], EgressSink(wire.egress, pacer), "sub")
        fwd.configure(
            EgressParams("4", OUT_OPUS, OUT, None, None, {MID_URI: OUT_MID, AUDIO_LEVEL_URI: 2})
        )
        fwd.egress, fwd.pacer = wire.egress, pacer
        fwd.start(0.0)
        for i in range(20):
            source.on_rtp(RtpView(red_packet(300 + i, 960 * i)), 0.02 * i)
        got = [RtpView(p) for p in wire.received()]
        assert len(got) == 20 and fwd.native_packets == 0
        assert {p.payload_type for p in got} == {OUT_OPUS}
        assert {p.data[p.payload_start : p.payload_end] for p in got} == {PRIMARY_DATA}
        # a plain Opus source's forwarder is still served natively
        plain = red_source(RecordingOwner(), red=None)
        fwd2 = Forwarder([plain], EgressSink(wire.egress, pacer), "sub2")
        fwd2.configure(EgressParams("5", OUT_OPUS, OUT + 1, None, None, {MID_URI: OUT_MID}))
        fwd2.egress, fwd2.pacer = wire.egress, pacer
        fwd2.start(0.0)
        for i in range(5):
            plain.on_rtp(RtpView(red_packet(i, 960 * i, payload=b"op", pt=IN_OPUS)), 0.02 * i)
        assert fwd2.native_packets == (4 if native.NATIVE else 0)
        fwd.close()
        fwd2.close()
    finally:
        wire.close()


def opus_packet(seq: int, ts: int, payload: bytes) -> bytes:
    return red_packet(seq, ts, payload=payload, pt=IN_OPUS)


def test_a_lossy_red_subscriber_of_plain_opus_gets_red_with_the_two_previous_frames():
    """Random loss (``set_redundant``): plain Opus to a subscriber that negotiated RED
    goes out once, as RED carrying the previous two packets' payloads 960 and 1920
    samples back, so a frame is lost only when three packets in a row are; the others
    get each packet twice; without loss, plain Opus once again."""
    source = red_source(RecordingOwner(), red=None)
    red_sink, red_fwd = subscriber(source, OUT_RED)
    plain_sink, plain_fwd = subscriber(source, None)
    red_fwd.set_redundant(True)
    plain_fwd.set_redundant(True)
    frames = [bytes((0x78, i)) * (3 + i) for i in range(4)]
    for i, frame in enumerate(frames):
        source.on_rtp(RtpView(opus_packet(500 + i, 48000 + 960 * i, frame)), 0.02 * i)
    out = views(red_sink)
    assert len(out) == 4 and {p.payload_type for p in out} == {OUT_RED}
    assert len(plain_sink.packets) == 8  # each plain packet twice
    for i, view in enumerate(out):
        payload = view.data[view.payload_start : view.payload_end]
        blocks = parse_red(payload)
        assert [b.payload_type for b in blocks] == [OUT_OPUS] * len(blocks)
        assert [payload[b.start : b.end] for b in blocks] == frames[max(0, i - 2) : i + 1]
        assert [b.ts_offset for b in blocks] == [960 * k for k in range(min(i, 2), -1, -1)]
        check_red(payload, OUT_OPUS)
    # the stream stays continuous (sequence numbers, timestamps) across the change
    red_fwd.set_redundant(False)
    source.on_rtp(RtpView(opus_packet(504, 48000 + 960 * 4, b"\x78end")), 0.08)
    last = views(red_sink)[-1]
    assert last.payload_type == OUT_OPUS and last.data[last.payload_start :] == b"\x78end"
    assert (last.seq - out[0].seq) & 0xFFFF == 4
    assert (last.timestamp - out[0].timestamp) & 0xFFFFFFFF == 960 * 4


def test_red_made_from_opus_leaves_out_blocks_across_a_dtx_gap():
    """A redundant block's timestamp offset has 14 bits: the packet before a DTX gap of
    19200 samples is not carried, nor one too long for RED's 10-bit length."""
    source = red_source(RecordingOwner(), red=None)
    sink, fwd = subscriber(source, OUT_RED)
    fwd.set_redundant(True)
    source.on_rtp(RtpView(opus_packet(1, 960, b"\x78" * 1100)), 0.0)  # too long to carry
    source.on_rtp(RtpView(opus_packet(2, 1920, b"\x78a")), 0.02)
    source.on_rtp(RtpView(opus_packet(3, 1920 + 19200, b"\x78b")), 0.42)  # after DTX
    source.on_rtp(RtpView(opus_packet(4, 1920 + 19200 + 960, b"\x78c")), 0.44)
    bodies = [v.data[v.payload_start : v.payload_end] for v in views(sink)]
    carried = [[body[b.start : b.end] for b in parse_red(body)] for body in bodies]
    assert carried == [[b"\x78" * 1100], [b"\x78a"], [b"\x78b"], [b"\x78b", b"\x78c"]]


def test_made_red_takes_the_python_path_and_arrives_over_a_real_srtp_wire():
    """The C loop writes no RED: while a forwarder makes RED it leaves the packets to
    Python (what arrives over real SRTP is RED), and takes them back after."""
    from sfu import native
    from sfu.pacer import Pacer
    from tests.unit.test_native import EgressSink, Wire

    source = red_source(RecordingOwner(), red=None)
    wire = Wire()
    try:
        pacer = Pacer()
        fwd = Forwarder([source], EgressSink(wire.egress, pacer), "sub")
        fwd.configure(
            EgressParams(
                "4", OUT_OPUS, OUT, None, None, {MID_URI: OUT_MID}, red_payload_type=OUT_RED
            )
        )
        fwd.egress, fwd.pacer = wire.egress, pacer
        fwd.start(0.0)
        fwd.set_redundant(True)
        for i in range(10):
            source.on_rtp(RtpView(opus_packet(i, 960 * i, b"\x78op")), 0.02 * i)
        got = [RtpView(p) for p in wire.received()]
        assert len(got) == 10 and fwd.native_packets == 0
        assert {p.payload_type for p in got} == {OUT_RED}
        fwd.set_redundant(False)
        for i in range(10, 15):
            source.on_rtp(RtpView(opus_packet(i, 960 * i, b"\x78op")), 0.02 * i)
        assert fwd.native_packets == (5 if native.NATIVE else 0)
        fwd.close()
    finally:
        wire.close()
