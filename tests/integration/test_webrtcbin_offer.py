"""GStreamer webrtcbin's real publish offer (tests/fixtures) through a real server: the
``publish_answer`` lists its bundle-only video as well as its audio (RFC 8843), and
Parley answers ``a=setup:actpass`` with ``a=setup:passive`` (Parley is the DTLS server,
so webrtcbin's RSA certificate serves). Offers that chose their role keep it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import RunningServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OFFER = (FIXTURES / "gstreamer_webrtcbin_publish_offer.sdp").read_text()


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = json.loads((await ws.receive(timeout=10.0)).data)
        if msg["type"] in (kind, "error"):
            return msg


async def _publish(url: str, room: str, sdp: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/ws") as ws:
        await ws.send_json({"type": "join", "room": room, "name": "webrtcbin"})
        assert (await _next(ws, "joined"))["type"] == "joined"
        await ws.send_json({"type": "publish_offer", "sdp": sdp})
        return await _next(ws, "publish_answer")


def _setups(sdp: str) -> list[str]:
    return [line.strip() for line in sdp.splitlines() if line.startswith("a=setup:")]


async def test_the_webrtcbin_offer_publishes_audio_and_video(server: RunningServer) -> None:
    answer = await _publish(server.url, "gst", OFFER)
    assert answer["type"] == "publish_answer", answer
    tracks = sorted((t["kind"], t["mid"]) for t in answer["tracks"])
    assert tracks == [("audio", "audio0"), ("video", "video1")]
    assert _setups(answer["sdp"]) == ["a=setup:passive", "a=setup:passive"]


async def test_an_offer_that_chose_its_dtls_role_keeps_it(server: RunningServer) -> None:
    answer = await _publish(server.url, "p", OFFER.replace("a=setup:actpass", "a=setup:passive"))
    assert answer["type"] == "publish_answer", answer
    assert _setups(answer["sdp"]) == ["a=setup:active", "a=setup:active"]
    answer = await _publish(server.url, "a", OFFER.replace("a=setup:actpass", "a=setup:active"))
    assert answer["type"] == "publish_answer", answer
    assert _setups(answer["sdp"]) == ["a=setup:passive", "a=setup:passive"]
