"""The signaling protocol against the real server, with raw websocket clients."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCRtpSender

from loadgen.bot import BotConfig, run_bot
from sfu.aiortc_adapter import create_peer_connection
from sfu.config import IceConfig, SfuConfig
from signaling.server import ServerConfig

from .conftest import RunningServer


async def _receive_until(
    ws: aiohttp.ClientWebSocketResponse, wanted: str, timeout: float = 10.0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"websocket ended while waiting for {wanted}: {msg.type}")
        data = json.loads(msg.data)
        if data["type"] == wanted:
            return data


async def test_healthz_and_page(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with http.get(f"{server.url}/") as resp:
            assert resp.status == 200
            assert "Parley" in await resp.text()


async def test_messages_before_join_are_wrong_state(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        for frame in (
            {"type": "publish_offer", "sdp": "v=0", "request_id": "a"},
            {"type": "subscribe_answer", "sdp": "v=0"},
            {"type": "leave"},
        ):
            await ws.send_json(frame)
            reply = await ws.receive_json(timeout=5)
            assert reply["type"] == "error" and reply["code"] == "wrong_state", reply
            assert reply["request"] == frame["type"]
        assert reply is not None
        await ws.send_json({"type": "join", "room": "ok", "name": "late"})
        assert (await ws.receive_json(timeout=5))["type"] == "joined"


async def test_unsupported_codec_is_refused_clearly(server: RunningServer) -> None:
    pc = create_peer_connection(IceConfig())
    try:
        transceiver = pc.addTransceiver("video", direction="sendonly")
        h264 = [
            c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"
        ]
        transceiver.setCodecPreferences(h264)
        await pc.setLocalDescription(await pc.createOffer())
        # H.264 is forwarded in packetization-mode 1 only (sfu/rtp/h264.py): mode 0 is not
        offer = pc.localDescription.sdp.replace("packetization-mode=1", "packetization-mode=0")
        assert "packetization-mode=0" in offer
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
            await ws.send_json({"type": "join", "room": "codecs", "name": "h264-mode-0"})
            assert (await ws.receive_json(timeout=5))["type"] == "joined"
            await ws.send_json({"type": "publish_offer", "sdp": offer})
            reply = await ws.receive_json(timeout=5)
            assert reply["type"] == "error"
            assert reply["code"] in ("unsupported_media", "bad_sdp"), reply
            assert "VP8" in reply["message"] or "codec" in reply["message"].lower(), reply
            # nothing was published
            room = server.sfu.rooms["codecs"]
            assert all(not p.tracks for p in room.participants.values())
    finally:
        await pc.close()


async def test_unanswered_subscribe_offer_removes_the_client(server_factory: Any) -> None:
    srv = await server_factory(ServerConfig(sfu=SfuConfig(subscribe_answer_timeout=2.0)))
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{srv.url}/ws") as ws:
        await ws.send_json({"type": "join", "room": "mute", "name": "never-answers"})
        joined = await ws.receive_json(timeout=5)
        publisher = asyncio.ensure_future(
            run_bot(BotConfig(url=srv.url, room="mute", name="pub", duration=8.0))
        )
        offer = await _receive_until(ws, "subscribe_offer")
        assert sorted(t["kind"] for t in offer["tracks"].values()) == ["audio", "video"]
        left = await _receive_until(ws, "left", timeout=6.0)
        assert "subscribe_answer" in left["reason"]
        room = srv.sfu.rooms["mute"]
        assert joined["id"] not in room.participants
        summary = await publisher
    assert summary["ok"]
    assert "participant_left" in [e["type"] for e in summary["events"]]


async def test_leave_is_answered_with_left_and_the_room_goes(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        await ws.send_json({"type": "join", "room": "brief", "name": "visitor"})
        assert (await ws.receive_json(timeout=5))["type"] == "joined"
        assert "brief" in server.sfu.rooms
        await ws.send_json({"type": "leave", "request_id": 9})
        assert await ws.receive_json(timeout=5) == {
            "type": "left",
            "reason": "left",
            "request_id": 9,
        }
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert "brief" not in server.sfu.rooms


async def test_pausing_a_track_stops_its_forwarding(server: RunningServer) -> None:
    """set_layer paused=true stops forwarding that track to this subscriber only."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        await ws.send_json({"type": "join", "room": "pause", "name": "raw"})
        assert (await ws.receive_json(timeout=5))["type"] == "joined"
        publisher = asyncio.ensure_future(
            run_bot(BotConfig(url=server.url, room="pause", name="pub", duration=6.0))
        )
        offer = await _receive_until(ws, "subscribe_offer")
        video = next(t["track"] for t in offer["tracks"].values() if t["kind"] == "video")
        await ws.send_json({"type": "set_layer", "track": video, "paused": True, "request_id": 1})
        await ws.send_json({"type": "set_layer", "track": "nope", "paused": True, "request_id": 2})
        reply = await ws.receive_json(timeout=5)
        assert (
            reply["type"] == "error" and reply["code"] == "not_found" and reply["request_id"] == 2
        )
        room = server.sfu.rooms["pause"]
        raw = next(p for p in room.participants.values() if p.name == "raw")
        assert raw.subscriptions[video].forwarder.paused
        await publisher


async def test_bad_publish_offer_leaves_the_session_usable(server: RunningServer) -> None:
    pc = create_peer_connection(IceConfig())
    try:
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
            await ws.send_json({"type": "join", "room": "retry", "name": "clumsy"})
            assert (await ws.receive_json(timeout=5))["type"] == "joined"
            broken = pc.localDescription.sdp.replace("a=fingerprint:", "a=fingerprint-broken:")
            for sdp in ("v=0\r\nnonsense\r\n", broken[: len(broken) // 2]):
                await ws.send_json({"type": "publish_offer", "sdp": sdp, "request_id": "bad"})
                reply = await ws.receive_json(timeout=5)
                assert reply["type"] == "error" and reply["code"] in (
                    "bad_sdp",
                    "unsupported_media",
                ), reply
                assert reply["request_id"] == "bad"
            await ws.send_json(
                {"type": "publish_offer", "sdp": pc.localDescription.sdp, "request_id": "good"}
            )
            answer = await ws.receive_json(timeout=5)
            assert answer["type"] == "publish_answer" and answer["request_id"] == "good", answer
            assert [t["kind"] for t in answer["tracks"]] == ["audio"]
    finally:
        await pc.close()


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


async def test_simulcast_offers_bad_and_real(server: RunningServer) -> None:
    """Broken simulcast descriptions are refused clearly; Chromium's real offer is
    answered with a=simulcast:recv and announced with its layers."""
    chromium = (FIXTURES / "chromium_simulcast_offer.sdp").read_text()
    bad = {
        "bad_sdp": [
            chromium.replace("a=rid:q send", "a=rid:q/1 send"),
            chromium.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;f recv"),
            chromium.replace("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "urn:x-none"),
        ]
    }
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        await ws.send_json({"type": "join", "room": "sim", "name": "chromium-replay"})
        assert (await ws.receive_json(timeout=5))["type"] == "joined"
        for code, offers in bad.items():
            for sdp in offers:
                await ws.send_json({"type": "publish_offer", "sdp": sdp})
                reply = await ws.receive_json(timeout=5)
                assert reply["type"] == "error" and reply["code"] == code, reply
        await ws.send_json({"type": "publish_offer", "sdp": chromium})
        answer = await ws.receive_json(timeout=10)
        assert answer["type"] == "publish_answer", answer
        sdp = answer["sdp"]
        for line in ("a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f"):
            assert line in sdp, sdp
        assert "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in sdp
        assert "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id" in sdp
        (track,) = answer["tracks"]
        assert track["kind"] == "video"
        participant = next(iter(server.sfu.rooms["sim"].participants.values()))
        assert participant.tracks[track["mid"]].rids == ("q", "h", "f")


async def test_unparseable_sdp_says_which_line(server: RunningServer) -> None:
    """aiortc's parser fails on some lines with a bare assert: the error still names the line."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        await ws.send_json({"type": "join", "room": "sdp", "name": "typo"})
        assert (await ws.receive_json(timeout=5))["type"] == "joined"
        cases = {
            "v=0\r\nm=audio\r\n": "line 2 ('m=audio') is malformed",
            "v=0\r\nc=IN\r\n": "line 2 ('c=IN') is malformed",
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:x cname:y\r\n": (
                "line 3 ('a=ssrc:x cname:y'): invalid literal for int()"
            ),
        }
        for sdp, detail in cases.items():
            await ws.send_json({"type": "publish_offer", "sdp": sdp, "request_id": "typo"})
            reply = await ws.receive_json(timeout=5)
            assert reply["type"] == "error" and reply["code"] == "bad_sdp", reply
            assert reply["message"].startswith("unparseable SDP: " + detail), reply


async def test_static_serves_only_the_page(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        for name in ("app.js", "parley-client.js", "style.css"):
            async with http.get(f"{server.url}/static/{name}") as resp:
                assert resp.status == 200, name
                assert len(await resp.read()) > 100
        for name in ("__init__.py", "__pycache__/", "../signaling/server.py", "", "nope.js"):
            async with http.get(f"{server.url}/static/{name}") as resp:
                assert resp.status == 404, (name, resp.status)
        # everything the page links to is there
        async with http.get(f"{server.url}/") as resp:
            page = await resp.text()
        for link in re.findall(r'(?:src|href)="(static/[^"]+)"', page):
            async with http.get(f"{server.url}/{link}") as resp:
                assert resp.status == 200, link


@pytest.mark.parametrize("broken", ["bundle", "duplicate_mid"])
async def test_offers_with_inconsistent_mids_are_refused(
    server: RunningServer, broken: str
) -> None:
    """Offers whose mids do not add up (found by the fuzz test): a BUNDLE group naming an
    m-line that is not there (it used to get `internal`, and the peer connection's close
    then hung for good), two m-lines with one mid (a track was announced with the other
    kind's codec). Refused as bad_sdp; the session stays usable and can leave."""
    pc = create_peer_connection(IceConfig())
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        lines = pc.localDescription.sdp.split("\r\n")
        if broken == "bundle":
            audio = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
            del lines[audio]  # a=group:BUNDLE 0 1 stays, mid 0 is gone
            expected = "a=group:BUNDLE names mid 0, which no m-line has"
        else:
            lines = [line.replace("a=mid:1", "a=mid:0") for line in lines]
            expected = "two m-lines have mid 0"
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
            await ws.send_json({"type": "join", "room": "bundle", "name": "half"})
            assert (await ws.receive_json(timeout=5))["type"] == "joined"
            await ws.send_json({"type": "publish_offer", "sdp": "\r\n".join(lines)})
            reply = await ws.receive_json(timeout=5)
            assert reply["type"] == "error" and reply["code"] == "bad_sdp", reply
            assert expected in reply["message"], reply
            await ws.send_json({"type": "leave", "request_id": "bye"})
            left = await ws.receive_json(timeout=5)
            assert left == {"type": "left", "reason": "left", "request_id": "bye"}
        assert "bundle" not in server.sfu.rooms
    finally:
        await pc.close()
