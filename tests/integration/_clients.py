"""Signaling clients for tests against a server process: raw websockets and aiortc peers.

:class:`Client` reads its websocket continuously from the moment it connects, keeps every
server message in order, answers ``subscribe_offer`` with a real aiortc peer connection
when asked to, and records how the websocket ended (close code and reason).
:meth:`Client.publish` sends a real tone and test pattern over a publish connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from loadgen.media.synthetic import PatternTrack, ToneTrack
from sfu.aiortc_adapter import create_peer_connection
from sfu.config import IceConfig


class Client:
    """One websocket client; ``messages`` has every server message, in order."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        answer: bool = False,
        ice: IceConfig | None = None,
        ice_from_joined: Callable[[dict[str, Any]], IceConfig] | None = None,
    ) -> None:
        self.http = http
        self.ice = ice if ice is not None else IceConfig()
        #: the ICE configuration taken from ``joined`` (its ``ice_servers``), as the page
        #: does: set while ``joined`` is read, before any offer that follows it is answered
        self.ice_from_joined = ice_from_joined
        self.url = url
        self.answer = answer
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.ended = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._drains: list[asyncio.Task[None]] = []

    async def connect(self) -> Client:
        self.ws = await self.http.ws_connect(f"{self.url}/ws", autoping=True)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    message = json.loads(msg.data)
                    if message["type"] == "joined" and self.ice_from_joined is not None:
                        self.ice = self.ice_from_joined(message)
                    if message["type"] == "subscribe_offer" and self.answer:
                        await self._answer(message)
                    async with self._arrived:
                        self.messages.append(message)
                        self._arrived.notify_all()
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    self.close_code = msg.data
                    self.close_reason = msg.extra or ""
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        finally:
            if self.close_code is None:
                self.close_code = self.ws.close_code
            self.ended.set()
            async with self._arrived:
                self._arrived.notify_all()

    async def wait_for(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first message of ``type_`` (already received or still to come)."""

        def found() -> dict[str, Any] | None:
            return next((m for m in self.messages if m["type"] == type_), None)

        async with asyncio.timeout(timeout), self._arrived:
            while (message := found()) is None:
                if self.ended.is_set():
                    raise AssertionError(f"websocket ended before {type_}: {self.messages}")
                await self._arrived.wait()
        return message

    async def join(self, room: str, name: str) -> dict[str, Any]:
        await self.send({"type": "join", "room": room, "name": name, "request_id": name})
        return await self.wait_for("joined")

    async def publish(self) -> dict[str, Any]:
        """Publish a tone and a 320x240 test pattern over a real publish connection."""
        pc = self.pub_pc = create_peer_connection(self.ice)
        pc.addTransceiver(ToneTrack(), direction="sendonly")
        pc.addTransceiver(PatternTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await self.send({"type": "publish_offer", "sdp": pc.localDescription.sdp})
        answer = await self.wait_for("publish_answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return answer

    async def _answer(self, offer: dict[str, Any]) -> None:
        if self.sub_pc is None:
            self.sub_pc = create_peer_connection(self.ice)
            # aiortc decodes what it receives into an unbounded queue per track: drain it
            self.sub_pc.on("track", self._drain)
        pc = self.sub_pc
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send({"type": "subscribe_answer", "sdp": pc.localDescription.sdp})

    def _drain(self, track: MediaStreamTrack) -> None:
        async def discard() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()

        self._drains.append(asyncio.ensure_future(discard()))

    async def packets_received(self) -> int:
        """RTP packets received so far on the subscribe connection (all tracks)."""
        if self.sub_pc is None:
            return 0
        total = 0
        for receiver in self.sub_pc.getReceivers():
            for stats in (await receiver.getStats()).values():
                if stats.type == "inbound-rtp":
                    total += stats.packetsReceived
        return total

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await pc.close()
        for drain in self._drains:
            drain.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
