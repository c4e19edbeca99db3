"""End to end: real server, real aiortc bots over loopback UDP, media decoded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from loadgen.bot import BotConfig, run_bot

from ._wait import until
from .conftest import RunningServer


def _tracks_from(summary: dict[str, Any], participant: str) -> list[dict[str, Any]]:
    return [t for t in summary["tracks"] if t["participant"] == participant]


async def test_three_bots_decode_each_other(server: RunningServer) -> None:
    configs = [
        BotConfig(url=server.url, room="r1", name=n, duration=9.0) for n in ("ann", "bob", "cy")
    ]
    during: list[str] = []

    async def probe() -> None:
        await asyncio.sleep(4.0)
        during.extend(_media_tasks())

    *summaries, _ = await asyncio.gather(*(run_bot(c) for c in configs), probe())
    # the probe does see the SFU's and aiortc's tasks while the call runs...
    assert any("Participant._run" in t for t in during), during
    ids = {s["name"]: s["id"] for s in summaries}
    for summary in summaries:
        assert summary["joined"], summary
        assert summary["errors"] == [], summary["errors"]
        assert summary["ok"], summary
        others = [pid for name, pid in ids.items() if name != summary["name"]]
        for other in others:
            tracks = _tracks_from(summary, other)
            assert sorted(t["kind"] for t in tracks) == ["audio", "video"], tracks
            for t in tracks:
                assert t["frames_decoded"] > 20, t
                assert t["packets"] > 50, t
                assert t["first_frame_ms"] is not None
                if t["kind"] == "video":
                    assert t["resolutions"] == [[320, 240]], t
                    # continuous media: no long freeze once started
                    assert t["max_freeze_ms"] < 1500, t
                # loopback with a healthy SFU loses (almost) nothing
                assert t["packets_lost"] <= max(2, t["packets"] // 100), t
        # nobody receives their own media back
        assert not _tracks_from(summary, summary["id"])
    # ...and once everyone left, the room is gone and nothing lingers
    assert await until(lambda: not server.sfu.rooms, 5.0), server.sfu.rooms
    assert await until(lambda: not _media_tasks(), 5.0), _media_tasks()


def _media_tasks() -> list[str]:
    """Tasks still running code of the SFU or of aiortc/aioice (peer connections, transports)."""
    current = asyncio.current_task()
    out = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        if any(part in where for part in ("/sfu/", "/aiortc/", "/aioice/")):
            out.append(f"{task.get_coro().__qualname__} ({where})")
    return out


async def test_leaver_disappears_from_subscriptions(server: RunningServer) -> None:
    loop = asyncio.get_running_loop()
    stayers = [BotConfig(url=server.url, room="r2", name=n, duration=11.0) for n in ("ann", "bob")]
    leaver = BotConfig(url=server.url, room="r2", name="cy", duration=4.0)
    seen: dict[str, Any] = {}

    async def inspect_after_leave() -> None:
        await asyncio.sleep(7.0)
        room = server.sfu.rooms.get("r2")
        assert room is not None
        seen["participants"] = sorted(p.name for p in room.participants.values())
        seen["subscribed_to"] = {
            p.name: sorted({s.publisher.name for s in p.subscriptions.values()})
            for p in room.participants.values()
        }
        seen["at"] = loop.time()

    results = await asyncio.gather(
        run_bot(stayers[0]), run_bot(stayers[1]), run_bot(leaver), inspect_after_leave()
    )
    summaries = results[:3]
    cy_id = summaries[2]["id"]
    assert seen["participants"] == ["ann", "bob"]
    assert seen["subscribed_to"] == {"ann": ["bob"], "bob": ["ann"]}
    for summary in summaries[:2]:
        assert summary["ok"], summary
        kinds = {
            e["type"]
            for e in summary["events"]
            if e.get("participant") == cy_id or e.get("id") == cy_id
        }
        assert "participant_left" in kinds, summary["events"]
        assert "track_unpublished" in kinds, summary["events"]
        # the leaver's media was received before it left
        for t in _tracks_from(summary, cy_id):
            assert t["frames_decoded"] > 0, t
    assert summaries[2]["left_reason"] in (None, "left"), summaries[2]
    assert await until(lambda: "r2" not in server.sfu.rooms, 5.0)


async def test_killed_bot_is_cleaned_up(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "victim.json"
    victim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        "bot",
        "--url",
        server.url,
        "--room",
        "r3",
        "--name",
        "victim",
        "--duration",
        "60",
        "--json",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    survivor_task = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="r3", name="survivor", duration=14.0))
    )
    try:
        # wait until the victim publishes and the survivor is subscribed to it
        def survivor_subscribed() -> bool:
            room = server.sfu.rooms.get("r3")
            if room is None:
                return False
            by_name = {p.name: p for p in room.participants.values()}
            s = by_name.get("survivor")
            v = by_name.get("victim")
            return bool(s and v and len(v.tracks) == 2 and len(s.subscriptions) == 2)

        assert await until(survivor_subscribed, 10.0)
        await asyncio.sleep(2.0)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()

        def victim_gone() -> bool:
            room = server.sfu.rooms.get("r3")
            return room is not None and [p.name for p in room.participants.values()] == ["survivor"]

        assert await until(victim_gone, 5.0), "killed participant was not removed"
        room = server.sfu.rooms["r3"]
        survivor = next(iter(room.participants.values()))
        assert survivor.subscriptions == {}
        summary = await survivor_task
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
    assert not out.exists()  # it never got to write a summary: it really was killed
    types = [e["type"] for e in summary["events"]]
    assert "participant_left" in types and "track_unpublished" in types
    assert summary["joined"]


async def test_garbage_in_one_room_leaves_another_untouched(server: RunningServer) -> None:
    import aiohttp
    from aiortc import RTCSessionDescription

    from sfu.aiortc_adapter import MediaPort, create_peer_connection, describe_remote_media
    from sfu.config import IceConfig

    errors: list[dict[str, Any]] = []
    survivors_started = asyncio.Event()

    async def vandal() -> None:
        await survivors_started.wait()
        await asyncio.sleep(2.0)
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
            await ws.send_str(json.dumps({"type": "join", "room": "junk", "name": "vandal"}))
            joined = json.loads((await ws.receive()).data)
            assert joined["type"] == "joined"
            # a real publish so the server has an ICE/DTLS endpoint for this participant
            pc = create_peer_connection(IceConfig())
            pc.addTransceiver("audio", direction="sendonly")
            pc.addTransceiver("video", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send_str(json.dumps({"type": "publish_offer", "sdp": pc.localDescription.sdp}))
            answer = json.loads((await ws.receive()).data)
            assert answer["type"] == "publish_answer"
            ports = {
                int(line.split()[5])
                for line in answer["sdp"].splitlines()
                if line.startswith("a=candidate:") and " 127.0.0.1 " in line
            }
            assert ports
            describe_remote_media(answer["sdp"])
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            # authenticated (real SRTP) but malformed RTP on the vandal's announced SSRCs
            assert await until(lambda: pc.connectionState == "connected", 10.0)
            offered = describe_remote_media(pc.localDescription.sdp)
            port = MediaPort(
                pc.getTransceivers()[0].sender.transport, lambda d, t: None, lambda d, t: None
            )

            def evil_rtp(seq: int) -> list[bytes]:
                out: list[bytes] = []
                for media in offered:
                    ssrc = media.ssrcs[0][0].to_bytes(4, "big")
                    for b0, pt, tail in (
                        (0xA0, 96, b"\x01\x02\xff"),  # padding longer than the packet
                        (0x8F, 96, b""),  # 15 CSRCs promised, none there
                        (0x80, 97, b"\x80"),  # VP8 X bit, nothing after
                        (0x80, 97, b"\x90\xc0\x80"),  # truncated picture id
                        (0x80, 97, b""),  # empty payload
                        (0x80, 98, b"\x00"),  # RTX with a 1-byte OSN
                        (0x90, 96, b"\xbe\xde\xff\xff"),  # extension past the end
                    ):
                        out.append(
                            bytes([b0, pt])
                            + (seq & 0xFFFF).to_bytes(2, "big")
                            + b"\x00" * 4
                            + ssrc
                            + tail
                        )
                        seq += 1
                return out

            sent = attempted = 0
            seq = 1000
            for _ in range(50):
                batch = evil_rtp(seq)
                seq += len(batch)
                for packet in batch:
                    # libsrtp itself refuses to protect some of these (bad extension length)
                    attempted += 1
                    sent += port.send(packet)
                await asyncio.sleep(0.01)
            port.close()
            assert sent >= attempted // 2
            vandal_participant = next(iter(server.sfu.rooms["junk"].participants.values()))
            assert await until(lambda: vandal_participant.counters["rtp_malformed"] >= 100, 3.0), (
                vandal_participant.counters
            )
            junk_frames = [
                "{not json",
                "[]",
                json.dumps({"type": "warp_drive"}),
                json.dumps({"type": "publish_offer"}),
                json.dumps({"type": "publish_offer", "sdp": "v=0\r\nthis is not sdp\r\n"}),
                json.dumps({"type": "subscribe_answer", "sdp": "v=0\r\n"}),
                json.dumps({"type": "join", "room": "junk", "name": "again"}),
                json.dumps({"type": "set_layer", "track": "nope", "max_height": 360}),
            ]
            for frame in junk_frames:
                await ws.send_str(frame)
                reply = json.loads((await ws.receive(timeout=5)).data)
                errors.append(reply)
            # raw UDP garbage at the server's media port: random bytes, fake RTP, fake SRTP
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
            )
            payloads = [os.urandom(n) for n in (1, 11, 12, 200, 1200)]
            payloads += [
                bytes([0x80, 0x60]) + os.urandom(200),
                bytes([0x90, 0xC8]) + os.urandom(60),
            ]
            payloads += [bytes([0x16, 0xFE, 0xFD]) + os.urandom(100)]  # DTLS-looking
            for _ in range(200):
                for port in ports:
                    for p in payloads:
                        transport.sendto(p, ("127.0.0.1", port))
                await asyncio.sleep(0.01)
            transport.close()
            # finally an oversized frame: error, then the server closes this websocket
            await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 300_000}))
            reply = await ws.receive(timeout=5)
            errors.append(json.loads(reply.data))
            closing = await ws.receive(timeout=5)
            errors.append({"close": closing.type.name, "code": ws.close_code})
            await pc.close()

    async def start_flag() -> None:
        await asyncio.sleep(1.0)
        survivors_started.set()

    configs = [
        BotConfig(url=server.url, room="calm", name=n, duration=10.0) for n in ("ann", "bob")
    ]
    results = await asyncio.gather(run_bot(configs[0]), run_bot(configs[1]), vandal(), start_flag())
    for summary in results[:2]:
        assert summary["ok"], summary
        assert summary["errors"] == []
        for t in summary["tracks"]:
            assert t["frames_decoded"] > 20, t
            if t["kind"] == "video":
                assert t["max_freeze_ms"] < 1500, t
    codes = [e.get("code") for e in errors[:8]]
    assert codes == [
        "bad_json",
        "not_object",
        "unknown_type",
        "missing_field",
        "bad_sdp",
        "wrong_state",
        "wrong_state",
        "not_found",
    ], errors
    assert errors[8]["code"] == "too_large"
    assert errors[9]["code"] == 1009, errors[9]
    # the vandal's room was cleaned up when its websocket closed
    assert await until(lambda: "junk" not in server.sfu.rooms, 5.0)


async def test_silent_peer_is_removed_by_ice_consent(server_factory: Any, tmp_path: Path) -> None:
    """A peer whose process freezes (websocket still open) is removed when ICE consent fails."""
    from sfu.config import IceConfig, SfuConfig
    from signaling.server import ServerConfig

    config = ServerConfig(sfu=SfuConfig(ice=IceConfig(consent_interval=1.0, consent_failures=3)))
    srv = await server_factory(config)
    frozen = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        "bot",
        "--url",
        srv.url,
        "--room",
        "r4",
        "--name",
        "frozen",
        "--duration",
        "60",
        "--json",
        str(tmp_path / "f.json"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    watcher = asyncio.ensure_future(
        run_bot(BotConfig(url=srv.url, room="r4", name="watcher", duration=16.0))
    )
    try:

        def frozen_publishing() -> bool:
            room = srv.sfu.rooms.get("r4")
            return room is not None and any(
                p.name == "frozen"
                and len(p.tracks) == 2
                and all(t.source.packets for t in p.tracks.values())
                for p in room.participants.values()
            )

        assert await until(frozen_publishing, 10.0)
        frozen_participant = next(
            p for p in srv.sfu.rooms["r4"].participants.values() if p.name == "frozen"
        )
        frozen.send_signal(signal.SIGSTOP)  # alive, socket open, but silent
        assert await until(lambda: frozen_participant.closed, 10.0), "silent peer was not removed"
        assert frozen_participant.close_reason is not None
        assert frozen_participant.close_reason.startswith("peer connection"), (
            frozen_participant.close_reason
        )
        room = srv.sfu.rooms["r4"]
        assert [p.name for p in room.participants.values()] == ["watcher"]
        summary = await watcher
    finally:
        if frozen.returncode is None:
            frozen.send_signal(signal.SIGCONT)
            frozen.kill()
            await frozen.wait()
    assert "participant_left" in [e["type"] for e in summary["events"]]


async def test_lost_packets_are_repaired_from_the_sfu_cache(server: RunningServer) -> None:
    """Drop every 25th video packet on the way to one subscriber: its NACKs are answered as RTX."""
    dropped: list[int] = []
    watched: dict[str, Any] = {}

    async def break_the_link() -> None:
        def ready() -> bool:
            room = server.sfu.rooms.get("r5")
            return room is not None and any(p.name == "lossy" for p in room.participants.values())

        assert await until(ready, 10.0)
        lossy = next(p for p in server.sfu.rooms["r5"].participants.values() if p.name == "lossy")
        watched["participant"] = lossy
        egress = lossy.subscribe_side.egress  # the subscriber's packet sink (sfu/egress.py)
        original = egress.send_video
        counter = {"video": 0}

        def lossy_send(data: bytes, now: float) -> bool:
            # media packets of the video m-line only (payload type of VP8 as negotiated, not RTX)
            forwarders = [
                s.forwarder for s in lossy.subscriptions.values() if s.track.kind == "video"
            ]
            pts = {f.params.payload_type for f in forwarders if f.params is not None}
            if (data[1] & 0x7F) in pts:
                counter["video"] += 1
                if counter["video"] % 25 == 0:
                    dropped.append(int.from_bytes(data[2:4], "big"))
                    return True  # pretend it was sent: it is lost on the "network"
            return original(data, now)

        egress.send_video = lossy_send  # type: ignore[method-assign]
        # the native path (sfu/native.py) sends without calling send_video: keep this
        # subscriber's forwarders on the Python path, where the patch sees every packet
        egress.wire = lambda forwarder: None  # type: ignore[method-assign]
        for sub in lossy.subscriptions.values():
            sub.forwarder.egress = None

    results = await asyncio.gather(
        run_bot(BotConfig(url=server.url, room="r5", name="sender", duration=10.0)),
        run_bot(BotConfig(url=server.url, room="r5", name="lossy", duration=10.0, publish=False)),
        break_the_link(),
    )
    lossy_summary = results[1]
    assert lossy_summary["ok"], lossy_summary
    assert len(dropped) >= 10
    lossy = watched["participant"]
    video = next(t for t in lossy_summary["tracks"] if t["kind"] == "video")
    # every dropped packet was retransmitted: the decoder never stalled for long
    assert video["max_freeze_ms"] < 700, video
    assert video["frames_decoded"] > 80, video
    assert lossy.counters["rtcp_in"] > 0
    assert lossy.counters["nacks_in"] > 0
    assert lossy.counters["rtx_sent"] >= len(dropped) * 0.8, (lossy.counters, len(dropped))


async def test_a_reused_m_line_carries_the_next_publisher(server: RunningServer) -> None:
    """A leaver's subscribe m-lines go inactive and are reused for the next publisher's
    tracks: what they carry must flow (and be configured anew)."""
    watcher = BotConfig(url=server.url, room="reuse", name="watcher", duration=14.0, publish=False)
    first = BotConfig(url=server.url, room="reuse", name="first", duration=3.0)
    second = BotConfig(url=server.url, room="reuse", name="second", duration=7.0)

    async def in_turn() -> tuple[dict[str, Any], dict[str, Any]]:
        await asyncio.sleep(1.0)
        a = await run_bot(first)
        await asyncio.sleep(1.0)
        b = await run_bot(second)
        return a, b

    summary, (a, b) = await asyncio.gather(run_bot(watcher), in_turn())
    mids = {}
    for who in (a, b):
        tracks = _tracks_from(summary, who["id"])
        assert sorted(t["kind"] for t in tracks) == ["audio", "video"], summary["tracks"]
        for t in tracks:
            assert t["frames_decoded"] > 10, (who["name"], t)
            mids.setdefault(who["name"], set()).add(t["mid"])
    assert mids["first"] == mids["second"], mids  # the same m-lines were reused


async def test_a_transport_that_refuses_packets_is_counted_and_lowers_the_estimate(
    server: RunningServer,
) -> None:
    """Once the subscribe transport refuses what it is given (here: its egress closed under
    it), the refused packets are counted and the subscriber's estimate gets a cap, with
    no cap before: the C loop's failures count as an overflow too."""
    seen: dict[str, Any] = {}

    async def break_the_transport() -> None:
        def watcher_flowing() -> bool:
            room = server.sfu.rooms.get("r7")
            if room is None:
                return False
            for p in room.participants.values():
                if p.name == "watcher" and p._sub_port is not None and p._sub_port.egress:
                    subs = p.subscriptions.values()
                    if any(s.forwarder.is_video and s.forwarder.packets_sent > 50 for s in subs):
                        seen["participant"] = p
                        return True
            return False

        assert await until(watcher_flowing, 10.0)
        watcher = seen["participant"]
        assert watcher.bwe.cap is None  # nothing limits this loopback link
        assert watcher.counters["send_failures"] == 0
        watcher._sub_port.egress.close()
        await asyncio.sleep(2.5)  # the per-second accounting runs at least twice
        seen["failures"] = watcher.counters["send_failures"]
        seen["cap"] = watcher.bwe.cap
        seen["native"] = sum(s.forwarder.native_packets for s in watcher.subscriptions.values())

    await asyncio.gather(
        run_bot(BotConfig(url=server.url, room="r7", name="sender", duration=8.0)),
        run_bot(BotConfig(url=server.url, room="r7", name="watcher", duration=8.0, publish=False)),
        break_the_transport(),
    )
    assert seen["failures"] > 20, seen
    assert seen["cap"] is not None, seen
    assert seen["native"] > 0, seen  # the C loop carried the media before
