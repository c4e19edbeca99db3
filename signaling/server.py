"""The aiohttp signaling server: ``/ws`` (JSON protocol), ``/healthz``, ``/`` (the web page).

Embedders call :func:`setup_parley` on their own ``web.Application``;
:func:`create_app` does the same on a fresh one (that is what ``parley serve`` runs).
When the application shuts down (``on_shutdown``), every client is sent
``server_shutdown`` and its websocket is closed (1001) at once, and the SFU is closed,
so no handler keeps the process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import cast

from aiohttp import WSCloseCode, WSMsgType, web

from sfu.config import SfuConfig
from sfu.participant import NegotiationError, Participant, PublishedTrack, Subscription
from sfu.room import Sfu

from . import messages as m
from .auth import (
    NOT_ALLOWED,
    AuthConfig,
    Claims,
    Grants,
    TokenError,
    may_see_load,
    verify_token,
)
from .drain import DRAINING_CLOSE_CODE, DRAINING_KEY, DrainConfig, is_draining
from .limits import (
    RATE_CLOSE_CODE,
    AddressBuckets,
    Limits,
    MessageGate,
    join_refusal,
    tracks_refusal,
)
from .metrics import count_error, setup_metrics
from .oplog import OperatorLog, PauseLog
from .origins import OriginPolicy, origin_refusal
from .webhooks import WebhookConfig, Webhooks

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What an authorisation callback sees of a join."""

    room: str
    name: str
    token: str | None
    request: web.Request


#: Returns None to admit the join, or a reason (shown to the user) to refuse it.
Authorize = Callable[[JoinRequest], Awaitable[str | None]]
#: Room -> the ``ws://…/ws`` URL of the node that serves it, or None to serve it here
#: (``parley serve --redis``: ``cluster/redis_node.py``). The join is answered ``redirect``.
Route = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    sfu: SfuConfig = field(default_factory=SfuConfig)
    max_message_bytes: int = m.DEFAULT_MAX_MESSAGE_BYTES
    #: Seconds a client may take between opening the websocket and joining.
    join_timeout: float = 30.0
    authorize: Authorize | None = None
    #: API key and secret: with a secret, joins need a token (``signaling/auth.py``)
    auth: AuthConfig = field(default_factory=AuthConfig)
    #: What ``server_shutdown`` tells clients when the application stops.
    shutdown_reason: str = "server is shutting down"
    #: ``server_shutdown``'s hint of when to rejoin: about what a restart takes.
    shutdown_retry_after_ms: int = 2000
    #: ``server_shutdown``'s ``reconnect``: whether clients should rejoin (here or elsewhere).
    shutdown_reconnect: bool = True
    #: Seconds a client gets to take its ``server_shutdown`` and close frame before its
    #: connection is cut (a client that stopped reading must not hold the shutdown up).
    shutdown_grace: float = 0.3
    #: Seconds the whole shutdown of sessions may take; what is left is cancelled.
    #: (0.5 s leaves the process room to exit within a second of the signal on a busy host.)
    shutdown_timeout: float = 0.5
    limits: Limits = field(default_factory=Limits)
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    #: where a room is served, when not every room is served here (a cluster of nodes)
    route: Route | None = None
    #: more fields for ``/healthz``'s operator view (a cluster node's ``load``)
    health: Callable[[], Mapping[str, object]] | None = None
    #: Waiting for rooms to empty before a stop (``signaling/drain.py``).
    drain: DrainConfig = field(default_factory=DrainConfig)
    #: Set on a worker behind ``parley serve --workers`` (cluster/front.py): a request
    #: carrying this key in ``X-Parley-Front-Key`` comes from the front, and its
    #: ``X-Forwarded-For`` is the client's address (join rate limits are per client).
    front_key: str | None = None


def client_address(request: web.Request, config: ServerConfig) -> str:
    """The client's address: the peer's, or the one the front forwarded with its key."""
    key = config.front_key
    if key and request.headers.get("X-Parley-Front-Key") == key:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or ""


#: ``left``'s reason for a session replaced by a new join with the same token identity
REPLACED_REASON = "joined again elsewhere with the same identity"

#: Server messages queued for one client before it is considered gone (it stopped reading).
MAX_QUEUED_MESSAGES = 1000

SFU_KEY = web.AppKey("parley_sfu", Sfu)
CONFIG_KEY = web.AppKey("parley_config", ServerConfig)
SESSIONS_KEY = web.AppKey("parley_sessions", set)
#: Set when the application starts shutting down: no new websocket is accepted.
STOPPING_KEY = web.AppKey("parley_stopping", asyncio.Event)
#: Joins per second per client address (``Limits.join_rate``).
JOIN_RATE_KEY = web.AppKey("parley_join_rate", AddressBuckets)
#: The webhook sender, when ``ServerConfig.webhooks`` has URLs.
WEBHOOKS_KEY = web.AppKey("parley_webhooks", Webhooks)

#: Files of the page served under ``/static/``: nothing else of the ``web`` package.
STATIC_SUFFIXES = frozenset({".html", ".js", ".css", ".png", ".svg", ".ico"})


def _log_failure(task: asyncio.Task[object]) -> None:
    """Done-callback: retrieve a background task's exception so none goes unretrieved."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("background task failed", exc_info=exc)


class ParleyWebSocket(web.WebSocketResponse):
    """A server websocket that bounds frames while reading and says why it closes 1009.

    aiohttp's reader refuses a frame whose header announces more than ``max_msg_size``
    bytes before buffering its payload, and closes with 1009 itself; this subclass sends
    the protocol's ``too_large`` error first, so the client learns why.
    """

    def __init__(self, max_message_bytes: int, heartbeat: float) -> None:
        # aiohttp refuses payloads >= max_msg_size: the protocol allows exactly the limit
        super().__init__(max_msg_size=max_message_bytes + 1, heartbeat=heartbeat)
        self.max_message_bytes = max_message_bytes

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            error = m.ProtocolError(
                "too_large", f"message exceeds the limit of {self.max_message_bytes} bytes"
            )
            with contextlib.suppress(Exception):
                await self.send_str(m.serialize(error.to_message()))
            message = message or b"message too large"
        return await super().close(code=code, message=message, drain=drain)


class Session:
    """One websocket client: parses its messages, drives its Participant, sends events."""

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, sfu: Sfu, config: ServerConfig
    ) -> None:
        self.ws = ws
        self.request = request
        self.sfu = sfu
        self.config = config
        self.participant: Participant | None = None
        self.state = "new"
        #: when the websocket opened (loop time): the start of the join latency metric
        self.opened_at = asyncio.get_running_loop().time()
        self._out: asyncio.Queue[m.ServerMessage | None] = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._write_loop())
        self._writer.add_done_callback(_log_failure)
        self._renegotiate_task: asyncio.Task[None] | None = None
        self._publishing = False
        self._leave_request_id: m.RequestId | None = None
        self._overflowed = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: the task running this session's websocket handler
        self.handler: asyncio.Task[object] | None = None
        #: the join token's claims (None: no token needed) and what it may do
        self.claims: Claims | None = None
        self.grants = Grants()
        #: set when the operator ends the session (admin API): `left` says not to rejoin
        self.final = False
        self.pause_log = PauseLog()  # operator lines when a subscribed video pauses/resumes

    def _spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background, keeping a reference and retrieving its outcome."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    # ------------------------------------------------------------ sending

    def send(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.ErrorMessage):
            count_error(self.request, message.code)
        if self._out.qsize() >= MAX_QUEUED_MESSAGES:
            # a client that does not read what it is sent must not grow server memory
            if not self._overflowed:
                self._overflowed = True
                logger.warning("closing a websocket whose client stopped reading")
                self._spawn(self._close_ws(1008, b"not reading"))
            return
        if self.state != "closed" or isinstance(message, (m.Left, m.ErrorMessage)):
            self._out.put_nowait(message)

    async def _write_loop(self) -> None:
        while True:
            message = await self._out.get()
            if message is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(m.serialize(message))
            except (ConnectionError, RuntimeError):
                return

    def error(
        self,
        code: str,
        text: str,
        request: str | None = None,
        request_id: m.RequestId | None = None,
    ) -> None:
        error_code = cast(m.ErrorCode, code)
        self.send(
            m.ErrorMessage(code=error_code, message=text, request=request, request_id=request_id)
        )

    # ------------------------------------------------------------ ParticipantListener

    def participant_joined(self, other: Participant) -> None:
        if not is_hidden(other):
            self.send(m.ParticipantJoined(participant=_participant_info(other)))

    def participant_left(self, other: Participant) -> None:
        if not is_hidden(other):
            self.send(m.ParticipantLeft(id=other.id))

    def track_published(self, other: Participant, track: PublishedTrack) -> None:
        self.send(m.TrackPublished(participant=other.id, track=_track_info(track)))

    def track_unpublished(self, other: Participant, track: PublishedTrack) -> None:
        self.send(m.TrackUnpublished(participant=other.id, track=track.id))

    def layer_changed(self, subscription: Subscription) -> None:
        forwarder = subscription.forwarder
        current = forwarder.current
        publisher = subscription.publisher.id
        self.pause_log.update(self.participant, subscription.track.id, publisher, current is None)
        self.send(
            m.Layer(
                track=subscription.track.id,
                rid=current.rid if current is not None else None,
                width=current.width if current is not None else 0,
                height=current.height if current is not None else 0,
                paused=current is None,
                temporal=forwarder.temporal_layer if current is not None else None,
            )
        )

    def active_speaker_changed(self, speaker: Participant | None) -> None:
        self.send(m.ActiveSpeaker(participant=speaker.id if speaker is not None else None))

    def subscriptions_changed(self) -> None:
        if self._renegotiate_task is None or self._renegotiate_task.done():
            self._renegotiate_task = asyncio.ensure_future(self._renegotiate())
            self._renegotiate_task.add_done_callback(_log_failure)

    def data_refused(self, code: str, message: str) -> None:
        self.error(code, message)

    def closed(self, reason: str) -> None:
        if self.state == "joined":
            self.send(
                m.Left(
                    reason=reason,
                    request_id=self._leave_request_id,
                    reconnect=False if self.final else None,
                )
            )
            self.state = "closed"
            # the websocket is closed once the goodbye is written
            self._spawn(self._flush_and_close())

    def _refuse_draining(self, message: m.Join) -> None:
        self.error("server_draining", self.config.drain.refusal, "join", message.request_id)
        self._spawn(self._flush_and_close(DRAINING_CLOSE_CODE, b"server draining"))

    async def _flush_and_close(self, code: int = 1000, message: bytes = b"") -> None:
        """Write what is queued, then close the websocket with ``code``."""
        self._out.put_nowait(None)
        with contextlib.suppress(Exception):
            await self._writer
            await self.ws.close(code=code, message=message)

    async def _close_ws(self, code: int, message: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message)

    async def shutdown(
        self, reason: str, retry_after_ms: int, grace: float, reconnect: bool = True
    ) -> None:
        """The server stops: send ``server_shutdown``, close the websocket (1001), leave.

        Whatever was still queued for the client is dropped (it is moot now); a client
        that does not take the goodbye and the close frame within ``grace`` seconds has
        its connection cut. Then the participant leaves the room. Idempotent.
        """
        if self.state != "closed":
            self.state = "closed"  # nothing but the goodbye goes out from now on
            while not self._out.empty():
                self._out.get_nowait()
            self._out.put_nowait(
                m.ServerShutdown(reason=reason, retry_after_ms=retry_after_ms, reconnect=reconnect)
            )
            self._out.put_nowait(None)
            try:
                async with asyncio.timeout(grace):
                    with contextlib.suppress(Exception):
                        await self._writer
                        await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            except TimeoutError:
                logger.info("cutting a client that did not take its server_shutdown in time")
                transport = self.request.transport
                if transport is not None:
                    transport.close()
        await self.close()

    async def _renegotiate(self) -> None:
        await asyncio.sleep(0)  # let a burst of changes coalesce (and `joined` go out first)
        participant = self.participant
        if participant is None or self.state != "joined":
            return
        try:
            result = await participant.create_subscribe_offer()
        except Exception:
            logger.exception("subscribe offer failed for %s", participant.id)
            self.error("internal", "the server could not create a subscribe offer")
            return
        if result is None:
            return
        sdp, mapping = result
        tracks = {
            mid: m.SubscribedTrack(
                participant=info["participant"],
                track=info["track"],
                kind=cast(m.TrackKind, info["kind"]),
            )
            for mid, info in mapping.items()
        }
        self.send(m.SubscribeOffer(sdp=sdp, tracks=tracks))

    # ------------------------------------------------------------ receiving

    async def handle(self, raw: str | bytes) -> None:
        try:
            message = m.parse_client_message(raw, self.config.max_message_bytes)
        except m.ProtocolError as exc:
            self.send(exc.to_message())
            if exc.code == "too_large":
                # flush what is queued (the error included), then close with 1009
                await self._flush_and_close(m.TOO_LARGE_CLOSE_CODE, b"message too large")
            return
        name = message.type
        rid = message.request_id
        try:
            if isinstance(message, m.Ping):
                self.send(m.Pong(request_id=rid))
            elif isinstance(message, m.Join):
                await self._join(message)
            elif self.state != "joined" or self.participant is None:
                self.error("wrong_state", f"{name} needs a joined session", name, rid)
            elif isinstance(message, m.PublishOffer):
                if self.grants.may_publish:
                    await self._publish(message)
                else:
                    self.error(NOT_ALLOWED, "this participant may not publish", name, rid)
            elif isinstance(message, m.SubscribeAnswer):
                await self.participant.apply_subscribe_answer(message.sdp)
            elif isinstance(message, m.SetLayer):
                if message.track not in self.participant.subscriptions:
                    self.error("not_found", f"not subscribed to track {message.track}", name, rid)
                else:
                    self.participant.set_layer_request(
                        message.track,
                        max_width=message.max_width,
                        max_height=message.max_height,
                        paused=message.paused,
                    )
            elif isinstance(message, m.Leave):
                self._leave_request_id = rid
                await self.participant.close("left")
        except NegotiationError as exc:
            self.error(exc.code, exc.message, name, rid)
        except Exception:
            logger.exception("handling %s failed", name)
            self.error("internal", f"the server failed to handle {name}", name, rid)

    async def _join(self, message: m.Join) -> None:
        if self.state != "new":
            self.error("wrong_state", "already joined", "join", message.request_id)
            return
        if is_draining(self.request.app) and self.config.route is None:
            self._refuse_draining(message)
            return
        address = client_address(self.request, self.config)
        if not self.request.app[JOIN_RATE_KEY].take(address, asyncio.get_running_loop().time()):
            rate = self.config.limits.join_rate
            text = f"too many joins from {address}: at most {rate:g} a second"
            self.error("rate_limited", text, "join", message.request_id)
            return
        if self.config.auth.enabled:
            try:
                self.claims = verify_token(
                    message.token, self.config.auth, now=time.time(), room=message.room
                )
            except TokenError as exc:
                self.error(exc.code, exc.message, "join", message.request_id)
                return
            problem = m.name_problem(self.claims.display_name)
            if problem is not None:
                self.claims = None
                self.error("token_invalid", f"token's name {problem}", "join", message.request_id)
                return
            self.grants = self.claims.grants
        authorize = self.config.authorize
        if authorize is not None:
            reason = await authorize(
                JoinRequest(message.room, message.name, message.token, self.request)
            )
            if reason is not None:
                self.error("join_refused", reason, "join", message.request_id)
                return
        if self.state != "new":
            return
        if self.config.route is not None:
            url = await self.config.route(message.room)
            if url is not None and self.state == "new":
                self.send(m.Redirect(url=url, room=message.room, request_id=message.request_id))
                self.state = "closed"  # the handler writes it, then closes the websocket
                return
        if self.state != "new":
            return
        if is_draining(self.request.app):  # a cluster node: no other node takes the room
            self._refuse_draining(message)
            return
        if (refusal := self._room_refusal(message.room)) is not None:
            self.error(*refusal, "join", message.request_id)
            return
        name = message.name if self.claims is None else self.claims.display_name
        if self.claims is not None:
            await self._replace_same_identity(message.room, self.claims.identity)
            if self.state != "new":
                return
        participant = self.sfu.join(
            message.room,
            name,
            self,
            reuse_mlines=message.reuse_mlines is not False,
            identity=self.claims.identity if self.claims is not None else None,
            decodes=frozenset(message.codecs) if message.codecs is not None else None,
        )
        self.participant = participant
        self.state = "joined"
        apply_grants(participant, self.grants)
        others = [
            p
            for p in participant.room.participants.values()
            if p is not participant and not is_hidden(p)
        ]
        self.send(
            m.Joined(
                id=participant.id,
                room=participant.room.id,
                participants=tuple(_participant_info(p) for p in others),
                ice_servers=self.config.sfu.ice.servers,
                request_id=message.request_id,
            )
        )
        if participant.subscriptions:
            self.subscriptions_changed()

    def _room_refusal(self, room_id: str) -> tuple[str, str] | None:
        room = self.sfu.rooms.get(room_id)
        participants = None if room is None else len(room.participants)
        return join_refusal(self.config.limits, len(self.sfu.rooms), participants)

    async def _replace_same_identity(self, room_id: str, identity: str) -> None:
        """One identity is in a room once: a new join with it removes the old session
        (a reloaded page, a client rejoining before its old connection timed out)."""
        room = self.sfu.rooms.get(room_id)
        if room is None:
            return
        for other in list(room.participants.values()):
            session = session_of(other)
            if session is not None and session.claims is not None:
                if session.claims.identity == identity and not other.closed:
                    session.final = True
                    await other.close(REPLACED_REASON)

    async def _publish(self, message: m.PublishOffer) -> None:
        assert self.participant is not None
        if (refusal := tracks_refusal(self.config.limits, message.sdp)) is not None:
            self.error(*refusal, "publish_offer", message.request_id)
            return
        if self._publishing:
            self.error(
                "wrong_state",
                "a publish negotiation is already in progress",
                "publish_offer",
                message.request_id,
            )
            return
        self._publishing = True
        try:
            sdp, tracks = await self.participant.publish(message.sdp)
        finally:
            self._publishing = False
        self.send(
            m.PublishAnswer(
                sdp=sdp,
                tracks=tuple(
                    m.PublishedTrack(id=t.id, kind=cast(m.TrackKind, t.kind), mid=t.mid)
                    for t in tracks
                ),
                request_id=message.request_id,
            )
        )

    async def close(self) -> None:
        """The websocket is gone: leave the room, stop the writer. Idempotent."""
        if self.participant is not None and not self.participant.closed:
            await self.participant.close("disconnected")
        self.state = "closed"
        self._out.put_nowait(None)
        if self._renegotiate_task is not None:
            self._renegotiate_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renegotiate_task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer


def _track_info(track: PublishedTrack) -> m.TrackInfo:
    return m.TrackInfo(
        id=track.id,
        kind=cast(m.TrackKind, track.kind),
        layers=track.rids,
        muted=True if track.muted else None,
    )


def session_of(p: Participant) -> Session | None:
    """The signaling session of a participant (None for one an embedder added itself)."""
    return p.listener if isinstance(p.listener, Session) else None


def is_hidden(p: Participant) -> bool:
    session = session_of(p)
    return session is not None and session.grants.hidden


def apply_grants(participant: Participant, grants: Grants) -> None:
    """Make what ``participant`` receives and may send match ``grants``.

    Subscribing follows ``can_subscribe`` (every other participant's tracks, or none);
    data follows ``can_publish_data``. Publishing is checked when it is asked for
    (``publish_offer``); the admin API unpublishes what a revoked grant no longer allows.
    """
    participant.data_side.may_send = grants.may_publish_data
    participant.can_subscribe = grants.can_subscribe
    if not grants.can_subscribe:
        for sub in list(participant.subscriptions.values()):
            participant.unsubscribe(sub.track)
        return
    for other in list(participant.room.participants.values()):
        if other is not participant and not other.closed:
            for track in list(other.tracks.values()):
                participant.subscribe(other, track)


def _participant_info(p: Participant) -> m.ParticipantInfo:
    return m.ParticipantInfo(
        id=p.id,
        name=p.name,
        tracks=tuple(_track_info(t) for t in p.tracks.values()),
    )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    sfu = request.app[SFU_KEY]
    config = request.app[CONFIG_KEY]
    if request.app[STOPPING_KEY].is_set():
        raise web.HTTPServiceUnavailable(text=config.shutdown_reason)
    origin = request.headers.get("Origin")
    if (refused := origin_refusal(origin, request.host, config.origins)) is not None:
        logger.info("refused a websocket from %s: origin %r", request.remote, origin)
        raise web.HTTPForbidden(text=refused)
    ws = ParleyWebSocket(config.max_message_bytes, heartbeat=config.sfu.websocket_heartbeat)
    await ws.prepare(request)
    session = Session(ws, request, sfu, config)
    session.handler = asyncio.current_task()
    sessions = request.app[SESSIONS_KEY]
    sessions.add(session)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.join_timeout
    gate = MessageGate(config.limits, loop.time())
    try:
        while not ws.closed:
            timeout = None if session.state != "new" else max(0.0, deadline - loop.time())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                session.error("wrong_state", "join timeout: send join first")
                break
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                verdict = gate.admit(loop.time())
                if verdict == "ok":
                    await session.handle(msg.data)
                elif verdict == "refuse":
                    session.error("rate_limited", "too many messages: this one was dropped")
                else:
                    logger.info(
                        "closing a websocket from %s: over its message rate", request.remote
                    )
                    session.error("rate_limited", "too many messages: closing the connection")
                    await session._flush_and_close(RATE_CLOSE_CODE, b"message rate exceeded")
                    break
            elif msg.type in (
                WSMsgType.CLOSE,
                WSMsgType.CLOSING,
                WSMsgType.CLOSED,
                WSMsgType.ERROR,
            ):
                break
            if session.state == "closed":
                break
    finally:
        await session.close()
        sessions.discard(session)
        if not ws.closed:
            await ws.close()
    return ws


async def healthz(request: web.Request) -> web.Response:
    """Liveness for anyone (``draining`` with 503 while draining: a load balancer takes
    this instance out); the counts only for the operator (``auth.may_see_load``)."""
    draining = is_draining(request.app)
    body: dict[str, object] = {"status": "draining" if draining else "ok"}
    auth = request.app[CONFIG_KEY].auth
    if may_see_load(auth, request.headers.get("Authorization"), now=time.time()):
        body.update(request.app[SFU_KEY].stats())
        health = request.app[CONFIG_KEY].health
        if health is not None:
            body.update(health())
    return web.json_response(body, status=503 if draining else 200)


def web_root() -> Path:
    return Path(str(resources.files("web")))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(web_root() / "index.html")


def page_files() -> list[Path]:
    """The files of the page (``web/``) that ``/static/`` serves: no Python, no dotfiles."""
    return sorted(
        path
        for path in web_root().iterdir()
        if path.is_file() and path.suffix in STATIC_SUFFIXES and not path.name.startswith(".")
    )


def _file_handler(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def serve_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    return serve_file


def _redirect_handler(location: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def redirect(request: web.Request) -> web.StreamResponse:
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPPermanentRedirect(location + query)

    return redirect


async def shutdown_sessions(app: web.Application) -> None:
    """``on_shutdown``: tell every client why, close every websocket and session, close the SFU.

    aiohttp waits for running handlers (up to its ``shutdown_timeout``, 60 s by default)
    before ``on_cleanup``; a websocket handler runs as long as its client stays connected,
    so the sessions must end here, at once, or stopping hangs until clients give up.
    """
    config = app[CONFIG_KEY]
    app[STOPPING_KEY].set()
    sessions = list(cast("set[Session]", app[SESSIONS_KEY]))
    if sessions:
        logger.info("shutting down: closing %d session(s)", len(sessions))
    closing = [
        asyncio.ensure_future(
            s.shutdown(
                config.shutdown_reason,
                config.shutdown_retry_after_ms,
                config.shutdown_grace,
                config.shutdown_reconnect,
            )
        )
        for s in sessions
    ]
    closing.append(asyncio.ensure_future(app[SFU_KEY].close()))
    # the websocket handlers end once their session is closed; aiohttp would wait for
    # them up to its shutdown_timeout (60 s by default), so they are waited for here
    handlers = [s.handler for s in sessions if s.handler is not None]
    # goodbyes are bounded by shutdown_grace and closing peer connections takes
    # milliseconds, but nothing that hangs may keep the process from exiting
    done, pending = await asyncio.wait([*closing, *handlers], timeout=config.shutdown_timeout)
    for task in pending:
        task.cancel()
    if pending:
        logger.warning("shutting down: %d task(s) did not end in time, cancelled", len(pending))
        await asyncio.wait(pending, timeout=0.1)
    for task in done:
        if task in closing and not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("closing a session at shutdown failed", exc_info=exc)


def setup_parley(
    app: web.Application,
    config: ServerConfig | None = None,
    prefix: str = "",
) -> None:
    """Mount Parley's routes under ``prefix`` on ``app`` and tie the SFU's life to it.

    Routes: ``{prefix}/ws``, ``{prefix}/healthz``, the page at ``{prefix}/`` (``{prefix}``
    redirects there) and its files under ``{prefix}/static/``. The SFU is created at
    start-up; at shutdown every client gets ``server_shutdown`` and the SFU is closed.
    """
    config = config or ServerConfig()
    app[CONFIG_KEY] = config
    app[SESSIONS_KEY] = set()
    app[STOPPING_KEY] = asyncio.Event()
    app[DRAINING_KEY] = asyncio.Event()
    limits = config.limits
    app[JOIN_RATE_KEY] = AddressBuckets(
        limits.join_rate, limits.join_burst, limits.max_tracked_addresses
    )

    async def sfu_context(app: web.Application) -> AsyncIterator[None]:
        sfu = Sfu(config.sfu)
        sfu.add_observer(OperatorLog())  # one log line per join, leave, publish, unpublish
        app[SFU_KEY] = sfu
        webhooks = Webhooks(config.webhooks) if config.webhooks.urls else None
        if webhooks is not None:
            app[WEBHOOKS_KEY] = webhooks
            sfu.add_observer(webhooks)
        yield
        await sfu.close()
        if webhooks is not None:  # after the SFU: its last events go out too
            await webhooks.close()

    app.cleanup_ctx.append(sfu_context)
    setup_metrics(
        app,
        SFU_KEY,
        prefix,
        # with an API secret, as /healthz's counts: the secret or an admin token
        allowed=lambda request: may_see_load(
            request.app[CONFIG_KEY].auth, request.headers.get("Authorization"), now=time.time()
        ),
    )
    app.on_shutdown.append(shutdown_sessions)
    app.router.add_get(f"{prefix}/ws", websocket_handler)
    app.router.add_get(f"{prefix}/healthz", healthz)
    from .admin import add_admin_routes  # admin.py builds on this module's sessions

    add_admin_routes(app, prefix)
    app.router.add_get(f"{prefix}/", index)
    if prefix:
        app.router.add_get(prefix, _redirect_handler(f"{prefix}/"))
    for path in page_files():
        app.router.add_get(f"{prefix}/static/{path.name}", _file_handler(path))


async def freeze_startup_objects(app: web.Application) -> None:
    """An ``on_startup`` hook for a process that runs Parley alone (``parley serve``).

    Everything allocated at start-up (modules, aiortc, codec tables) lives as long as
    the process: moving it out of the cyclic collector's reach stops full collections
    from walking it, which stalled the event loop for 20-50 ms at a time under load
    (see docs/benchmarks.md). It changes process-wide state, so embedders opt in.
    """
    gc.collect()
    gc.freeze()


def create_app(config: ServerConfig | None = None, *, freeze_gc: bool = False) -> web.Application:
    """A new application serving Parley at ``/``; ``freeze_gc`` for a dedicated process."""
    app = web.Application()
    setup_parley(app, config)
    if freeze_gc:
        app.on_startup.append(freeze_startup_objects)
    return app
