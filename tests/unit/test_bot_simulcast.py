"""The bot's simulcast publishing and layer bookkeeping, as pure logic (no network).

Offer munging, RTP/RTX building per layer, RTCP routing (PLI/FIR/NACK), the VP8
encoders' output (decoded with the counter read back), ``layer`` messages counted as
``layer_switches`` and ``set_layer`` requests.
"""

from __future__ import annotations

import json
import random
import re
import struct
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc import sdp as aiortc_sdp
from aiortc.rtp import RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket, pack_remb_fci

from loadgen.bot import Bot, BotConfig, TrackStats
from loadgen.media.simulcast import (
    DEFAULT_LAYERS,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    LayerSpec,
    LayerStream,
    SimulcastExtensions,
    SimulcastSender,
    Vp8LayerEncoder,
    munge_simulcast_offer,
    vp8_is_keyframe,
    vp8_packetize,
)
from loadgen.media.synthetic import read_counter
from sfu.aiortc_adapter import describe_remote_media
from sfu.rtp.packet import RtpView, Vp8Descriptor
from sfu.rtp.rtcp import build_nack
from signaling.messages import ClientMessage, ServerMessage, parse_server_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHROMIUM_OFFER = FIXTURES / "chromium_simulcast_offer.sdp"

RIDS = ["q", "h", "f"]
EXT = SimulcastExtensions(mid=1, rid=4, repaired_rid=5, abs_send_time=3)


async def aiortc_offer() -> str:
    """aiortc's own publish offer (audio + track-less video); createOffer opens no socket."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        return (await pc.createOffer()).sdp
    finally:
        await pc.close()


def sections(sdp: str) -> list[str]:
    """Session part, then each m-line's text."""
    return re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)


def extmaps(section: str) -> dict[str, int]:
    return {
        m.group(2): int(m.group(1))
        for m in re.finditer(r"^a=extmap:(\d+) (\S+)", section, re.MULTILINE)
    }


# ----------------------------------------------------------------- munging


async def test_munged_aiortc_offer_announces_three_rids_and_drops_ssrc_lines():
    offer = await aiortc_offer()
    munged = munge_simulcast_offer(offer, RIDS)
    before, after = sections(offer), sections(munged.sdp)
    assert len(before) == len(after) == 3
    assert after[0] == before[0]  # session part untouched
    assert after[1] == before[1] and after[1].startswith("m=audio")  # audio untouched
    assert "a=ssrc:" in after[1]
    video = after[2]
    assert video.startswith("m=video")
    assert "a=ssrc" not in video  # neither a=ssrc nor a=ssrc-group
    assert "a=ssrc" in before[2]
    lines = video.split("\r\n")
    assert [line for line in lines if line.startswith("a=rid:")] == [
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
    ]
    assert "a=simulcast:send q;h;f" in lines
    maps = extmaps(video)
    assert maps[URI_MID] == extmaps(before[2])[URI_MID] == munged.extensions.mid
    assert maps[URI_RID] == munged.extensions.rid
    assert maps[URI_REPAIRED_RID] == munged.extensions.repaired_rid
    # the new ids are used by no other extension of any section
    other_ids = set(extmaps(before[1]).values()) | set(extmaps(before[2]).values())
    assert munged.extensions.rid not in other_ids
    assert munged.extensions.repaired_rid not in other_ids
    assert munged.extensions.rid != munged.extensions.repaired_rid
    assert munged.mid == re.search(r"^a=mid:(\S+)", video, re.MULTILINE).group(1)
    assert munged.sdp.endswith("\r\n")


async def test_munged_offer_parses_with_aiortc_and_describe_remote_media():
    munged = munge_simulcast_offer(await aiortc_offer(), RIDS)
    parsed = aiortc_sdp.SessionDescription.parse(munged.sdp)
    assert [m.kind for m in parsed.media] == ["audio", "video"]
    assert parsed.media[1].ssrc == []
    assert parsed.media[1].direction == "sendonly"
    media = describe_remote_media(munged.sdp)
    video = media[1]
    assert video.kind == "video"
    assert video.ssrcs == []
    assert video.extensions[URI_RID] == munged.extensions.rid
    assert video.extensions[URI_REPAIRED_RID] == munged.extensions.repaired_rid
    assert media[0].ssrcs  # audio keeps its SSRC


def test_munging_a_chromium_offer_without_its_simulcast_lines_restores_them():
    original = CHROMIUM_OFFER.read_text()
    stripped = "".join(
        line
        for line in original.splitlines(keepends=True)
        if not line.startswith(("a=rid:", "a=simulcast:"))
        and "rtp-stream-id" not in line  # both RID extmaps
    )
    munged = munge_simulcast_offer(stripped, RIDS)
    assert munged.extensions.mid == 9  # Chromium's existing mid extmap is reused
    # ids 10 and 11 are the only free ones below 12 once Chromium's RID extmaps are gone
    assert {munged.extensions.rid, munged.extensions.repaired_rid} == {10, 11}
    ours = [line for line in munged.sdp.splitlines() if line.startswith(("a=rid", "a=simul"))]
    theirs = [line for line in original.splitlines() if line.startswith(("a=rid", "a=simul"))]
    assert ours == theirs


def test_munging_refuses_offers_it_cannot_turn_into_simulcast():
    audio_only = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n"
    with pytest.raises(ValueError, match="no sendonly video"):
        munge_simulcast_offer(audio_only, RIDS)
    already = CHROMIUM_OFFER.read_text()  # its only video m-line already has simulcast
    with pytest.raises(ValueError, match="no sendonly video"):
        munge_simulcast_offer(already, RIDS)
    full = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\n" + "".join(
        f"a=extmap:{i} urn:x-test:{i}\r\n" for i in range(1, 15)
    )
    with pytest.raises(ValueError, match="no free"):
        munge_simulcast_offer(full, RIDS)


# ------------------------------------------------------------- RTP per layer


def layer(spec: LayerSpec = DEFAULT_LAYERS[1], **kwargs: Any) -> LayerStream:
    args: dict[str, Any] = {
        "ssrc": 0x11111111,
        "rtx_ssrc": 0x22222222,
        "first_seq": 65534,
        "first_rtx_seq": 65535,
        "timestamp_offset": 0xFFFFFF00,
        "picture_id": 0x7FFF,
        "payload_type": 97,
        "rtx_payload_type": 98,
    }
    args.update(kwargs)
    return LayerStream(spec, "1", EXT, **args)


def test_frame_packets_carry_mid_rid_seq_timestamp_marker_and_vp8_descriptor():
    stream = layer()
    frame = b"\x00" + bytes(range(256)) * 12  # a "keyframe" (P bit clear), 3073 bytes
    packets = stream.frame_packets(frame, capture_timestamp=0x200, send_time=b"\x01\x02\x03")
    views = [RtpView(p) for p in packets]
    assert len(views) == 3
    assert [v.seq for v in views] == [65534, 65535, 0]  # wraps
    assert {v.timestamp for v in views} == {(0x200 + 0xFFFFFF00) & 0xFFFFFFFF}
    assert [v.marker for v in views] == [0, 0, 1]
    assert {v.ssrc for v in views} == {0x11111111}
    assert {v.payload_type for v in views} == {97}
    for v in views:
        ext = v.extensions()
        assert ext[EXT.mid] == b"1"
        assert ext[EXT.rid] == b"h"
        assert ext[EXT.abs_send_time] == b"\x01\x02\x03"
        assert EXT.repaired_rid not in ext
    descriptors = [Vp8Descriptor(v.payload()) for v in views]
    assert [d.start for d in descriptors] == [1, 0, 0]
    assert {d.picture_id for d in descriptors} == {0x7FFF}
    assert {d.picture_id_bits for d in descriptors} == {15}
    assert descriptors[0].keyframe
    rebuilt = b"".join(v.payload()[d.size :] for v, d in zip(views, descriptors, strict=True))
    assert rebuilt == frame
    assert max(len(v.payload()) for v in views) <= 1200
    # the next frame: picture id wraps to 0, sequence numbers continue
    nxt = [RtpView(p) for p in stream.frame_packets(b"\x01abc", 0x200 + 6000)]
    assert Vp8Descriptor(nxt[0].payload()).picture_id == 0
    assert nxt[0].seq == 1 and nxt[0].marker == 1
    assert not Vp8Descriptor(nxt[0].payload()).keyframe
    assert stream.stats.frames == 2 and stream.stats.keyframes == 1


def test_vp8_packetize_balances_sizes_and_handles_empty_frames():
    assert vp8_packetize(b"", 5) == []
    two = vp8_packetize(b"x" * 2392, 5, max_payload=1200)
    assert [len(p) for p in two] == [1200, 1200]
    three = vp8_packetize(b"x" * 2393, 5, max_payload=1200)
    assert [len(p) for p in three] == [4 + 798, 4 + 798, 4 + 797]
    assert b"".join(p[4:] for p in three) == b"x" * 2393
    assert vp8_is_keyframe(b"\x10") and not vp8_is_keyframe(b"\x11") and not vp8_is_keyframe(b"")


def test_sender_report_maps_ntp_to_the_layer_timestamp():
    stream = layer()
    stream.frame_packets(b"\x00" * 100, 0)
    sr = RtcpSrPacket.parse(stream.sender_report(3_900_000_000.5, 123456)[4:], 0)
    assert sr.ssrc == stream.ssrc
    assert sr.sender_info.rtp_timestamp == 123456
    assert sr.sender_info.ntp_timestamp == (3_900_000_000 << 32) | (1 << 31)
    assert sr.sender_info.packet_count == 1
    assert sr.sender_info.octet_count == 104


# ------------------------------------------------------------------ RTCP


def sender() -> SimulcastSender:
    s = SimulcastSender.create(DEFAULT_LAYERS, "1", EXT, random.Random(7))
    s.configure(97, 98, EXT)
    for lay in s.layers:
        assert lay.take_keyframe_request()  # every layer starts with a keyframe
    return s


def pli(media_ssrc: int) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=1, ssrc=1, media_ssrc=media_ssrc))


def test_layers_get_distinct_random_ssrcs():
    s = sender()
    ssrcs = [x for lay in s.layers for x in (lay.ssrc, lay.rtx_ssrc)]
    assert len(set(ssrcs)) == 6
    assert [lay.rid for lay in s.layers] == ["q", "h", "f"]


@pytest.mark.parametrize("target", [0, 1, 2])
def test_pli_requests_a_keyframe_on_the_named_layer_only(target: int):
    s = sender()
    rr = bytes(RtcpRrPacket(ssrc=1))
    assert s.handle_rtcp(rr + pli(s.layers[target].ssrc)) == []  # compound: RR + PLI
    assert [lay.keyframe_requested for lay in s.layers] == [i == target for i in range(3)]
    assert s.layers[target].stats.plis == 1
    assert s.layers[target].take_keyframe_request()
    assert not s.layers[target].take_keyframe_request()


def test_fir_and_unknown_ssrcs():
    s = sender()
    fir = bytes(
        RtcpPsfbPacket(fmt=4, ssrc=1, media_ssrc=0, fci=struct.pack("!IB3x", s.layers[2].ssrc, 1))
    )
    s.handle_rtcp(fir)
    assert [lay.keyframe_requested for lay in s.layers] == [False, False, True]
    assert s.layers[2].stats.firs == 1
    s.layers[2].keyframe_requested = False
    s.handle_rtcp(pli(12345))
    assert not any(lay.keyframe_requested for lay in s.layers)
    assert s.counters.unknown_ssrc == 1
    assert s.handle_rtcp(b"\x80\xce\x00") == []  # malformed: ignored


def test_remb_is_recorded_and_changes_nothing():
    s = sender()
    remb = bytes(
        RtcpPsfbPacket(fmt=15, ssrc=1, media_ssrc=0, fci=pack_remb_fci(300_000, [s.layers[0].ssrc]))
    )
    assert s.handle_rtcp(remb) == []
    assert s.counters.rembs == 1
    assert s.counters.last_remb_bps == pytest.approx(300_000, rel=0.01)
    assert not any(lay.keyframe_requested for lay in s.layers)


def test_nack_is_answered_with_rtx_from_the_layer_cache():
    s = sender()
    f = s.layers[2]
    frame = b"\x00" + b"k" * 5000
    sent = [RtpView(p) for p in f.frame_packets(frame, 9000, b"\x00\x00\x01")]
    s.layers[0].frame_packets(b"\x00q", 9000)
    wanted = [sent[1].seq, sent[3].seq]
    out = [RtpView(p) for p in s.handle_rtcp(build_nack(1, f.ssrc, wanted), b"\x00\x00\x02")]
    assert len(out) == 2
    for rtx, original in zip(out, (sent[1], sent[3]), strict=True):
        assert rtx.ssrc == f.rtx_ssrc
        assert rtx.payload_type == 98
        assert rtx.timestamp == original.timestamp
        assert rtx.marker == original.marker
        payload = rtx.payload()
        assert struct.unpack("!H", payload[:2])[0] == original.seq  # OSN
        assert payload[2:] == original.payload()
        ext = rtx.extensions()
        assert ext[EXT.mid] == b"1"
        assert ext[EXT.repaired_rid] == b"f"
        assert EXT.rid not in ext
    assert (out[1].seq - out[0].seq) & 0xFFFF == 1
    assert f.stats.rtx_sent == 2 and f.stats.nacked == 2
    # a NACK naming the wrong layer's SSRC gets that layer's packets only (none here)
    assert s.handle_rtcp(build_nack(1, s.layers[1].ssrc, wanted)) == []


def test_rtx_needs_a_cached_packet_and_a_negotiated_rtx_payload_type():
    stream = layer(cache_packets=2)
    views = [RtpView(p) for p in stream.frame_packets(b"\x00" + b"z" * 3000, 0)]
    assert stream.retransmission(views[0].seq) is None  # evicted (cache of 2)
    assert stream.retransmission(views[2].seq) is not None
    bare = layer(rtx_payload_type=None)
    seq = RtpView(bare.frame_packets(b"\x00z", 0)[0]).seq
    assert bare.retransmission(seq) is None
    assert bare.stats.rtx_missed == 1


# --------------------------------------------------------------- encoders


@pytest.mark.parametrize("spec", DEFAULT_LAYERS, ids=lambda s: s.rid)
def test_each_layer_encodes_a_decodable_pattern_with_a_readable_counter(spec: LayerSpec):
    from loadgen.media.synthetic import PatternTrack

    pattern = PatternTrack(spec.width, spec.height, paced=False)
    encoder = Vp8LayerEncoder(spec.width, spec.height, spec.bitrate, 15.0)
    decoder: Any = av.CodecContext.create("libvpx", "r")
    try:
        frames = [
            encoder.encode(pattern.render(n), n * 6000, keyframe=n in (0, 4)) for n in range(6)
        ]
        assert [vp8_is_keyframe(f) for f in frames] == [True, False, False, False, True, False]
        key = Vp8Descriptor(vp8_packetize(frames[0], 0)[0])
        assert (key.width, key.height) == (spec.width, spec.height)
        for n, data in enumerate(frames):
            (decoded,) = decoder.decode(av.Packet(data))
            assert (decoded.width, decoded.height) == (spec.width, spec.height)
            image = decoded.to_ndarray(format="yuv420p")[: spec.height]
            assert read_counter(image) == n
    finally:
        encoder.close()
        pattern.stop()


# ------------------------------------------------------------ layer switches


def test_layer_switches_count_changes_of_rid_or_paused_after_the_first_message():
    stats = TrackStats("p", "v", "video", started_at=0.0, published_at=0.0)
    assert not stats.on_layer("f", False, 1280, 720)  # the first is no switch
    assert not stats.on_layer("f", False, 1280, 720)  # same layer again
    assert stats.on_layer("h", False, 640, 360)
    assert not stats.on_layer("h", False, 640, 352)  # size only: no switch
    assert stats.on_layer("h", True, 640, 352)  # paused
    assert stats.on_layer("h", False, 640, 352)  # resumed
    assert stats.on_layer(None, False, 0, 0)
    assert stats.layer_switches == 4
    out = stats.to_json(end=10.0)
    assert out["layer_switches"] == 4
    assert out["layer"] == {"rid": None, "width": 0, "height": 0, "paused": False}


class RecordingBot(Bot):
    """A bot whose signaling sends are recorded instead of written to a websocket."""

    def __init__(self, config: BotConfig) -> None:
        super().__init__(config, clock=lambda: 100.0)
        self.sent: list[dict[str, Any]] = []

    async def _send(self, message: ClientMessage) -> None:
        self.sent.append(message.to_json())


def _wire(message: dict[str, Any]) -> ServerMessage:
    """A server message as the bot gets it: parsed from its wire form."""
    return parse_server_message(json.dumps(message))


async def test_layer_messages_become_switches_and_events_of_the_right_track():
    bot = RecordingBot(BotConfig(url="http://x", room="r", name="me"))
    participant = {
        "id": "p1",
        "name": "alice",
        "tracks": [{"id": "v1", "kind": "video"}, {"id": "a1", "kind": "audio"}],
    }
    await bot._handle(
        _wire(
            {
                "type": "joined",
                "id": "me",
                "room": "r",
                "participants": [participant],
                "ice_servers": [],
            }
        )
    )
    for rid, paused in (("f", False), ("q", False), ("q", True)):
        await bot._handle(
            _wire(
                {
                    "type": "layer",
                    "track": "v1",
                    "rid": rid,
                    "width": 1,
                    "height": 1,
                    "paused": paused,
                }
            )
        )
    summary = bot.summary()
    by_track = {t["track"]: t for t in summary["tracks"]}
    assert by_track["v1"]["layer_switches"] == 2
    assert by_track["v1"]["layer"]["paused"] is True
    assert by_track["a1"]["layer_switches"] == 0
    layer_events = [e for e in summary["events"] if e["type"] == "layer"]
    assert [(e["rid"], e["paused"], e["switch"]) for e in layer_events] == [
        ("f", False, False),
        ("q", False, True),
        ("q", True, True),
    ]
    assert bot.sent == []  # no max_height configured: no set_layer
    await bot.close()


async def test_max_height_is_requested_for_every_remote_video_track_and_can_change():
    bot = RecordingBot(BotConfig(url="http://x", room="r", name="me", max_height=360))
    participant = {
        "id": "p1",
        "name": "alice",
        "tracks": [{"id": "v1", "kind": "video"}, {"id": "a1", "kind": "audio"}],
    }

    class Connected:
        connected = True

    bot._client = Connected()  # type: ignore[assignment]
    await bot._handle(
        _wire(
            {
                "type": "joined",
                "id": "me",
                "room": "r",
                "participants": [participant],
                "ice_servers": [],
            }
        )
    )
    await bot._handle(
        _wire(
            {"type": "track_published", "participant": "p2", "track": {"id": "v2", "kind": "video"}}
        )
    )
    await bot._handle(
        _wire(
            {
                "type": "track_published",
                "participant": "me",
                "track": {"id": "mine", "kind": "video"},
            }
        )
    )
    assert [(m["track"], m["max_height"]) for m in bot.sent] == [("v1", 360), ("v2", 360)]
    assert {m["type"] for m in bot.sent} == {"set_layer"}
    bot.sent.clear()
    await bot.set_max_height("v2", 720)
    assert [(m["track"], m["max_height"]) for m in bot.sent] == [("v2", 720)]
    bot.sent.clear()
    await bot.set_max_height(None, 180)
    assert sorted((m["track"], m["max_height"]) for m in bot.sent) == [("v1", 180), ("v2", 180)]
    bot.sent.clear()
    # a not_found for a set_layer that raced the subscription is an event, not an error
    await bot._handle(
        _wire({"type": "error", "code": "not_found", "message": "x", "request": "set_layer"})
    )
    summary = bot.summary()
    assert summary["errors"] == []
    assert any(e["type"] == "set_layer_not_found" for e in summary["events"])
    bot._client = None
    await bot.close()


def test_uplink_control_drops_the_top_layer_on_loss_and_brings_it_back():
    from loadgen.media.simulcast import UplinkControl

    up = UplinkControl(3, settle=2.0, calm=6.0)
    assert up.active == 3
    assert up.on_loss(0.15, 0.0) is None and up.active == 3  # once: maybe noise
    assert up.on_loss(0.15, 1.0) is None and up.active == 2  # twice: f off
    assert up.on_loss(0.5, 1.5) is None and up.active == 2  # settling: ignored
    assert up.on_loss(0.5, 3.5) is None and up.active == 1  # far above: h off too
    assert up.on_loss(0.5, 6.0) is None and up.active == 1  # never below one layer
    assert up.on_loss(0.05, 7.0) is None and up.active == 1  # a little loss: hold
    assert up.on_loss(0.0, 8.0) is None
    assert up.on_loss(0.0, 13.9) is None
    assert up.on_loss(0.0, 14.0) == 1 and up.active == 2  # h back after 6 s of calm
    assert up.on_loss(0.3, 16.5) is None and up.active == 1  # and it failed
    assert up.calm == 12.0  # so the next try waits twice as long
    for t in range(17, 31):  # calm from 19 (after the settle time)
        assert up.on_loss(0.0, float(t)) is None
    assert up.on_loss(0.0, 31.0) == 1


def test_receiver_reports_drive_the_layers_sent():
    from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

    s = sender()
    f = s.layers[2]

    def rr(ssrc: int, lost: float) -> bytes:
        info = RtcpReceiverInfo(
            ssrc=ssrc, fraction_lost=int(lost * 256), packets_lost=0,
            highest_sequence=0, jitter=0, lsr=0, dlsr=0,
        )  # fmt: skip
        return bytes(RtcpRrPacket(ssrc=1, reports=[info]))

    assert all(s.sends(i) for i in range(3))
    s.handle_rtcp(rr(f.ssrc, 0.4), None, now=10.0)  # far above the threshold: at once
    assert not s.sends(2) and s.sends(1)
    s.handle_rtcp(rr(f.ssrc, 0.4), None, now=20.0)  # f is not sent: its reports no longer count
    assert s.sends(1)
    for t in range(21, 30):
        s.handle_rtcp(rr(s.layers[0].ssrc, 0.0), None, now=float(t))
    assert s.sends(2) and f.keyframe_requested  # back, starting with a keyframe
