"""One client's signaling through the front: read its ``join``, place the room, relay.

Before the join the front answers what a worker would (``pong``, protocol errors,
``wrong_state``, the join timeout, the message rate); the ``join`` is forwarded to the
room's owner over an internal websocket, and from then on frames are relayed unchanged
both ways (media does not pass here: the worker's ICE candidates are in its SDP). Until
the worker says ``joined``, another ``join`` for a different room is refused (the
connection belongs to the first room's worker). A close frame from the worker is passed
on with its code; a worker connection that breaks without one (the worker died) is told
to the client as ``server_shutdown`` (rejoin at once); the rejoin places the room on a live
worker (the dead one is out of placement as soon as its process exit is seen, and a
failed connect forgets the room's owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import aiohttp
from aiohttp import WSMsgType, web

from signaling import messages as m
from signaling.drain import DRAINING_CLOSE_CODE
from signaling.limits import RATE_CLOSE_CODE, MessageGate
from signaling.server import ServerConfig

from .placement import Placement, Target

logger = logging.getLogger(__name__)

#: ``server_shutdown``'s reason when the worker owning the room died
WORKER_LOST_REASON = "the room's worker stopped; rejoin to continue on another"
#: How long a join keeps trying to reach a worker (the owner may be restarting).
CONNECT_PATIENCE = 3.0
#: How long one attempt to open a worker's websocket may take.
CONNECT_TIMEOUT = 2.0
#: Headers telling a worker the client's address (honoured with the front's key).
FORWARDED_FOR = "X-Forwarded-For"
FRONT_KEY_HEADER = "X-Parley-Front-Key"

Ending = Literal["client", "worker", "worker_lost", "shutdown"]


def first_message(raw: str | bytes, max_bytes: int) -> m.ClientMessage:
    """A frame before the join, validated as a worker would (ProtocolError if bad)."""
    return m.parse_client_message(raw, max_bytes)


def is_joined(raw: str | bytes) -> bool:
    """Whether a worker's frame is ``joined`` (cheap test first: most frames are not)."""
    text = raw if isinstance(raw, str) else raw.decode(errors="replace")
    if '"joined"' not in text:
        return False
    with contextlib.suppress(ValueError):
        value = json.loads(text)
        return isinstance(value, dict) and value.get("type") == "joined"
    return False


class Relay:
    """The websocket of one client at the front, and its connection to the worker."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        config: ServerConfig,
        placement: Placement,
        http: aiohttp.ClientSession,
        front_key: str,
        on_attach: Callable[[Relay], None],
    ) -> None:
        self.ws = ws
        self.request = request
        self.config = config
        self.placement = placement
        self.http = http
        self.front_key = front_key
        self.on_attach = on_attach
        self.upstream: aiohttp.ClientWebSocketResponse | None = None
        self.target: Target | None = None
        self.room: str | None = None
        self.joined = False
        self.ending: Ending | None = None
        self._pumps: list[asyncio.Task[None]] = []
        #: whether the front drains (``parley serve --drain-timeout``): joins are refused
        self.draining: Callable[[], bool] = lambda: False
        #: with ``--redis``: the URL of the node serving a room (the join is answered
        #: ``redirect``), None to serve it here (``RedisNode.route``)
        self.route: Callable[[str], Awaitable[str | None]] | None = None

    async def _send(self, message: m.ServerMessage) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(m.serialize(message))

    async def _error(self, code: str, text: str, request: str | None = None,
                     request_id: m.RequestId | None = None) -> None:  # fmt: skip
        await self._send(m.ErrorMessage(code, text, request, request_id))  # type: ignore[arg-type]

    # ------------------------------------------------------------ before the join

    async def run(self) -> None:
        try:
            if await self._until_join():
                await self._relay()
        finally:
            if self.upstream is not None and not self.upstream.closed:
                with contextlib.suppress(Exception):
                    await self.upstream.close()

    async def _until_join(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.join_timeout
        gate = MessageGate(self.config.limits, loop.time())
        while not self.ws.closed:
            try:
                msg = await self.ws.receive(timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                await self._error("wrong_state", "join timeout: send join first")
                return False
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return False
            verdict = gate.admit(loop.time())
            if verdict != "ok":
                await self._error("rate_limited", "too many messages: this one was dropped")
                if verdict == "close":
                    await self.ws.close(code=RATE_CLOSE_CODE, message=b"message rate exceeded")
                    return False
                continue
            try:
                message = first_message(msg.data, self.config.max_message_bytes)
            except m.ProtocolError as exc:
                await self._send(exc.to_message())
                if exc.code == "too_large":
                    await self.ws.close(code=m.TOO_LARGE_CLOSE_CODE, message=b"message too large")
                    return False
                continue
            if isinstance(message, m.Ping):
                await self._send(m.Pong(request_id=message.request_id))
            elif (
                isinstance(message, m.Join)
                and self.route is not None
                and (url := await self.route(message.room))
            ):  # another node of the cluster serves the room (as a single node answers)
                await self._send(m.Redirect(url=url, room=message.room,
                                            request_id=message.request_id))  # fmt: skip
                await self.ws.close()
                return False
            elif isinstance(message, m.Join) and self.draining():
                await self._error("server_draining", self.config.drain.refusal, "join",
                                  message.request_id)  # fmt: skip
                await self.ws.close(code=DRAINING_CLOSE_CODE, message=b"server draining")
                return False
            elif isinstance(message, m.Join):
                return await self._connect(message.room, msg.data)
            else:
                text = f"{message.type} needs a joined session"
                await self._error("wrong_state", text, message.type, message.request_id)
        return False

    async def _connect(self, room: str, join: str | bytes) -> bool:
        """Open the worker's websocket for ``room`` and send it the join."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CONNECT_PATIENCE
        headers = {FORWARDED_FOR: self.request.remote or "", FRONT_KEY_HEADER: self.front_key}
        while True:
            target: Target | None = None
            try:
                target = await self.placement.place(room)
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    self.upstream = await self.http.ws_connect(
                        target.ws_url, headers=headers, max_msg_size=0, autoping=True
                    )
                break
            except Exception as exc:  # no live worker, or it died / is restarting
                if target is not None:  # place the room anew on the next attempt
                    await self.placement.forget(room, target)
                if loop.time() > give_up:
                    logger.warning("no worker reachable for room %r: %r", room, exc)
                    await self._send(m.ServerShutdown("no worker is available", 1000))
                    await self.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                    return False
                await asyncio.sleep(0.1)
        self.target, self.room = target, room
        self.on_attach(self)
        if isinstance(join, str):
            await self.upstream.send_str(join)
        else:
            await self.upstream.send_bytes(join)
        return True

    # ------------------------------------------------------------ relaying

    async def _relay(self) -> None:
        self._pumps = [
            asyncio.ensure_future(self._client_to_worker()),
            asyncio.ensure_future(self._worker_to_client()),
        ]
        await asyncio.wait(self._pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self.ending == "worker_lost":
            # the room is not forgotten here: one broken connection is no proof that its
            # worker died (the supervisor says so, or a failed connect; the front forgets
            # a room with its last session), and a room must not be split
            await self._send(m.ServerShutdown(WORKER_LOST_REASON, 0))
            with contextlib.suppress(Exception):
                await self.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"worker lost")

    async def _client_to_worker(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        async for msg in self.ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    if not self.joined and self._other_room(msg.data):
                        await self._error("wrong_state", "this connection joins room "
                                          f"{self.room!r}: open another to join a different "
                                          "room", "join")  # fmt: skip
                        continue
                    await upstream.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await upstream.send_bytes(msg.data)
            except (ConnectionError, RuntimeError):  # the worker's side broke: it died
                if self.ending is None:
                    self.ending = "worker_lost"
                return
        if self.ending is None:
            self.ending = "client"

    def _other_room(self, raw: str) -> bool:
        with contextlib.suppress(m.ProtocolError):
            message = m.parse_client_message(raw, self.config.max_message_bytes)
            return isinstance(message, m.Join) and message.room != self.room
        return False

    async def _worker_to_client(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        while True:
            msg = await upstream.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                if msg.type == WSMsgType.TEXT and not self.joined and is_joined(msg.data):
                    self.joined = True
                try:
                    if msg.type == WSMsgType.TEXT:
                        await self.ws.send_str(msg.data)
                    else:
                        await self.ws.send_bytes(msg.data)
                except (ConnectionError, RuntimeError):  # the client is gone
                    if self.ending is None:
                        self.ending = "client"
                    return
            elif msg.type == WSMsgType.CLOSE:  # the worker ended the session: pass it on
                if self.ending is None:
                    self.ending = "worker"
                extra = msg.extra.encode() if isinstance(msg.extra, str) else b""
                with contextlib.suppress(Exception):
                    await self.ws.close(code=int(msg.data), message=extra)
                return
            else:  # CLOSED / ERROR without a close frame: the worker is gone
                if self.ending is None:
                    self.ending = "worker_lost"
                return

    async def shutdown(self, reason: str, retry_after_ms: int, grace: float) -> None:
        """The front stops: ``server_shutdown``, close (1001), end the worker session."""
        self.ending = "shutdown"
        for task in self._pumps:
            task.cancel()
        await self._send(m.ServerShutdown(reason, retry_after_ms))
        try:
            async with asyncio.timeout(grace):
                with contextlib.suppress(Exception):
                    await self.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY,
                                        message=b"server shutdown")  # fmt: skip
        except TimeoutError:
            if self.request.transport is not None:
                self.request.transport.close()
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.close()
