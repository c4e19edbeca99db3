"""One room over two SFUs joined by a pipe (sfu/pipe.py): a simulcast bot publishes on
server A, its tracks are piped to server B, bots subscribed on B decode them, a small
one gets the lower layer, packets lost on the pipe are repaired, and closing the pipe
unpublishes on B."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loadgen.bot import BotConfig, run_bot
from sfu.pipe import PipeTransport
from sfu.pipe_import import is_piped
from signaling.server import ServerConfig

from ._wait import until
from .conftest import RunningServer, ServerFactory

ROOM = "spread"


def _video_from(summary: dict[str, Any], participant: str, kind: str = "video") -> dict[str, Any]:
    (track,) = [
        t for t in summary["tracks"] if t["participant"] == participant and t["kind"] == kind
    ]
    return track


@pytest.fixture
async def two_servers(
    server_factory: ServerFactory,
) -> AsyncIterator[tuple[RunningServer, RunningServer, PipeTransport, PipeTransport]]:
    a = await server_factory(ServerConfig())
    b = await server_factory(ServerConfig())
    pipe_a = await PipeTransport.open(a.sfu, ("127.0.0.1", 0))
    pipe_b = await PipeTransport.open(b.sfu, ("127.0.0.1", 0))
    pipe_a.connect(pipe_b.local_address)
    pipe_b.connect(pipe_a.local_address)
    try:
        yield a, b, pipe_a, pipe_b
    finally:
        await pipe_a.close()
        await pipe_b.close()


async def test_a_piped_simulcast_publisher_is_decoded_on_the_far_server(
    two_servers: tuple[RunningServer, RunningServer, PipeTransport, PipeTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, pipe_a, pipe_b = two_servers
    caplog.set_level(logging.WARNING)
    await pipe_a.export_room(ROOM)  # every publisher of the room, as it comes
    # once layers are chosen, lose a few packets on the pipe: one in 25 of layer f (which
    # nobody on B watches: the repair is judged at B's Source, not by a subscriber's
    # jitter buffer, which on a loaded machine may give up on a late repair), 12 in all
    counter = {"n": 0, "ssrc": -1}

    def lossy(data: bytes) -> bool:
        if int.from_bytes(data[8:12], "big") != counter["ssrc"]:
            return False
        counter["n"] += 1
        return counter["n"] % 25 == 0 and counter["n"] <= 300

    publisher = BotConfig(url=a.url, room=ROOM, name="cam", duration=14.0, simulcast=True)
    second = BotConfig(url=a.url, room=ROOM, name="plain", duration=13.5)  # one layer
    big = BotConfig(url=b.url, room=ROOM, name="big", duration=10.0, publish=False, max_height=360)
    small = BotConfig(
        url=b.url, room=ROOM, name="small", duration=10.0, publish=False, max_height=180
    )
    seen: dict[str, Any] = {}

    def remotes() -> dict[str, Any]:
        room_b = b.sfu.rooms.get(ROOM)
        if room_b is None:
            return {}
        return {p.name: p for p in room_b.participants.values() if is_piped(p)}

    def cam_video() -> Any:
        cam = remotes().get("cam")
        tracks = [t for t in cam.tracks.values() if t.kind == "video"] if cam else []
        return tracks[0] if tracks else None

    def diagnose() -> list[Any]:
        """What each subscriber's layer choice on B was based on (shown on failure)."""
        now = asyncio.get_running_loop().time()
        return [
            (
                p.name,
                sub.forwarder.request,
                p.layer_budget(),
                sub.forwarder.current.rid if sub.forwarder.current else None,
                sub.forwarder.target.rid if sub.forwarder.target else None,
                sub.forwarder.layer_infos(now, 1.5),
            )
            for p in b.sfu.rooms[ROOM].participants.values()
            for sub in p.subscriptions.values()
            if sub.forwarder.is_video and sub.track.rids
        ]

    def settled() -> bool:
        """Every layer has come down the pipe, and both subscribers on B have chosen."""
        video = cam_video()
        if video is None:
            return False
        forwarders = [len(layer.forwarders) for layer in video.layers]
        return all(s.packets > 30 for s in video.layers) and forwarders == [1, 1, 0]

    async def inspect() -> None:
        await asyncio.sleep(3.0)
        await until(settled, 5.0)  # a busy machine may take longer
        found = remotes()
        seen["remote"] = [found["cam"].id, found["plain"].id]
        # B exporting the room back exports nothing: piped tracks never go back up a pipe
        await pipe_b.export_room(ROOM)
        seen["exported_back"] = len(pipe_b.exporter.tracks)
        remote = found["cam"]
        video = cam_video()
        seen["rids"] = video.rids
        seen["forwarders"] = [len(layer.forwarders) for layer in video.layers]
        seen["layer_packets"] = [layer.packets for layer in video.layers]
        seen["diagnosis"] = diagnose()
        # the publisher's sender reports came down the pipe (lip sync on B), for every
        # stream that has them on A (the simulcast bot sends them for its audio only)
        (cam,) = [p for p in a.sfu.rooms[ROOM].participants.values() if p.name == "cam"]
        seen["sender_reports"] = [
            (
                layer.sender_report is not None,
                remote.tracks[mid].layers[i].sender_report is not None,
            )
            for mid, track in cam.tracks.items()
            for i, layer in enumerate(track.layers)
        ]
        # ... and B's estimate of what its subscribers take went up it (REMB)
        seen["remb"] = [
            tap.remb
            for exported in pipe_a.exporter.tracks.values()
            if exported.track.kind == "video"
            for tap in exported.taps
        ]
        (counter["ssrc"],) = [
            tap.ssrc
            for exported in pipe_a.exporter.tracks.values()
            for tap in exported.taps
            if tap.source.rid == "f"
        ]
        pipe_a.drop_rtp = lossy

    pub_task = asyncio.ensure_future(run_bot(publisher))
    second_task = asyncio.ensure_future(run_bot(second))
    await asyncio.sleep(1.5)
    big_summary, small_summary, _ = await asyncio.gather(run_bot(big), run_bot(small), inspect())
    stats_a, stats_b = pipe_a.stats(), pipe_b.stats()
    # the remote publisher on B keeps the origin's id, and B has nothing of its own
    (origin,) = [p for p in a.sfu.rooms[ROOM].participants.values() if p.name == "cam"]
    (plain,) = [p for p in a.sfu.rooms[ROOM].participants.values() if p.name == "plain"]
    assert seen["remote"] == [origin.id, plain.id]
    assert seen["exported_back"] == 0
    assert seen["rids"] == ("q", "h", "f")
    # every layer comes down the pipe
    assert all(n > 30 for n in seen["layer_packets"]), seen
    # on B, small (180p) takes q, big (360p) takes h, nobody f
    assert seen["forwarders"] == [1, 1, 0], (seen, seen["diagnosis"])
    assert len(seen["sender_reports"]) == 4, seen
    assert all(on_a == on_b for on_a, on_b in seen["sender_reports"]), seen
    assert (True, True) in seen["sender_reports"], seen
    assert len(seen["remb"]) == 4 and all(r is not None and r > 0 for r in seen["remb"]), seen
    for summary in (big_summary, small_summary):
        assert summary["ok"], summary["verdict"]
        audio = _video_from(summary, origin.id, "audio")
        assert audio["packets"] > 150, audio
    for summary in (big_summary, small_summary):  # the single-layer publisher too
        plain_video = _video_from(summary, plain.id)
        assert plain_video["frames_decoded"] > 30, plain_video
        assert plain_video["resolutions"] == [[320, 240]], plain_video
    big_video = _video_from(big_summary, origin.id)
    small_video = _video_from(small_summary, origin.id)
    assert big_video["frames_decoded"] > 30, big_video
    assert small_video["frames_decoded"] > 30, small_video
    # big gets h (its estimate may take it down to q for a while on a busy machine), never f
    assert big_video["resolutions"][0] == big_video["resolutions"][-1] == [640, 360], big_video
    assert all(r in ([640, 360], [320, 180]) for r in big_video["resolutions"]), big_video
    assert small_video["resolutions"] == [[320, 180]], small_video
    # the pipe lost packets on purpose; B asked for them and A resent them from its cache
    assert pipe_a.dropped_on_purpose == 12, stats_a
    assert stats_b["nacks_sent"] > 0 and stats_a["nacks_in"] > 0, (stats_a, stats_b)
    assert stats_a["retransmitted"] >= 12, (stats_a, stats_b)
    # B's Sources got every packet A piped: nothing is lost for good (RR cumulative loss)
    now = asyncio.get_running_loop().time()
    far_lost = [
        (p.name, t.kind, s.rid, s.stats.report_block(s.ssrc or 0, now).packets_lost)
        for p in remotes().values()
        for t in p.tracks.values()
        for s in t.layers
    ]
    assert len(far_lost) == 6 and all(lost == 0 for *_, lost in far_lost), far_lost
    assert stats_a["keyframe_requests_in"] > 0, stats_a
    assert big_video["loss_pct"] < 1.0, big_video
    assert [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()] == []

    # closing the pipe unpublishes on B: the remote publisher leaves B's room
    room_b = b.sfu.rooms.get(ROOM)
    assert room_b is not None and origin.id in room_b.participants
    await pipe_a.close()
    assert await until(
        lambda: b.sfu.rooms.get(ROOM) is None or origin.id not in b.sfu.rooms[ROOM].participants,
        3.0,
    )
    assert pipe_b.closed and pipe_b.close_reason == "the far side closed the pipe"
    assert await pub_task
    assert await second_task


async def test_a_piped_track_follows_its_publisher_and_the_pipe_times_out(
    two_servers: tuple[RunningServer, RunningServer, PipeTransport, PipeTransport],
) -> None:
    """export_participant follows one publisher; when it leaves A, its remote publisher
    leaves B; a peer that falls silent closes the pipe on its own."""
    a, b, pipe_a, pipe_b = two_servers
    publisher = asyncio.ensure_future(
        run_bot(BotConfig(url=a.url, room=ROOM, name="cam", duration=4.0))
    )
    assert await until(lambda: ROOM in a.sfu.rooms and a.sfu.rooms[ROOM].participants, 5.0)
    (origin,) = a.sfu.rooms[ROOM].participants.values()
    assert await until(lambda: len(origin.tracks) == 2, 5.0)
    await pipe_a.export_participant(ROOM, origin.id)
    remote = b.sfu.rooms[ROOM].participants[origin.id]
    assert sorted(t.kind for t in remote.tracks.values()) == ["audio", "video"]
    assert await until(lambda: all(t.source.packets > 20 for t in remote.tracks.values()), 5.0)
    assert (await publisher)["ok"]
    # the publisher left A: B's room is empty again
    assert await until(lambda: ROOM not in b.sfu.rooms, 3.0), b.sfu.rooms
    assert pipe_b.stats()["remote_publishers"] == 0

    # the far side falls silent (its datagrams are not answered): the pipe closes itself
    pipe_b.timeout = 0.5
    pipe_a.connect(("127.0.0.1", 9))  # A now talks to nobody: B hears nothing more
    assert await until(lambda: pipe_b.closed, 3.0)
    assert "nothing heard" in (pipe_b.close_reason or "")


async def test_an_srtp_pipe_carries_media_and_refuses_plain_datagrams(
    server_factory: ServerFactory,
) -> None:
    """``PipeTransport.open(..., srtp=True)``: a bot's tracks reach a subscriber on B
    (media SRTP, control authenticated); a plain RTP datagram from A's address is
    refused; one end with SRTP and the other without cannot connect."""
    a = await server_factory(ServerConfig())
    b = await server_factory(ServerConfig())
    pipe_a = await PipeTransport.open(a.sfu, ("127.0.0.1", 0), srtp=True)
    pipe_b = await PipeTransport.open(b.sfu, ("127.0.0.1", 0), srtp=True)
    plain = await PipeTransport.open(b.sfu, ("127.0.0.1", 0))
    try:
        with pytest.raises(ValueError):
            plain.connect(pipe_a.local_address, pipe_a.key)
        with pytest.raises(ValueError):
            pipe_a.connect(plain.local_address)
        assert pipe_a.key is not None and pipe_b.key is not None
        pipe_a.connect(pipe_b.local_address, pipe_b.key)
        pipe_b.connect(pipe_a.local_address, pipe_a.key)
        await pipe_a.export_room(ROOM)
        cam = BotConfig(url=a.url, room=ROOM, name="cam", duration=7.0)
        watch = BotConfig(url=b.url, room=ROOM, name="watch", duration=5.0, publish=False)
        publisher = asyncio.ensure_future(run_bot(cam))
        assert await until(lambda: ROOM in b.sfu.rooms and b.sfu.rooms[ROOM].participants, 8.0)
        watched = await run_bot(watch)
        cam_summary = await publisher
        assert cam_summary["ok"] and watched["ok"], watched["failed"]
        video = _video_from(watched, cam_summary["id"])
        assert video["frames_decoded"] > 20, video
        stats = pipe_b.stats()
        assert stats["srtp"] and stats["srtp_failed"] == 0 and stats["rtp_in"] > 100, stats
        # a datagram without the key, from A's own address: refused, not imported
        before = pipe_b.importer.packets
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        header = bytes([0x80, 96, 0, 1, 0, 0, 0, 1]) + (0x1234).to_bytes(4, "big")
        address_a = pipe_a.local_address
        pipe_a.connect(("127.0.0.1", 9), pipe_b.key)  # A's bye goes nowhere: B stays open
        await pipe_a.close()  # frees A's port for the stray sender
        sock.bind(address_a)
        sock.sendto(header + b"\x00" * 50, pipe_b.local_address)
        sock.close()
        assert await until(lambda: pipe_b.stats()["srtp_failed"] == 1, 3.0), pipe_b.stats()
        assert pipe_b.importer.packets == before
    finally:
        for pipe in (pipe_a, pipe_b, plain):
            await pipe.close()


async def test_unexporting_a_room_makes_its_remote_publishers_leave(
    two_servers: tuple[RunningServer, RunningServer, PipeTransport, PipeTransport],
) -> None:
    """(As the front does when a worker's last session of a spread room ends, while
    the publishers stay on the other worker.)"""
    a, b, pipe_a, _ = two_servers
    await pipe_a.export_room(ROOM)
    publisher = asyncio.ensure_future(
        run_bot(BotConfig(url=a.url, room=ROOM, name="cam", duration=6.0))
    )
    try:
        assert await until(
            lambda: (
                ROOM in b.sfu.rooms
                and any(len(p.tracks) == 2 for p in b.sfu.rooms[ROOM].participants.values())
            ),
            8.0,
        )
        pipe_a.unexport_room(ROOM)
        # gone from B (not left there as a participant without tracks); still on A
        assert await until(lambda: ROOM not in b.sfu.rooms, 3.0), b.sfu.rooms
        assert len(a.sfu.rooms[ROOM].participants) == 1
        assert pipe_a.stats()["exported_tracks"] == 0
    finally:
        assert (await publisher)["ok"]
