"""One client's signaling session (``Session``) over its websocket (``ParleyWebSocket``),
and what the server tells of participants (track and participant info, grants)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import cast

from aiohttp import WSCloseCode, web

from sfu.participant import NegotiationError, Participant, PublishedTrack, Subscription
from sfu.room import Sfu

from . import messages as m
from .auth import (
    NOT_ALLOWED,
    Claims,
    Grants,
    TokenError,
    verify_token,
)
from .config import (
    JOIN_RATE_KEY,
    JoinRequest,
    ServerConfig,
    client_address,
)
from .drain import DRAINING_CLOSE_CODE, is_draining
from .limits import (
    join_refusal,
    tracks_refusal,
)
from .metrics import count_error
from .oplog import PauseLog

logger = logging.getLogger(__name__)

#: ``left``'s reason for a session replaced by a new join with the same token identity
REPLACED_REASON = "joined again elsewhere with the same identity"

#: Server messages queued for one client before it is considered gone (it stopped reading).
MAX_QUEUED_MESSAGES = 1000


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
