"""Opus RED and DTX negotiated through a real server: libwebrtc's real publish offer
(tests/fixtures, ``red/48000/2`` with ``a=fmtp:63 111/111``) gets an answer that
prefers RED (and echoes ``usedtx=1`` when offered); a subscriber is offered RED beside
Opus, and an aiortc subscriber, which drops RED from its answer, is accepted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from ._clients import Client
from .conftest import RunningServer

OFFER = Path(__file__).resolve().parents[1] / "fixtures" / "libwebrtc_wrtc_publish_offer.sdp"


def _audio(sdp: str) -> list[str]:
    lines = sdp.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    return lines[start:end]


async def _offer_with(sub: Client, participant: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            for message in sub.messages:
                if message["type"] == "subscribe_offer" and any(
                    t["participant"] == participant for t in message["tracks"].values()
                ):
                    return message
            await asyncio.sleep(0.05)


async def test_red_is_answered_offered_and_declined_per_peer(server: RunningServer) -> None:
    offer = OFFER.read_bytes().decode()
    async with aiohttp.ClientSession() as http:
        sub = await Client(http, server.url, answer=True).connect()
        pub = await Client(http, server.url).connect()
        try:
            await sub.join("red", "sub")
            joined = await pub.join("red", "wrtc")
            await pub.send({"type": "publish_offer", "sdp": offer})
            answer = await pub.wait_for("publish_answer")
            assert len(answer["tracks"]) == 2, answer
            audio = _audio(answer["sdp"])
            assert audio[0].split(" ")[3:5] == ["63", "111"], audio[0]
            assert "a=rtpmap:63 red/48000/2" in audio and "a=fmtp:63 111/111" in audio
            assert not any("usedtx" in line for line in audio)
            # the aiortc subscriber is offered RED beside Opus, answers without it, and
            # the server takes that answer
            sub_offer = await _offer_with(sub, joined["id"])
            sub_audio = _audio(sub_offer["sdp"])
            opus = next(line.split()[0][9:] for line in sub_audio if " opus/48000" in line)
            assert sub_audio[0].split(" ")[3:] == [opus, "63"], sub_audio[0]
            assert f"a=fmtp:63 {opus}/{opus}" in sub_audio
            await asyncio.sleep(0.5)
            assert not [m for m in sub.messages if m["type"] == "error"], sub.messages
            # a publisher that asks for DTX gets usedtx=1 back
            dtx = offer.replace("minptime=10;useinbandfec=1", "minptime=10;useinbandfec=1;usedtx=1")
            pub.messages.clear()
            await pub.send({"type": "publish_offer", "sdp": dtx})
            answer = await pub.wait_for("publish_answer")
            assert any(
                line.startswith("a=fmtp:111 ") and "usedtx=1" in line
                for line in _audio(answer["sdp"])
            ), answer["sdp"]
        finally:
            await pub.close()
            await sub.close()
