"""A subscriber joining starts on the cached newest keyframe (sfu.source.Source.recent_keyframe,
sfu.forwarder.Forwarder.start) instead of waiting for the one it would ask for."""

from __future__ import annotations

from sfu.forwarder import EgressParams, Forwarder
from sfu.rtp.extensions import MID_URI
from sfu.rtp.packet import RtpView, Vp8Descriptor
from sfu.source import REPLAY_AGE, REPLAY_PACKETS, Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp, vp8_payload

SSRC = 0x12345678


def make_source() -> tuple[RecordingOwner, Source]:
    owner = RecordingOwner()
    params = SourceParams("cam", "video", "vp8", 90000, 96, SSRC, 97, 0x87654321, mid="0")
    return owner, Source(params, owner, cache_size=1024)


def feed(source: Source, seq: int, now: float, keyframe: bool = False) -> None:
    payload = vp8_payload(keyframe=keyframe, picture_id=seq & 0x7FFF, tl0picidx=seq & 0xFF)
    source.on_rtp(RtpView(rtp(seq, 3000 * seq, ssrc=SSRC, pt=96, payload=payload)), now)


def start_forwarder(source: Source, now: float) -> RecordingSink:
    sink = RecordingSink()
    forwarder = Forwarder([source], sink, "sub")
    forwarder.configure(EgressParams("m", 100, 0xE1, 101, 0xE2, {MID_URI: 1}))
    forwarder.start(now)
    return sink


def test_a_starting_forwarder_is_sent_the_recent_keyframe_and_what_followed() -> None:
    owner, source = make_source()
    feed(source, 1, 0.00)  # a delta frame before the keyframe: not sent
    feed(source, 2, 0.01, keyframe=True)
    feed(source, 3, 0.02)
    feed(source, 4, 0.03)
    sink = start_forwarder(source, 0.05)
    views = sink.views()
    assert len(views) == 3  # the keyframe (seq 2) and the two packets after it
    assert [
        (b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(views, views[1:], strict=False)
    ] == [
        3000,
        3000,
    ]
    assert Vp8Descriptor(views[0].data, views[0].payload_start, views[0].payload_end).keyframe
    assert owner.keyframe_requests == []  # it has its keyframe: nothing asked upstream
    feed(source, 5, 0.06)  # and it goes on live, in sequence
    out = [v.seq for v in sink.views()]
    assert out == list(range(out[0], out[0] + 4))


def test_without_a_usable_keyframe_the_forwarder_asks_for_one() -> None:
    # none yet
    owner, source = make_source()
    feed(source, 1, 0.0)
    sink = start_forwarder(source, 0.1)
    assert sink.packets == [] and owner.keyframe_requests == [source]
    # too old
    owner, source = make_source()
    feed(source, 1, 0.0, keyframe=True)
    feed(source, 2, REPLAY_AGE)
    sink = start_forwarder(source, REPLAY_AGE + 0.01)
    assert sink.packets == [] and owner.keyframe_requests == [source]
    # followed by too many packets
    owner, source = make_source()
    feed(source, 1, 0.0, keyframe=True)
    for seq in range(2, REPLAY_PACKETS + 2):
        feed(source, seq, 0.001)
    sink = start_forwarder(source, 0.01)
    assert sink.packets == [] and owner.keyframe_requests == [source]
    # with a packet missing since (it would be decoded broken)
    owner, source = make_source()
    feed(source, 1, 0.0, keyframe=True)
    feed(source, 3, 0.01)
    sink = start_forwarder(source, 0.02)
    assert sink.packets == [] and owner.keyframe_requests == [source]


def test_the_sequence_wraps_around_within_a_replay() -> None:
    owner, source = make_source()
    feed(source, 0xFFFE, 0.0, keyframe=True)
    feed(source, 0xFFFF, 0.01)
    feed(source, 0, 0.02)
    assert len(source.recent_keyframe(0.03)) == 3
    sink = start_forwarder(source, 0.03)
    assert len(sink.packets) == 3 and owner.keyframe_requests == []
