"""``parley load --target janus``: the same bots against Janus's VideoRoom plugin.

:class:`JanusSession` speaks the Janus API over its websocket transport (subprotocol
``janus-protocol``): a session and a plugin handle per bot, the room created on first
use (a room name ``load-N`` becomes room ``JANUS_ROOM_BASE + N``), publishers ``join``
then ``publish`` with their offer, subscribers ``join`` as subscribers to every
publishing feed (one multistream handle), answer Janus's offer with ``start``, and pick
a simulcast substream with ``configure``. aiortc does not trickle: the offer and answer
carry the candidates, and the bot sends ``{"completed": true}`` after each.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from typing import Any

from loadgen.load.session import OfferedTrack, OfferHandler, ServerSession, WebSocketJson

JANUS_ROOM_BASE = 4200
KEEPALIVE_S = 20.0
_PLUGIN = "janus.plugin.videoroom"
_ROOM = re.compile(r"(\d+)$")
#: Janus's videoroom error for "room already exists".
_ROOM_EXISTS = 427


def janus_room(room: str) -> int:
    """``load-3`` -> ``JANUS_ROOM_BASE + 3`` (other names hash into a high range)."""
    match = _ROOM.search(room)
    if match:
        return JANUS_ROOM_BASE + int(match.group(1))
    return 10_000 + sum(room.encode()) % 100_000


def substream_for(max_height: int) -> int:
    """Janus's substream index for a height request of the bots' q/h/f layers.

    Janus 1.1.2 reads the RIDs of ``a=simulcast`` as listed high to low, so with the
    bots' (Chromium's) low-to-high order ``q;h;f`` its substream 0 is ``f`` and 2 is
    ``q`` (measured: asking 0 delivered the 720p layer).
    """
    if max_height < 360:
        return 2
    if max_height < 720:
        return 1
    return 0


class JanusError(RuntimeError):
    pass


class JanusSession(ServerSession):
    def __init__(self, url: str, on_offer: OfferHandler) -> None:
        super().__init__(url, on_offer)
        self.ws = WebSocketJson(url, self._dispatch, protocol="janus-protocol")
        self.closed = self.ws.closed
        self.session_id: int | None = None
        self.handle_id: int | None = None
        self.room = 0
        self.feeds: list[int] = []
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._keepalive: asyncio.Task[None] | None = None
        self._timeout = 15.0

    # ---- requests

    async def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return Janus's reply (``success``/``event``; not ``ack``)."""
        transaction = f"t{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future
        message = {**message, "transaction": transaction}
        if self.session_id is not None:
            message.setdefault("session_id", self.session_id)
        try:
            await self.ws.send(message)
            reply = await asyncio.wait_for(future, self._timeout)
        finally:
            self._pending.pop(transaction, None)
        if reply.get("janus") == "error":
            error = reply.get("error", {})
            raise JanusError(f"janus error {error.get('code')}: {error.get('reason')}")
        return reply

    async def _plugin(
        self, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A videoroom request on our handle: (plugin data, jsep or None)."""
        message: dict[str, Any] = {"janus": "message", "handle_id": self.handle_id, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self._call(message)
        data = reply.get("plugindata", {}).get("data", {})
        if "error_code" in data:
            raise JanusError(f"videoroom error {data['error_code']}: {data.get('error')}")
        return data, reply.get("jsep")

    async def _trickle_done(self) -> None:
        await self.ws.send(
            {
                "janus": "trickle",
                "session_id": self.session_id,
                "handle_id": self.handle_id,
                "candidate": {"completed": True},
                "transaction": f"t{next(self._ids)}",
            }
        )

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("janus") == "ack":
            return
        transaction = message.get("transaction")
        future = self._pending.get(transaction) if isinstance(transaction, str) else None
        if future is not None and not future.done():
            future.set_result(message)
            return
        if message.get("janus") == "hangup" and not self.stopping:
            self.errors.append(f"janus hangup: {message.get('reason')}")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            await self.ws.send(
                {
                    "janus": "keepalive",
                    "session_id": self.session_id,
                    "transaction": f"t{next(self._ids)}",
                }
            )

    # ---- ServerSession

    async def join(self, room: str, name: str, publisher: bool, timeout: float) -> None:
        self._timeout = timeout
        await self.ws.connect(timeout)
        self.on_phase("ws_open")
        created = await self._call({"janus": "create"})
        self.session_id = int(created["data"]["id"])
        self._keepalive = asyncio.ensure_future(self._keep_alive())
        attached = await self._call({"janus": "attach", "plugin": _PLUGIN})
        self.handle_id = int(attached["data"]["id"])
        self.room = janus_room(room)
        await self._ensure_room()
        if publisher:
            await self._plugin(
                {"request": "join", "ptype": "publisher", "room": self.room, "display": name}
            )
            return
        listing, _ = await self._plugin({"request": "listparticipants", "room": self.room})
        self.feeds = [int(p["id"]) for p in listing.get("participants", []) if p.get("publisher")]
        if not self.feeds:
            raise JanusError(f"room {self.room} has no publisher to subscribe to")
        data, jsep = await self._plugin(
            {
                "request": "join",
                "ptype": "subscriber",
                "room": self.room,
                "streams": [{"feed": feed} for feed in self.feeds],
            }
        )
        if jsep is None:
            raise JanusError("the subscriber join got no offer")
        self.on_phase("joined")  # (Janus's subscriber join answers with the offer)
        tracks = [
            OfferedTrack(
                f"{s.get('feed_id')}-{s.get('feed_mid')}", str(s.get("type")), str(s["mid"])
            )
            for s in data.get("streams", [])
            if s.get("type") in ("audio", "video") and s.get("active", True)
        ]
        answer = await self.on_offer(str(jsep["sdp"]), tracks)
        await self._plugin({"request": "start"}, {"type": "answer", "sdp": answer})
        await self._trickle_done()

    async def _ensure_room(self) -> None:
        try:
            await self._plugin(
                {
                    "request": "create",
                    "room": self.room,
                    "publishers": 64,
                    "bitrate": 3_000_000,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "notify_joining": False,
                }
            )
        except JanusError as exc:
            if f"error {_ROOM_EXISTS}" not in str(exc):
                raise

    async def publish(self, sdp: str, timeout: float) -> str:
        _, jsep = await self._plugin(
            {"request": "publish", "audio": True, "video": True},
            {"type": "offer", "sdp": sdp},
        )
        if jsep is None:
            raise JanusError("publish got no answer")
        await self._trickle_done()
        return str(jsep["sdp"])

    async def set_layer(self, track: OfferedTrack, max_height: int) -> None:
        with contextlib.suppress(JanusError, TimeoutError):
            await self._plugin(
                {
                    "request": "configure",
                    "streams": [{"mid": track.mid, "substream": substream_for(max_height)}],
                }
            )

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        if self.session_id is not None and not self.ws.closed.is_set():
            session, self.session_id = self.session_id, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call({"janus": "destroy", "session_id": session}), 2.0)
        await self.ws.close()
