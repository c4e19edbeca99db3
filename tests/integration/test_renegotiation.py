"""A publisher renegotiates: tracks added and removed later reach the others' subscriptions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from loadgen.bot import BotConfig, run_bot
from loadgen.media.synthetic import PatternTrack, ToneTrack
from sfu.aiortc_adapter import create_peer_connection
from sfu.config import IceConfig

from .conftest import RunningServer


async def _receive(ws: aiohttp.ClientWebSocketResponse, wanted: str) -> dict[str, Any]:
    while True:
        data = json.loads((await ws.receive(timeout=10)).data)
        if data["type"] == wanted:
            return data


async def _publish(ws: aiohttp.ClientWebSocketResponse, pc: Any) -> dict[str, Any]:
    await pc.setLocalDescription(await pc.createOffer())
    await ws.send_json({"type": "publish_offer", "sdp": pc.localDescription.sdp})
    answer = await _receive(ws, "publish_answer")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return answer


async def test_tracks_added_and_removed_by_renegotiation(server: RunningServer) -> None:
    watcher = asyncio.ensure_future(
        run_bot(
            BotConfig(url=server.url, room="reneg", name="watcher", duration=14.0, publish=False)
        )
    )
    pc = create_peer_connection(IceConfig())
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
            await ws.send_json({"type": "join", "room": "reneg", "name": "changer"})
            joined = await _receive(ws, "joined")
            # 1. audio only
            pc.addTransceiver(ToneTrack(), direction="sendonly")
            first = await _publish(ws, pc)
            assert [t["kind"] for t in first["tracks"]] == ["audio"]
            await asyncio.sleep(3.0)
            # 2. add video: the audio track keeps its id, a video track appears
            video = pc.addTransceiver(PatternTrack(), direction="sendonly")
            second = await _publish(ws, pc)
            kinds = {t["kind"]: t["id"] for t in second["tracks"]}
            assert sorted(kinds) == ["audio", "video"]
            assert kinds["audio"] == first["tracks"][0]["id"]
            await asyncio.sleep(4.0)
            # 3. stop sending video: it is unpublished, audio goes on
            video.direction = "inactive"
            third = await _publish(ws, pc)
            assert [t["kind"] for t in third["tracks"]] == ["audio"]
            room = server.sfu.rooms["reneg"]
            watcher_participant = next(p for p in room.participants.values() if p.name == "watcher")
            subscribed = {s.track.kind for s in watcher_participant.subscriptions.values()}
            assert subscribed == {"audio"}
            summary = await watcher
    finally:
        await pc.close()

    assert summary["ok"], summary
    from_changer = [t for t in summary["tracks"] if t["participant"] == joined["id"]]
    by_kind = {t["kind"]: t for t in from_changer}
    assert set(by_kind) == {"audio", "video"}
    assert by_kind["audio"]["frames_decoded"] > 100
    assert by_kind["video"]["frames_decoded"] > 15  # decoded while it was published
    events = [
        (e["type"], e.get("kind"))
        for e in summary["events"]
        if e.get("participant") == joined["id"]
    ]
    assert ("track_published", "video") in events
    assert "track_unpublished" in [e for e, _ in events]
