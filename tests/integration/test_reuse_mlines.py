"""``join`` with ``"reuse_mlines": false``: the server gives each new track a new
subscribe m-line instead of reusing an inactive one (GStreamer's webrtcbin cannot change
a reused m-line's direction). Real server; the subscriber answers with aiortc; the
publishers send webrtcbin's real offer (tests/fixtures), no media is needed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ._clients import Client
from .conftest import RunningServer

OFFER = Path(__file__).resolve().parents[1] / "fixtures" / "gstreamer_webrtcbin_publish_offer.sdp"


async def _offer_with(sub: Client, participant: str) -> dict[str, Any]:
    """The first subscribe_offer that carries a track of ``participant``."""
    async with asyncio.timeout(10):
        while True:
            for message in sub.messages:
                if message["type"] == "subscribe_offer" and any(
                    t["participant"] == participant for t in message["tracks"].values()
                ):
                    return message
            await asyncio.sleep(0.05)


async def _publisher(http: aiohttp.ClientSession, url: str, name: str) -> tuple[Client, str]:
    client = await Client(http, url).connect()
    joined = await client.join("reuse", name)
    await client.send({"type": "publish_offer", "sdp": OFFER.read_text()})
    answer = await client.wait_for("publish_answer")
    assert len(answer["tracks"]) == 2, answer
    return client, joined["id"]


@pytest.mark.parametrize("reuse", [None, False, True])
async def test_a_new_publishers_tracks_get_new_m_lines_without_reuse(
    server: RunningServer, reuse: bool | None
) -> None:
    async with aiohttp.ClientSession() as http:
        sub = await Client(http, server.url, answer=True).connect()
        first = second = None
        try:
            join: dict[str, Any] = {"type": "join", "room": "reuse", "name": "sub"}
            if reuse is not None:
                join["reuse_mlines"] = reuse
            await sub.send(join)
            await sub.wait_for("joined")
            first, first_id = await _publisher(http, server.url, "first")
            offer = await _offer_with(sub, first_id)
            assert sorted(offer["tracks"]) == ["0", "1"]
            await first.close()
            second, second_id = await _publisher(http, server.url, "second")
            offer = await _offer_with(sub, second_id)
            mids = sorted(offer["tracks"])
            if reuse is False:
                assert mids == ["2", "3"], offer["tracks"]  # new m-lines
                sections = offer["sdp"].split("\r\nm=")[1:]
                assert ["a=inactive" in s for s in sections] == [True, True, False, False]
            else:
                assert mids == ["0", "1"], offer["tracks"]  # the inactive ones reused
            assert {t["participant"] for t in offer["tracks"].values()} == {second_id}
        finally:
            for client in (first, second, sub):
                if client is not None:
                    await client.close()
