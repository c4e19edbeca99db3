"""How a load bot talks to a server: one :class:`ServerSession` per bot.

The bots of :mod:`loadgen.load.bots` only need four things from a server's signaling:
join a room, publish an offer and get the answer, answer the server's offers for what
to receive, and ask for a layer. :class:`ParleySession` does it with Parley's protocol
(``docs/protocol.md``); :class:`loadgen.load.janus.JanusSession` with Janus's VideoRoom.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from loadgen.load.nodes import http_url
from parley_client import ClientClosed, ProtocolClient, Redirected, RequestFailed
from sfu.config import IceServer
from signaling.messages import ErrorMessage, Joined, Layer, Leave, ServerMessage, SubscribeOffer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OfferedTrack:
    """One remote track of a subscribe offer."""

    track: str
    kind: str
    mid: str


#: The bot's answer to a server offer: (offer SDP, its tracks) -> answer SDP.
OfferHandler = Callable[[str, list[OfferedTrack]], Awaitable[str]]


class ServerSession:
    """The signaling of one bot. Subclasses implement a server's protocol."""

    def __init__(self, url: str, on_offer: OfferHandler) -> None:
        self.url = url
        self.on_offer = on_offer
        self.ice_servers: tuple[IceServer, ...] = ()
        self.closed = asyncio.Event()
        self.errors: list[str] = []
        #: Set by the bot when it starts leaving: the server hanging up is expected then.
        self.stopping = False
        #: What the server said it forwards (Parley's ``layer`` messages), in order:
        #: ``(time.monotonic(), track, rid, paused)``.
        self.layer_events: list[tuple[float, str, str | None, bool]] = []
        #: called with (track, rid, paused) for each ``layer`` message
        self.on_layer: Callable[[str, str | None, bool], None] | None = None
        #: the join token (a server with an API secret wants one)
        self.token: str | None = None
        #: the node the bot joined at, after any redirect (``http://host:port``)
        self.node_url: str | None = None
        #: told the join's signaling phases as they happen (``ws_open``, ``joined``)
        self.on_phase: Callable[[str], None] = lambda phase: None

    async def join(self, room: str, name: str, publisher: bool, timeout: float) -> None:
        """Join ``room``; raise on refusal or timeout. Subscribers then get offers."""
        raise NotImplementedError

    async def publish(self, sdp: str, timeout: float) -> str:
        """Send the publish offer; return the answer's SDP."""
        raise NotImplementedError

    async def set_layer(self, track: OfferedTrack, max_height: int) -> None:
        """Ask for at most ``max_height`` pixels of height of a simulcast track."""

    def drop_reason(self) -> str:
        """Why the connection ended (after :attr:`closed`)."""
        return "the server closed the connection"

    async def close(self) -> None:
        """Leave (when joined) and close the connection. Idempotent."""
        raise NotImplementedError


class WebSocketJson:
    """A websocket carrying JSON objects: a read loop hands each to ``on_message``."""

    def __init__(
        self, url: str, on_message: Callable[[dict[str, Any]], Awaitable[None]], protocol: str = ""
    ) -> None:
        self.url = url
        self.protocol = protocol
        self._on_message = on_message
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.closed = asyncio.Event()

    async def connect(self, timeout: float) -> None:
        self._http = aiohttp.ClientSession()
        protocols = (self.protocol,) if self.protocol else ()
        self._ws = await asyncio.wait_for(
            self._http.ws_connect(self.url, protocols=protocols, max_msg_size=0), timeout
        )
        self._reader = asyncio.ensure_future(self._read())

    async def send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        async with self._lock:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await ws.send_str(json.dumps(message))

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    try:
                        await self._on_message(message)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        logger.exception("handling a server message failed")
        finally:
            self.closed.set()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self.closed.set()


#: ``redirect`` answers followed for one join
MAX_REDIRECTS = 3


class ParleySession(ServerSession):
    """Parley's protocol over ``{url}/ws``, through :class:`parley_client.ProtocolClient`."""

    def __init__(self, url: str, on_offer: OfferHandler) -> None:
        super().__init__(url, on_offer)
        self.client = ProtocolClient(url, on_message=self._dispatch)
        self.closed = self.client.closed
        self._is_joined = False

    async def join(self, room: str, name: str, publisher: bool, timeout: float) -> None:
        await self.client.connect(timeout)
        self.on_phase("ws_open")
        try:
            joined = None
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    joined = await self.client.join(room, name, timeout, token=self.token)
                    break
                except Redirected as redirect:
                    # another node of a cluster serves the room (parley serve --redis)
                    await self.client.close()
                    self.client = ProtocolClient(redirect.base_url, on_message=self._dispatch)
                    self.closed = self.client.closed
                    await self.client.connect(timeout)
            if joined is None:
                raise RuntimeError(f"more than {MAX_REDIRECTS} redirects")
        except RequestFailed as exc:
            raise RuntimeError(_error_text(exc.error)) from None
        except ClientClosed:
            raise RuntimeError("websocket closed before joined") from None
        self.ice_servers = joined.ice_servers
        self.node_url = http_url(self.client.ws_url)
        self._is_joined = True

    async def publish(self, sdp: str, timeout: float) -> str:
        try:
            answer = await self.client.publish(sdp, timeout)
        except RequestFailed as exc:
            raise RuntimeError(_error_text(exc.error)) from None
        return answer.sdp

    async def set_layer(self, track: OfferedTrack, max_height: int) -> None:
        with contextlib.suppress(ClientClosed):
            await self.client.set_layer(track.track, max_height=max_height)

    async def _dispatch(self, message: ServerMessage) -> None:
        if isinstance(message, Joined):  # (seen before a subscribe_offer that follows)
            self.on_phase("joined")
        elif isinstance(message, SubscribeOffer):
            tracks = [
                OfferedTrack(info.track, info.kind, mid) for mid, info in message.tracks.items()
            ]
            try:
                answer = await self.on_offer(message.sdp, tracks)
            except Exception:
                if self.stopping:  # the bot leaves or rejoins: its peer connection is closed
                    return
                raise
            with contextlib.suppress(ClientClosed):
                await self.client.answer(answer)
        elif isinstance(message, Layer):
            event = (time.monotonic(), message.track, message.rid, message.paused)
            self.layer_events.append(event)
            if self.on_layer is not None:
                self.on_layer(message.track, message.rid, message.paused)
        elif isinstance(message, ErrorMessage):
            # an error answering join or publish_offer fails that request instead
            if not self.client.answers_request(message) and message.code != "not_found":
                self.errors.append(_error_text(message))

    def drop_reason(self) -> str:
        shutdown = self.client.server_shutdown
        if shutdown is not None:
            return f"server_shutdown: {shutdown.reason}"
        return f"websocket closed (code {self.client.close_code})"

    async def close(self) -> None:
        if self._is_joined and self.client.connected:
            self._is_joined = False
            with contextlib.suppress(ClientClosed):
                await self.client.send(Leave())
        await self.client.close()


def _error_text(error: ErrorMessage) -> str:
    return f"server error {error.code} ({error.request}): {error.message}"
