"""Every limit refused with its code, through the websocket of a real server: room_full,
too_many_rooms, too_many_tracks, rate_limited (joins per address, messages per
connection, then the close after sustained abuse), one subscribe offer outstanding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from loadgen.media.synthetic import PatternTrack, ToneTrack
from sfu.aiortc_adapter import create_peer_connection
from sfu.config import IceConfig, SfuConfig
from signaling.limits import Limits
from signaling.server import ServerConfig

from ._clients import Client
from .conftest import ServerFactory


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    """``await connect(url, answer=False)``: connected clients, closed afterwards."""
    opened: list[Client] = []
    async with aiohttp.ClientSession() as http:

        async def connect(url: str, answer: bool = False) -> Client:
            client = await Client(http, url, answer=answer).connect()
            opened.append(client)
            return client

        try:
            yield connect
        finally:
            for client in opened:
                await client.close()


async def _join_error(client: Client, room: str, name: str) -> dict[str, Any]:
    await client.send({"type": "join", "room": room, "name": name, "request_id": name})
    reply = await _first(client, ("joined", "error"))
    assert reply["type"] == "error", reply
    assert reply["request"] == "join" and reply["request_id"] == name
    return reply


async def _first(client: Client, types: tuple[str, ...], after: int = 0) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            for message in client.messages[after:]:
                if message["type"] in types:
                    return message
            assert not client.ended.is_set(), client.messages
            await asyncio.sleep(0.02)


async def test_room_full_and_too_many_rooms(
    server_factory: ServerFactory, clients: Callable[..., Any]
) -> None:
    server = await server_factory(
        ServerConfig(limits=Limits(max_participants_per_room=2, max_rooms=2))
    )
    a, b, c, d = [await clients(server.url) for _ in range(4)]
    await a.join("one", "a")
    await b.join("one", "b")
    refused = await _join_error(c, "one", "c")
    assert refused["code"] == "room_full" and "full" in refused["message"]
    await c.join("two", "c")  # the same client, another room: admitted
    refused = await _join_error(d, "three", "d")
    assert refused["code"] == "too_many_rooms"
    assert sorted(server.sfu.rooms) == ["one", "two"]
    await a.send({"type": "leave"})
    await a.wait_for("left")
    await d.join("one", "d")  # a seat came free


async def test_too_many_tracks(server_factory: ServerFactory, clients: Callable[..., Any]) -> None:
    server = await server_factory(ServerConfig(limits=Limits(max_tracks_per_participant=1)))
    client = await clients(server.url)
    await client.join("tracks", "pub")
    pc = create_peer_connection(IceConfig())
    try:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
        pc.addTransceiver(PatternTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await client.send(
            {"type": "publish_offer", "sdp": pc.localDescription.sdp, "request_id": 7}
        )
        reply = await _first(client, ("publish_answer", "error"))
        assert reply["type"] == "error" and reply["code"] == "too_many_tracks", reply
        assert reply["request"] == "publish_offer" and reply["request_id"] == 7
        assert "2 tracks" in reply["message"]
        assert not server.sfu.rooms["tracks"].participants[client.messages[0]["id"]].tracks
    finally:
        await pc.close()
    pc = create_peer_connection(IceConfig())  # one track is within the limit
    try:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await client.send({"type": "publish_offer", "sdp": pc.localDescription.sdp})
        answer = await client.wait_for("publish_answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert len(answer["tracks"]) == 1
    finally:
        await pc.close()


async def test_joins_per_address_are_rate_limited(
    server_factory: ServerFactory, clients: Callable[..., Any]
) -> None:
    server = await server_factory(ServerConfig(limits=Limits(join_rate=1.0, join_burst=2)))
    first, second, third = [await clients(server.url) for _ in range(3)]
    await first.join("r", "a")
    await second.join("r", "b")
    refused = await _join_error(third, "r", "c")
    assert refused["code"] == "rate_limited" and "127.0.0.1" in refused["message"]
    await asyncio.sleep(1.1)  # a token came back: the same client may join now
    await third.join("r", "c")


async def test_messages_over_the_rate_are_refused_then_the_connection_closed(
    server_factory: ServerFactory, clients: Callable[..., Any]
) -> None:
    limits = Limits(message_rate=2.0, message_burst=5, max_refused_messages=3)
    server = await server_factory(ServerConfig(limits=limits))
    polite, flooder = await clients(server.url), await clients(server.url)
    for i in range(20):
        await flooder.send({"type": "ping", "request_id": i})
    async with asyncio.timeout(10):
        await flooder.ended.wait()
    types = [(msg["type"], msg.get("code")) for msg in flooder.messages]
    assert types == [("pong", None)] * 5 + [("error", "rate_limited")] * 4, types
    assert "closing" in flooder.messages[-1]["message"]
    assert flooder.close_code == 1008
    # pings at the rate on another connection all get their pong
    for i in range(4):
        await polite.send({"type": "ping", "request_id": i})
        await asyncio.sleep(0.5)
    await _first(polite, ("pong",), after=3)
    assert [m["type"] for m in polite.messages] == ["pong"] * 4


async def test_one_subscribe_offer_outstanding_then_the_silent_subscriber_is_removed(
    server_factory: ServerFactory, clients: Callable[..., Any]
) -> None:
    server = await server_factory(ServerConfig(sfu=SfuConfig(subscribe_answer_timeout=3.0)))
    silent = await clients(server.url)  # never answers a subscribe_offer
    await silent.join("offers", "silent")
    first, second = await clients(server.url), await clients(server.url)
    await first.join("offers", "first")
    await first.publish()
    await silent.wait_for("subscribe_offer")
    await second.join("offers", "second")
    await second.publish()  # more tracks while the first offer is unanswered
    left = await silent.wait_for("left", timeout=15)
    assert left["reason"] == "no subscribe_answer within 3 s"
    offers = [m for m in silent.messages if m["type"] == "subscribe_offer"]
    published = [m for m in silent.messages if m["type"] == "track_published"]
    assert len(published) == 4 and len(offers) == 1, [m["type"] for m in silent.messages]
    assert json.dumps(offers[0]).count('"track"') == 2  # the first publisher's tracks only
