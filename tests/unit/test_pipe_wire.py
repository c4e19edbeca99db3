"""The pipe's wire format (sfu/pipe_wire.py), its control channel (sfu/pipe_control.py)
and the far side's demultiplexing by pipe SSRC (sfu/pipe_import.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

from sfu.pipe_control import ControlChannel
from sfu.pipe_export import Exporter
from sfu.pipe_import import Importer, PipedListener, is_piped
from sfu.pipe_wire import (
    CONTROL,
    RTCP,
    RTP,
    LayerAnnouncement,
    TrackAnnouncement,
    WireError,
    build_rtx,
    classify,
    decode_control,
    encode_control,
    with_ssrc,
)
from sfu.ports import NullListener
from sfu.room import Sfu
from sfu.rtp.packet import RtpView
from sfu.rtp.rtcp import build_nack, parse_rtcp
from sfu.source import Source, SourceParams
from sfu.tracks import PublishedTrack
from tests.fakes import rtp, vp8_payload

ANNOUNCEMENT = TrackAnnouncement(
    room="r",
    participant="p1",
    participant_name="cam",
    track="t1",
    kind="video",
    mid="1",
    codec="vp8",
    clock_rate=90000,
    payload_type=96,
    rtx_payload_type=97,
    red_payload_type=None,
    audio_level_ext=0,
    layers=(
        LayerAnnouncement("q", 1001, 2001),
        LayerAnnouncement("h", 1002, 2002),
        LayerAnnouncement("f", 1003, 2003),
    ),
    fmtp=(("x-google", "1"),),
    identity="ada@example.org",
)


def test_datagrams_are_told_apart_by_their_first_bytes() -> None:
    assert classify(rtp(1, pt=96)) == RTP
    assert classify(rtp(1, pt=111, marker=1)) == RTP
    assert classify(build_nack(1, 2, [5])) == RTCP
    assert classify(encode_control({"t": "ping"})) == CONTROL
    assert classify(b"\x00\x01\x00\x00") is None  # STUN-like
    assert classify(b"\x80") is None
    assert classify(b"\x80\x60\x00") is None  # too short for RTP


def test_the_ssrc_rewrite_changes_only_the_ssrc() -> None:
    data = rtp(7, 1234, ssrc=0x11111111, payload=b"abc", extensions=[(3, b"\x01")])
    out = with_ssrc(data, 0xCAFEBABE)
    view, orig = RtpView(out), RtpView(data)
    assert view.ssrc == 0xCAFEBABE
    assert (view.seq, view.timestamp, view.payload(), view.extensions()) == (
        orig.seq,
        orig.timestamp,
        orig.payload(),
        orig.extensions(),
    )


def test_rtx_carries_the_original_sequence_number_and_payload_without_padding() -> None:
    data = rtp(40000, 99, ssrc=5, pt=96, payload=b"media", marker=1, padding=4)
    view = RtpView(data)
    out = RtpView(build_rtx(data, view.payload_start, view.payload_end, 97, 12, 0xABC))
    assert (out.payload_type, out.seq, out.ssrc, out.timestamp, out.marker) == (
        97,
        12,
        0xABC,
        99,
        1,
    )
    assert out.padding == 0
    assert out.payload() == (40000).to_bytes(2, "big") + b"media"


def test_a_track_announcement_survives_the_wire() -> None:
    data = encode_control({"t": "export", "track": ANNOUNCEMENT.to_json(), "s": "x", "n": 1})
    message = decode_control(data)
    assert message["track"] == ANNOUNCEMENT
    assert message["n"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "text"},
        {"layers": []},
        {"layers": [["q", -1, 2]]},
        {"layers": [["q", 1 << 32, 2]]},
        {"payload_type": 300},
        {"room": 5},
        {"clock_rate": True},
    ],
)
def test_a_bad_announcement_is_refused(change: dict[str, Any]) -> None:
    track = {**ANNOUNCEMENT.to_json(), **change}
    with pytest.raises(WireError):
        decode_control(json.dumps({"t": "export", "track": track, "s": "x", "n": 1}).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[1]",
        b'{"t":"nope"}',
        b'{"t":"ack"}',
        b'{"t":"leave","room":"r"}',
        b'{"t":"ping","s":5}',
    ],
)
def test_bad_control_datagrams_are_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_control(data)


# ------------------------------------------------------------------ control channel


class Link:
    """Two control channels whose datagrams go through a list (lost or reordered on demand)."""

    def __init__(self) -> None:
        self.wire: list[tuple[str, bytes]] = []
        self.delivered: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        self.restarts = 0
        self.a = self._channel("a")
        self.b = self._channel("b")

    def _channel(self, name: str, session: str | None = None) -> ControlChannel:
        def restarted() -> None:
            self.restarts += 1

        return ControlChannel(
            session or f"session-{name}",
            lambda data: self.wire.append((name, data)),
            self.delivered[name].append,
            restarted,
            retransmit=0.1,
            attempts=3,
        )

    def pump(self, drop: set[int] | None = None, reverse: bool = False) -> None:
        """Deliver what is on the wire (leaving out the indexes in ``drop``)."""
        batch, self.wire = self.wire, []
        items = list(enumerate(batch))
        if reverse:
            items.reverse()
        for i, (sender, data) in items:
            if drop and i in drop:
                continue
            (self.b if sender == "a" else self.a).on_message(decode_control(data))


def test_control_messages_arrive_once_and_in_order_despite_loss_and_reordering() -> None:
    link = Link()
    for i in range(3):
        link.a.send({"t": "leave", "room": "r", "participant": f"p{i}"}, 0.0)
    link.pump(drop={1}, reverse=True)  # the 2nd is lost, the others arrive backwards
    assert [m["participant"] for m in link.delivered["b"]] == ["p0"]  # p2 is held back
    link.pump()  # acks
    assert link.a.pending == 1
    assert link.a.poll(0.05) == []  # not due yet
    assert link.wire == []
    assert link.a.poll(0.11) == []  # retransmits the lost one
    link.pump()
    link.pump()
    assert [m["participant"] for m in link.delivered["b"]] == ["p0", "p1", "p2"]
    assert link.a.pending == 0 and link.a.retransmissions == 1
    # a duplicate (a retransmission whose ack was lost) is acknowledged, not delivered
    n = link.a.send({"t": "bye"}, 1.0)
    first = link.wire[0]
    link.pump()
    link.wire.append(first)
    link.pump()
    assert [m["t"] for m in link.delivered["b"]].count("bye") == 1
    assert link.b.duplicates == 1 and link.a.acked(n)


def test_an_unacknowledged_message_is_given_up_after_its_attempts() -> None:
    link = Link()
    n = link.a.send({"t": "bye"}, 0.0)
    failed: list[int] = []
    for step in range(1, 6):
        failed += link.a.poll(step * 0.1 + 0.001)
        link.wire.clear()  # nobody answers
    assert failed == [n] and link.a.pending == 0


def test_a_new_peer_session_is_a_restart() -> None:
    link = Link()
    link.a.send({"t": "leave", "room": "r", "participant": "x"}, 0.0)
    link.pump()
    assert link.restarts == 0
    link.a = link._channel("a", session="session-a2")  # the peer restarted: numbers from 1
    link.a.send({"t": "leave", "room": "r", "participant": "y"}, 0.0)
    link.pump()
    assert link.restarts == 1
    assert [m["participant"] for m in link.delivered["b"]] == ["x", "y"]
    # a ping names its session too: a peer that restarted and has said nothing else yet
    link.b.on_message(decode_control(encode_control({"t": "ping", "s": "session-a2"})))
    assert link.restarts == 1
    link.b.on_message(decode_control(encode_control({"t": "ping", "s": "session-a3"})))
    assert link.restarts == 2 and link.delivered["b"][-1]["t"] == "ping"


# ------------------------------------------------------------------ demux by SSRC


async def test_the_far_side_publishes_an_announced_track_and_routes_packets_by_pipe_ssrc() -> None:
    sfu = Sfu()
    sent: list[bytes] = []
    loop = asyncio.get_running_loop()
    importer = Importer(
        lambda room, name, listener, pid, identity: sfu.join(
            room, name, listener, participant_id=pid, identity=identity
        ),
        sent.append,
        loop,
        100_000,
        2_000_000,
    )
    watcher = sfu.join("r", "watcher", NullListener())
    importer.on_export(ANNOUNCEMENT, loop.time())
    remote = sfu.rooms["r"].participants["p1"]
    assert is_piped(remote) and not is_piped(watcher)
    assert isinstance(remote.listener, PipedListener) and remote.name == "cam"
    assert remote.identity == "ada@example.org"
    (track,) = remote.tracks.values()
    assert track.id == "t1" and track.rids == ("q", "h", "f")
    assert track.source.params.fmtp == (("x-google", "1"),)
    assert "t1" in watcher.subscriptions  # subscribed like any published track
    q, h, f = track.layers
    key = vp8_payload(keyframe=True, picture_id=1, tl0picidx=1)
    for seq, ssrc in ((10, 1002), (11, 1002), (10, 1003), (12, 1002)):
        importer.on_rtp(rtp(seq, 0, ssrc=ssrc, pt=96, payload=key), loop.time())
    importer.on_rtp(rtp(1, 0, ssrc=4242, pt=96, payload=key), loop.time())
    assert (q.packets, h.packets, f.packets, importer.unknown) == (0, 3, 1, 1)
    assert (h.width, h.height) == (640, 360)
    # an RTX packet on h's pipe RTX SSRC repairs a loss h has asked for
    h_lost = rtp(13, 0, ssrc=1002, pt=96, payload=key)
    importer.on_rtp(rtp(14, 0, ssrc=1002, pt=96, payload=key), loop.time())
    assert 13 in h.nack.missing
    lost_view = RtpView(h_lost)
    importer.on_rtp(
        build_rtx(h_lost, lost_view.payload_start, lost_view.payload_end, 97, 1, 2002),
        loop.time(),
    )
    assert 13 not in h.nack.missing and h.cache.get(13) is not None
    # unexport: the track is unpublished, its SSRCs no longer routed
    importer.on_unexport("r", "p1", "t1")
    assert remote.tracks == {} and "t1" not in watcher.subscriptions
    importer.on_rtp(rtp(15, 0, ssrc=1002, pt=96, payload=key), loop.time())
    assert importer.unknown == 2
    await importer.close("test")
    assert remote.closed and "p1" not in sfu.rooms["r"].participants
    await sfu.close()


async def test_a_piped_track_can_be_muted_from_the_origin() -> None:
    sfu = Sfu()
    loop = asyncio.get_running_loop()
    importer = Importer(
        lambda room, name, listener, pid, identity: sfu.join(
            room, name, listener, participant_id=pid, identity=identity
        ),
        lambda data: None,
        loop,
        100_000,
        2_000_000,
    )
    importer.on_export(ANNOUNCEMENT, loop.time())
    remote = sfu.rooms["r"].participants["p1"]
    (track,) = remote.tracks.values()
    importer.on_mute("r", "p1", "t1", True)
    assert track.muted
    told: list[tuple[str, bool]] = []
    importer.set_muted = lambda p, t, muted: told.append((t.id, muted))
    importer.on_mute("r", "p1", "t1", False)
    importer.on_mute("r", "p1", "nope", False)
    assert told == [("t1", False)]
    await importer.close("test")
    await sfu.close()


# ------------------------------------------------------------------ the origin side


async def test_the_origin_pipes_every_layer_and_answers_feedback_from_its_cache() -> None:
    sfu = Sfu()
    loop = asyncio.get_running_loop()
    sent: list[bytes] = []
    announced: list[dict[str, Any]] = []

    def announce(message: dict[str, Any]) -> int:
        announced.append(message)
        return len(announced)

    exporter = Exporter(sent.append, announce, loop.time)
    pub = sfu.join("r", "cam", NullListener())
    layers = tuple(
        Source(
            SourceParams("t", "video", "vp8", 90000, 96, 0x100 + i, 97, 0x200 + i, mid="1", rid=r),
            pub.publish_side,
        )
        for i, r in enumerate(("q", "h"))
    )
    track = PublishedTrack("t", "video", "1", layers)
    pub.publish_side.add_track(track, loop.time())
    exporter.export("r", pub, track, loop.time())
    (message,) = announced
    assert message["t"] == "export"
    a = decode_control(encode_control({**message, "s": "x", "n": 1}))["track"]
    assert [la.rid for la in a.layers] == ["q", "h"] and a.participant == pub.id
    pipe_ssrcs = {la.rid: (la.ssrc, la.rtx_ssrc) for la in a.layers}
    assert len({s for pair in pipe_ssrcs.values() for s in pair}) == 4
    key = vp8_payload(keyframe=True, picture_id=1, tl0picidx=1)
    for seq in (1, 2, 3):
        layers[1].on_rtp(RtpView(rtp(seq, 0, ssrc=0x101, payload=key)), loop.time())
    assert [RtpView(d).ssrc for d in sent] == [pipe_ssrcs["h"][0]] * 3
    assert [RtpView(d).payload() for d in sent] == [key] * 3
    # the far side lost seq 2: resent from the cache as RTX on the layer's pipe RTX SSRC
    sent.clear()
    (nack,) = parse_rtcp(build_nack(9, pipe_ssrcs["h"][0], [2, 50]))
    exporter.on_rtcp(nack, loop.time())
    (rtx,) = [RtpView(d) for d in sent]
    assert rtx.ssrc == pipe_ssrcs["h"][1] and rtx.payload() == b"\x00\x02" + key
    # PLI asks the origin Source for a keyframe; REMB sets what the far side takes
    before = layers[0].keyframe_requests_sent + layers[0].keyframe_requests_throttled
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=9, media_ssrc=pipe_ssrcs["q"][0])
    exporter.on_rtcp(pli, loop.time())
    assert layers[0].keyframe_requests_sent + layers[0].keyframe_requests_throttled == before + 1
    remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=9, media_ssrc=0)
    remb.fci = pack_remb_fci(300_000, [pipe_ssrcs["q"][0], pipe_ssrcs["h"][0]])
    exporter.on_rtcp(remb, loop.time())
    assert [t.remb for t in exporter.tracks["t"].taps] == [300_000, 300_000]
    # an operator's mute goes down the pipe once
    track.muted = True
    exporter.send_sender_reports(loop.time())
    exporter.send_sender_reports(loop.time())
    assert [m["t"] for m in announced] == ["export", "mute"] and announced[1]["muted"] is True
    # unpublished: the taps are detached and the far side told
    pub.publish_side.remove_track(track)
    exporter.track_unpublished(sfu.rooms["r"], pub, track)
    assert announced[-1]["t"] == "unexport" and exporter.taps == {}
    assert all(len(layer.forwarders) == 0 for layer in layers)
    await sfu.close()
