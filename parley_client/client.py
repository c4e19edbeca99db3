""":class:`ProtocolClient`: one websocket session of Parley's protocol.

Every frame the server sends is parsed with :func:`signaling.messages.parse_server_message`
and handed, in order, to ``on_message``; a frame that breaks the protocol goes to
``on_invalid`` instead. A request (``join``, ``publish_offer``, ``leave``, ``ping``) carries
a ``request_id`` of the client's own; its reply (or an ``error`` naming that id) resolves
the request's future *after* ``on_message`` has seen it, so a caller awaiting
:meth:`ProtocolClient.join` finds its own bookkeeping of ``joined`` already done.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from signaling.messages import (
    ClientMessage,
    ErrorMessage,
    Join,
    Joined,
    Leave,
    Left,
    Ping,
    Pong,
    ProtocolError,
    PublishAnswer,
    PublishOffer,
    Redirect,
    RequestId,
    ServerMessage,
    ServerShutdown,
    SetLayer,
    SubscribeAnswer,
    parse_server_message,
    serialize,
)

logger = logging.getLogger(__name__)

#: Called with every valid server message, in order; may be a coroutine function.
MessageHandler = Callable[[ServerMessage], Awaitable[None] | None]
#: Called with the error of every frame that is not a valid server message.
InvalidHandler = Callable[[ProtocolError], None]

_Reply = TypeVar("_Reply", Joined, PublishAnswer, Left, Pong)

#: reply type -> the request it answers
_REPLY_TO = {
    Joined.type: Join.type,
    Redirect.type: Join.type,
    PublishAnswer.type: PublishOffer.type,
    Left.type: Leave.type,
    Pong.type: Ping.type,
}


class RequestFailed(Exception):
    """The server answered a request with ``error``; ``error`` is that message."""

    def __init__(self, error: ErrorMessage) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class Redirected(Exception):
    """The server answered ``join`` with ``redirect``: another node serves the room.
    Close this client and join through ``base_url`` (what :class:`ProtocolClient` takes)."""

    def __init__(self, redirect: Redirect) -> None:
        super().__init__(f"room {redirect.room} is served at {redirect.url}")
        self.redirect = redirect

    @property
    def base_url(self) -> str:
        return base_url(self.redirect.url)


def base_url(ws_url: str) -> str:
    """``ws://host:port/ws`` -> ``ws://host:port`` (the URL :class:`ProtocolClient` takes)."""
    return ws_url[: -len("/ws")] if ws_url.endswith("/ws") else ws_url


class ClientClosed(ConnectionError):
    """The websocket closed before the reply came."""


class ProtocolClient:
    """Parley's protocol over ``{url}/ws``: connect, requests, and a read loop.

    ``heartbeat``: ping the websocket this often (s) and give up after half as long
    without a pong (``None``: never). ``close()`` is idempotent; ``closed`` is set when
    the websocket is gone for any reason, ``close_code`` then says how it closed.
    """

    def __init__(
        self,
        url: str,
        *,
        on_message: MessageHandler | None = None,
        on_invalid: InvalidHandler | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self.ws_url = url.rstrip("/") + "/ws"
        self.on_message = on_message
        self.on_invalid = on_invalid
        self.heartbeat = heartbeat
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        #: The ``server_shutdown`` the server sent, if it did.
        self.server_shutdown: ServerShutdown | None = None
        #: The ``redirect`` that answered ``join``, if one did (the server closes next).
        self.redirect: Redirect | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        #: request_id -> (request type, future of its reply)
        self._pending: dict[RequestId, tuple[str, asyncio.Future[ServerMessage]]] = {}

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed and not self.closed.is_set()

    async def connect(self, timeout: float) -> None:
        """Open the websocket (``TimeoutError`` after ``timeout`` s) and start reading."""
        if self._ws is not None:
            raise RuntimeError("already connected")
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await asyncio.wait_for(
                self._http.ws_connect(
                    self.ws_url, autoping=True, heartbeat=self.heartbeat, max_msg_size=0
                ),
                timeout,
            )
        except BaseException:
            await self._http.close()
            self._http = None
            raise
        self._reader = asyncio.ensure_future(self._read())

    # ------------------------------------------------------------------ requests

    async def join(self, room: str, name: str, timeout: float, token: str | None = None) -> Joined:
        """``join``; returns ``joined`` or raises :class:`Redirected` (another node serves
        the room), :class:`RequestFailed`, ``TimeoutError`` or :class:`ClientClosed`."""
        request_id = self._next_id("join")
        reply = await self._request(Join(room, name, token, request_id), timeout)
        if isinstance(reply, Redirect):
            raise Redirected(reply)
        return _expect(reply, Joined)

    async def publish(self, sdp: str, timeout: float) -> PublishAnswer:
        """``publish_offer``; returns the ``publish_answer``."""
        request_id = self._next_id("publish_offer")
        reply = await self._request(PublishOffer(sdp, request_id), timeout)
        return _expect(reply, PublishAnswer)

    async def answer(self, sdp: str) -> None:
        """``subscribe_answer`` to the server's last ``subscribe_offer`` (no reply)."""
        await self.send(SubscribeAnswer(sdp))

    async def set_layer(
        self,
        track: str,
        *,
        max_height: int | None = None,
        max_width: int | None = None,
        paused: bool | None = None,
        request_id: RequestId | None = None,
    ) -> None:
        """``set_layer`` (no reply; an ``error`` for it reaches ``on_message``)."""
        await self.send(SetLayer(track, max_height, paused, request_id, max_width))

    async def ping(self, timeout: float) -> Pong:
        reply = await self._request(Ping(self._next_id("ping")), timeout)
        return _expect(reply, Pong)

    async def leave(self, timeout: float) -> Left | None:
        """``leave`` and wait for ``left``; ``None`` if the websocket closed first."""
        try:
            reply = await self._request(Leave(self._next_id("leave")), timeout)
        except ClientClosed:
            return None
        return _expect(reply, Left)

    async def send(self, message: ClientMessage) -> None:
        """Send one message; raises :class:`ClientClosed` when not connected."""
        ws = self._ws
        if ws is None or ws.closed:
            raise ClientClosed("not connected")
        async with self._send_lock:
            try:
                await ws.send_str(serialize(message))
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                raise ClientClosed(f"send failed: {exc}") from exc

    def _next_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    async def _request(self, message: ClientMessage, timeout: float) -> ServerMessage:
        request_id = getattr(message, "request_id", None)
        assert request_id is not None
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (message.type, future)
        try:
            if self.closed.is_set():
                raise ClientClosed("websocket closed")
            await self.send(message)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._pending.pop(request_id, None)

    # ------------------------------------------------------------------ reading

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = parse_server_message(frame.data)
                except ProtocolError as exc:
                    if self.on_invalid is not None:
                        self.on_invalid(exc)
                    continue
                if isinstance(message, ServerShutdown):
                    self.server_shutdown = message
                elif isinstance(message, Redirect):
                    self.redirect = message
                await self._deliver(message)
                self._resolve(message)
        finally:
            self.close_code = ws.close_code
            self.closed.set()
            for _, future in self._pending.values():
                if not future.done():
                    future.set_exception(ClientClosed(f"websocket closed (code {ws.close_code})"))

    async def _deliver(self, message: ServerMessage) -> None:
        if self.on_message is None:
            return
        try:
            result = self.on_message(message)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handling %s failed", message.type)

    def answers_request(self, message: ServerMessage) -> bool:
        """Whether ``message`` is the reply (or error) of a request still awaited: it then
        resolves that request right after ``on_message`` returns."""
        pending = self._pending_for(message)
        return pending is not None and not pending[1].done()

    def _pending_for(
        self, message: ServerMessage
    ) -> tuple[str, asyncio.Future[ServerMessage]] | None:
        request_id = getattr(message, "request_id", None)
        if request_id is not None:
            return self._pending.get(request_id)
        # a reply without the id (a server that does not echo it, or an error it could not
        # tie to one): the oldest request of the type it answers
        request = (
            message.request if isinstance(message, ErrorMessage) else _REPLY_TO.get(message.type)
        )
        return next((p for p in self._pending.values() if p[0] == request), None)

    def _resolve(self, message: ServerMessage) -> None:
        pending = self._pending_for(message)
        if pending is None or pending[1].done():
            return
        if isinstance(message, ErrorMessage):
            pending[1].set_exception(RequestFailed(message))
        else:
            pending[1].set_result(message)

    async def close(self) -> None:
        """Stop reading and close the websocket. Idempotent; does not send ``leave``."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self.closed.set()


def _expect(reply: ServerMessage, kind: type[_Reply]) -> _Reply:
    if not isinstance(reply, kind):
        raise ProtocolError("invalid_field", f"expected {kind.type}, got {reply.type}")
    return reply
