"""The headless bot ("synthetic participant"): joins a room, publishes, subscribes, reports.

``parley bot --url http://HOST:PORT --room R --name N --duration S --json PATH`` calls
:func:`main`. The bot speaks the signaling protocol of ``docs/protocol.md`` over
``{url}/ws``, publishes a tone and a test pattern (unless ``--no-publish``), decodes
everything the server offers it and writes a JSON summary; see :meth:`Bot.summary`.

Every peer connection comes from :func:`sfu.aiortc_adapter.create_peer_connection`, so
ICE gathers only on ``--ice-address`` (127.0.0.1 by default) and contacts only the ICE
servers the server announces in ``joined``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from av import AudioFrame, VideoFrame

from loadgen.bot.codecs import answer_codecs, video_codecs
from loadgen.bot.config import BotConfig, JoinFailed
from loadgen.bot.data import BotData
from loadgen.bot.reconnect import Backoff, Reconnect
from loadgen.bot.stats import TrackKey, TrackStats, round_tenth
from loadgen.bot.transport_cc import SubscribeTransportCc
from loadgen.bot.verdict import (
    Failure,
    Limits,
    RunFacts,
    evaluate,
    verdict_line,
)
from loadgen.join_phases import JoinTimeline
from loadgen.media.simulcast import (
    DEFAULT_LAYERS,
    URI_RID,
    MungedOffer,
    SimulcastExtensions,
    SimulcastSender,
    SimulcastVideo,
    munge_simulcast_offer,
)
from loadgen.media.synthetic import PatternTrack, ToneTrack
from parley_client import ClientClosed, ProtocolClient, Redirected, RequestFailed
from sfu.aiortc_adapter import (
    MediaPort,
    NegotiatedRtp,
    create_peer_connection,
    describe_remote_media,
    enlarge_receive_buffers,
    hook_sender,
    observe_received_rtp,
    release_frames_on_marker,
    set_opus_bitrate,
)
from sfu.config import IceConfig, IceServer
from sfu.rtp.packet import RtpError, Vp8Descriptor
from signaling.messages import (
    ActiveSpeaker,
    ClientMessage,
    ErrorMessage,
    Joined,
    Layer,
    Leave,
    Left,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    Pong,
    ProtocolError,
    PublishAnswer,
    PublishOffer,
    ServerMessage,
    ServerShutdown,
    SetLayer,
    SubscribeAnswer,
    SubscribeOffer,
    TrackInfo,
    TrackPublished,
    TrackUnpublished,
)

logger = logging.getLogger(__name__)


#: The websocket is pinged this often (s) and given half as long to answer: a server that
#: vanished without closing the connection is noticed within 1.5x this.
WS_HEARTBEAT = 10.0
#: A bot joining a room with tracks sends its publish offer once it has answered the
#: subscribe offer, or after this long (s) at most (``Bot._answer_first``).
ANSWER_FIRST_S = 0.3
#: ``redirect`` answers followed for one join (a cluster redirects once; more is a loop)
MAX_REDIRECTS = 3
#: bytes of kernel receive buffer for each socket of the subscribe connection
RECEIVE_BUFFER = 2 << 20

_FID_GROUP = re.compile(r"^a=ssrc-group:FID (\d+) (\d+)", re.MULTILINE)


# ------------------------------------------------------------------------- bot


class Bot:
    """One synthetic participant. ``await run()`` once; ``close()`` is idempotent."""

    def __init__(self, config: BotConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        #: the signaling connection of the current session
        self._client: ProtocolClient | None = None
        self._stats_lock = asyncio.Lock()
        self._pub_pc: RTCPeerConnection | None = None
        self._sub_pc: RTCPeerConnection | None = None
        self._local_tracks: list[MediaStreamTrack] = []
        #: tasks of the bot's whole life (statistics), and of the current connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._session_tasks: set[asyncio.Task[None]] = set()
        #: Set when the current connection ends: the websocket closed, the server shut
        #: down or removed the bot (``_drop`` says which), or the bot is closed.
        self._session_over = asyncio.Event()
        #: the first subscribe answer of the connection is sent (``_answer_first``)
        self._answered = asyncio.Event()
        self._drop: tuple[str, str] | None = None
        self._retry_after_ms: int | None = None
        self._leaving = False
        self._left = asyncio.Event()
        self._ran = False
        self._closed = False
        self._rng = random.Random()
        #: connection number (0, 1 after the first reconnect, ...) and its join time
        self._session_index = 0
        self._session_joined_at: float | None = None
        #: tracks of earlier connections (ended with them)
        self._archived: list[TrackStats] = []
        self._reconnects: list[Reconnect] = []
        #: (code, message, when) of a connection lost and not recovered
        self._lost: tuple[str, str, float] | None = None
        #: no rejoin: the operator ended the session (``left`` with ``reconnect: false``),
        #: or the server's ``server_shutdown`` said not to come back
        self._final = False
        self._failed_connections: list[str] = []
        #: which of ``url`` and ``fallback_urls`` the next join goes through
        self._entry = 0
        self._fatal: str | None = None
        self._join_error: str | None = None
        self._deadline = 0.0
        self._started_unix = 0.0

        self._started_at = 0.0
        self._joined_at: float | None = None
        #: the first join's per-phase timeline (``join_phases_ms`` in the summary)
        self._timeline: JoinTimeline | None = None
        self._id: str | None = None
        self._ice_servers: tuple[IceServer, ...] = ()
        self._published = False
        self._published_tracks: list[dict[str, Any]] = []
        self._names: dict[str, str] = {}
        self._tracks: dict[TrackKey, TrackStats] = {}
        #: Subscribe mid -> the remote track it currently carries.
        self._mid_map: dict[str, TrackKey] = {}
        #: Subscribe mid -> the last raw (ssrc, received, lost) of its receiver.
        self._raw_stats: dict[str, tuple[int, int, int]] = {}
        #: Subscribe mid -> raw counters when its current mapping began.
        self._stats_base: dict[str, tuple[int, int, int]] = {}
        self._rtx_ssrcs: set[int] = set()
        self._observed: set[RTCRtpReceiver] = set()
        self._errors: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._left_reason: str | None = None
        self._unattributed_frames = 0
        self._end: float | None = None
        # simulcast publishing (config.simulcast)
        self._munged: MungedOffer | None = None
        self._video_sender: RTCRtpSender | None = None
        self._simulcast: SimulcastSender | None = None
        self._simulcast_video: SimulcastVideo | None = None
        self._media_port: MediaPort | None = None
        # set_layer requests: per-track overrides of config.max_height, and what was sent
        self._max_height_overrides: dict[str, int] = {}
        self._max_height_sent: dict[str, int] = {}
        self._offered_tracks: set[str] = set()
        #: transport-cc of the current subscribe connection (config.transport_cc), and
        #: what the ended ones counted
        self._sub_twcc: SubscribeTransportCc | None = None
        #: the subscribe connection's sockets' receive buffers (bytes, as the kernel says)
        self.receive_buffers: list[int] = []
        self._twcc_ended: list[dict[str, Any]] = []
        #: the data channel (docs/protocol.md, "Data channel")
        self.data = BotData(
            config.name, config.data_every, config.data_to, config.data_bytes, self._resolve
        )

    # -------------------------------------------------------------- lifecycle

    async def run(self) -> dict[str, Any]:
        """Join, publish, subscribe for ``duration`` seconds, leave; return the summary.

        With ``config.reconnect`` a lost connection (websocket closed, ``server_shutdown``,
        removed by the server) is followed by rejoining with backoff until the duration
        ends. The summary is also written to ``config.json_path`` when set.
        """
        if self._ran:
            raise RuntimeError("Bot.run() may only be called once")
        self._ran = True
        cfg = self.config
        self._started_at = self._clock()
        self._started_unix = time.time()
        deadline = self._deadline = self._started_at + cfg.duration
        try:
            await self._connect()
            self._spawn(self._sample_periodically(), session=False)
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._session_over.wait(), remaining)
                drop = self._drop
                if not self._session_over.is_set() or drop is None or self._closed:
                    break  # the duration is over, or the bot was closed
                now = self._clock()
                if not cfg.reconnect or self._final:
                    self._lost = (*drop, now)
                    break
                if not await self._reconnect(drop, deadline):
                    break
            self._end = self._clock()
            if self._lost is None:
                await self._sample_stats()
                await self._leave()
        except JoinFailed as exc:
            self._join_error = str(exc)
            self._error("join_failed", str(exc))
        except (aiohttp.ClientError, OSError) as exc:
            self._fatal = f"{type(exc).__name__}: {exc}"
            self._error("connection", self._fatal)
        except Exception as exc:  # the summary must still be written
            logger.exception("bot %s failed", cfg.name)
            self._fatal = f"{type(exc).__name__}: {exc}"
            self._error("internal", self._fatal)
        finally:
            if self._end is None:
                self._end = self._clock()
            await self.close()
        summary = self.summary()
        if cfg.json_path:
            try:
                write_summary(cfg.json_path, summary)
            except OSError as exc:
                logger.error("bot %s: cannot write %s: %s", cfg.name, cfg.json_path, exc)
                summary["errors"].append({"code": "summary", "message": str(exc)})
                summary["failed"].append({"code": "summary", "message": str(exc)})
                summary["ok"] = False
        return summary

    async def _connect(self) -> None:
        """Join (and publish): the first connection to the server. A connection lost
        while publishing is left to :meth:`run` (it rejoins with ``--reconnect``)."""
        await self._join()
        if self.config.publish:
            try:
                await self._answer_first()
                await self._publish()
            except (aiohttp.ClientError, OSError, RuntimeError):
                with contextlib.suppress(TimeoutError):  # the read loop names the cause
                    await asyncio.wait_for(self._session_over.wait(), 1.0)
                if self._drop is None:
                    raise

    async def _answer_first(self) -> None:
        """In a room with tracks to receive, the subscribe offer follows ``joined`` at
        once: answer it before sending the publish offer (waiting ``ANSWER_FIRST_S`` at
        most), so that the server applies the answer (and starts ICE) before it works
        on the publish offer, not after."""
        if any(s.unpublished_at is None for s in self._tracks.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), ANSWER_FIRST_S)

    async def _reconnect(self, drop: tuple[str, str], deadline: float) -> bool:
        """The connection was lost (``drop``: code, message): tear it down and rejoin
        with backoff until back in the room (True) or the duration is over (False)."""
        now = self._clock()
        publishers = sorted(
            {
                stats.participant_name or stats.participant
                for stats in self._tracks.values()
                if stats.frames_decoded > 0 and stats.unpublished_at is None
            }
        )
        record = Reconnect(drop[0], drop[1], now, publishers)
        self._reconnects.append(record)
        self._event(now, "disconnected", code=drop[0], message=drop[1])
        logger.warning("bot %s: %s: %s; rejoining", self.config.name, drop[0], drop[1])
        retry_after_ms = self._retry_after_ms
        await self._end_session(now)
        self._session_index += 1
        backoff = Backoff.after(retry_after_ms)
        while not self._closed:
            delay = backoff.next_delay(self._rng)
            if self._clock() + delay >= deadline:
                break
            await asyncio.sleep(delay)
            record.attempts += 1
            try:
                await self._connect_again(record, deadline)
            except (JoinFailed, aiohttp.ClientError, OSError, RuntimeError, TimeoutError) as exc:
                record.last_error = f"{type(exc).__name__}: {exc}"
                logger.debug("bot %s: attempt %d: %s", self.config.name, record.attempts, exc)
                await self._end_session(self._clock())
                continue
            if self._session_over.is_set():  # lost again at once: the main loop retries
                return True
            record.joined_at = self._session_joined_at
            self._event(self._clock(), "reconnected", attempts=record.attempts)
            return True
        self._lost = (drop[0], drop[1], now)
        return False

    async def _connect_again(self, record: Reconnect, deadline: float) -> None:
        timeout = max(min(self.config.join_timeout, deadline - self._clock()), 0.1)
        await self._join(timeout, on_connected=record)
        if self.config.publish:
            await asyncio.wait_for(self._publish(), timeout)

    async def _end_session(self, now: float) -> None:
        """Close the current connection (peer connections, media, websocket) and start
        the books of the next one: its tracks are archived, ended at ``now``."""
        async with self._stats_lock:
            for stats in self._tracks.values():
                stats.on_session_end(now)
                self._archived.append(stats)
            self._tracks = {}
            self._mid_map = {}
            self._raw_stats = {}
            self._stats_base = {}
            self._rtx_ssrcs = set()
            self._observed = set()
            self._offered_tracks = set()
            self._max_height_sent = {}
            pcs = (self._pub_pc, self._sub_pc)
            self._pub_pc = self._sub_pc = None
        await self._close_media(pcs)
        await self._cancel(self._session_tasks)
        await self._close_websocket()
        self._id = None
        self._published = False
        self._published_tracks = []
        self._session_joined_at = None
        self._failed_connections = []
        self._drop = None
        self._retry_after_ms = None
        self._leaving = False
        self._left = asyncio.Event()
        self._session_over = asyncio.Event()
        self._answered = asyncio.Event()

    def _open_data(self, pc: RTCPeerConnection) -> None:
        """The data channel, once the transceivers are there: with max-bundle, aiortc
        stops the bundle's transport on the answer when the SCTP transport was created
        before the first transceiver (it made that transport, then the transceivers
        borrowed it, then it is dropped as a 'bundled away' one)."""
        self.data.open(pc)

    def _resolve(self, name_or_id: str) -> str | None:
        """The id of a participant named ``name_or_id`` (or that id), when known."""
        if name_or_id in self._names:
            return name_or_id
        return next((pid for pid, n in self._names.items() if n == name_or_id), None)

    async def _close_media(self, pcs: Iterable[RTCPeerConnection | None]) -> None:
        self.data.close()
        video, port = self._simulcast_video, self._media_port
        self._simulcast_video = self._media_port = None
        twcc, self._sub_twcc = self._sub_twcc, None
        if twcc is not None:
            await twcc.close()
            self._twcc_ended.append(twcc.summary())
        self._munged = None
        self._video_sender = None
        if video is not None:
            await video.close()
        if port is not None:
            port.close()
        for pc in pcs:
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        for track in self._local_tracks:
            track.stop()
        self._local_tracks = []

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
        pending = list(tasks)
        for task in pending:
            task.cancel()
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, Exception):
                logger.warning("bot task failed: %r", result)
        tasks.clear()

    async def _close_websocket(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def close(self) -> None:
        """Close both peer connections, stop all tasks, close the websocket and session."""
        if self._closed:
            return
        self._closed = True
        self._session_over.set()
        await self._close_media((self._pub_pc, self._sub_pc))
        await self._cancel(self._session_tasks)
        await self._cancel(self._tasks)
        await self._close_websocket()

    def _all_tracks(self) -> list[TrackStats]:
        return [*self._archived, *self._tracks.values()]

    def verdict(self) -> list[Failure]:
        """The conditions of ``ok`` that failed (empty: the call was good)."""
        end = self._end if self._end is not None else self._clock()
        last = self._reconnects[-1] if self._reconnects else None
        facts = RunFacts(
            started_at=self._started_at,
            end=end,
            deadline=self._deadline,
            joined=self._joined_at is not None,
            join_error=self._join_error,
            publish=self.config.publish,
            published=self._published,
            session_joined_at=self._session_joined_at,
            lost=self._lost,
            reconnect=self.config.reconnect,
            attempts=last.attempts if last is not None else 0,
            last_attempt_error=last.last_error if last is not None else None,
            failed_connections=list(self._failed_connections),
            error=self._fatal,
        )
        return evaluate(facts, self._all_tracks(), self._limits())

    def _limits(self) -> Limits:
        cfg = self.config
        return Limits(cfg.max_freeze_ms, cfg.max_loss_pct, cfg.grace)

    def summary(self) -> dict[str, Any]:
        end = self._end if self._end is not None else self._clock()
        grace = self.config.grace
        freeze_limit = self.config.max_freeze_ms / 1000.0
        for stats in self._all_tracks():
            if stats.participant_name is None:
                stats.participant_name = self._names.get(stats.participant)
        tracks = sorted(
            self._all_tracks(), key=lambda t: (t.session, t.participant, t.kind, t.track)
        )
        joined = self._joined_at is not None
        simulcast: dict[str, Any] | None = None
        if self._simulcast is not None:
            simulcast = self._simulcast.summary()
            video = self._simulcast_video
            if video is not None:
                frames = max((layer.stats.frames for layer in self._simulcast.layers), default=0)
                simulcast["frames_skipped"] = video.frames_skipped
                simulcast["send_failures"] = video.send_failures
                simulcast["encode_ms_per_frame"] = round_tenth(
                    video.encode_seconds * 1000 / frames if frames else None
                )
        failures = self.verdict()
        return {
            "name": self.config.name,
            "room": self.config.room,
            "id": self._id,
            "joined": joined,
            "join_ms": round_tenth(
                None if self._joined_at is None else (self._joined_at - self._started_at) * 1000
            ),
            "join_phases_ms": None if self._timeline is None else self._timeline.to_json(),
            "published": self._published,
            "published_tracks": list(self._published_tracks),
            "started_unix": round(self._started_unix, 3),
            "duration_s": round(end - self._started_at, 3),
            "tracks": [t.to_json(end, grace, freeze_limit) for t in tracks],
            "events": list(self._events),
            "left_reason": self._left_reason,
            "unattributed_frames": self._unattributed_frames,
            "errors": list(self._errors),
            "simulcast": simulcast,
            "reconnects": [r.to_json(self._started_at) for r in self._reconnects],
            "transport_cc": self._transport_cc_summary(),
            "receive_buffers": self.receive_buffers,
            "data": self.data.summary(),
            "limits": {
                "max_freeze_ms": self.config.max_freeze_ms,
                "max_loss_pct": self.config.max_loss_pct,
            },
            "ok": not failures,
            "failed": [f.to_json() for f in failures],
            "verdict": verdict_line(failures),
        }

    def _transport_cc_summary(self) -> dict[str, Any]:
        """Transport-cc of the subscribe connections (summed over reconnects): whether
        it was negotiated (the last connection's, else any ended one's), packets
        recorded, feedback packets sent and not sent (transport down), packets stamped
        with the kernel's receive time and (unknown to it) with the loop's."""
        parts = list(self._twcc_ended)
        if self._sub_twcc is not None:
            parts.append(self._sub_twcc.summary())
        out: dict[str, Any] = {
            "enabled": self.config.transport_cc,
            "negotiated": bool(parts) and parts[-1]["negotiated"],
        }
        keys = ("packets_recorded", "feedback_sent", "feedback_failed", "tap_errors")
        for key in (*keys, "kernel_stamped", "loop_stamped"):
            out[key] = sum(p[key] for p in parts)
        return out

    # ------------------------------------------------------------- signaling

    async def _join(
        self, timeout: float | None = None, on_connected: Reconnect | None = None
    ) -> None:
        """Open the websocket and join; ``on_connected`` notes when the server answered."""
        cfg = self.config
        timeout = cfg.join_timeout if timeout is None else timeout
        entries = (cfg.url, *cfg.fallback_urls)
        url = entries[self._entry % len(entries)]
        for hop in range(MAX_REDIRECTS + 1):
            if self._timeline is None:  # (from the run's start: the websocket opens next)
                self._timeline = JoinTimeline(self._started_at)
            client = ProtocolClient(
                url,
                on_message=self._on_message,
                on_invalid=self._on_invalid,
                heartbeat=WS_HEARTBEAT,
            )
            self._client = client
            try:
                await client.connect(timeout)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if hop == 0:  # the entry itself is unreachable: the next attempt tries another
                    self._entry += 1
                if isinstance(exc, TimeoutError):
                    raise JoinFailed(f"no websocket within {timeout:.1f} s") from None
                raise
            if on_connected is not None and on_connected.connected_at is None:
                on_connected.connected_at = self._clock()
            self._phase("ws_open")
            self._spawn(self._watch_connection(client))
            try:
                await client.join(cfg.room, cfg.name, timeout, token=cfg.token)
                return
            except Redirected as redirect:
                # another node serves the room (parley serve --redis): join there
                self._event(self._clock(), "redirected", url=redirect.redirect.url)
                url = redirect.base_url
                await client.close()
            except TimeoutError:
                raise JoinFailed(f"no joined within {timeout:.1f} s") from None
            except RequestFailed as exc:
                raise JoinFailed(f"{exc.error.code}: {exc.error.message}") from None
            except ClientClosed:
                shutdown = client.server_shutdown
                if shutdown is not None:
                    raise JoinFailed(f"server_shutdown: {shutdown.reason}") from None
                raise JoinFailed("websocket closed before joined") from None
        raise JoinFailed(f"more than {MAX_REDIRECTS} redirects")

    async def _publish(self) -> None:
        pc = create_peer_connection(self._ice_config())
        self._pub_pc = pc
        self._watch(pc, "publish")
        if self.config.simulcast:
            await self._publish_simulcast(pc)
            return
        for track in (ToneTrack(amplitude=self.config.volume), PatternTrack(fps=self.config.fps)):
            self._local_tracks.append(track)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if track.kind == "audio":
                set_opus_bitrate(transceiver.sender, self.config.audio_bitrate)
            else:  # --codec: VP8 (aiortc's first) or H.264 (its libx264 encoder)
                transceiver.setCodecPreferences(video_codecs(self.config.codec))
        self._open_data(pc)
        await pc.setLocalDescription(await pc.createOffer())  # gathers before returning
        self._phase("publish.offer_sent")  # (before: the answer may be handled first)
        await self._send(PublishOffer(pc.localDescription.sdp))

    async def _publish_simulcast(self, pc: RTCPeerConnection) -> None:
        """Audio through aiortc's sender; video as three encodings sent by
        :class:`SimulcastVideo` on the publish DTLS transport. aiortc's video
        transceiver only negotiates (its sender is hooked and sends nothing), and the
        offer text is munged to announce the RIDs (aiortc's SDP model has no simulcast)."""
        tone = ToneTrack(amplitude=self.config.volume)
        self._local_tracks.append(tone)
        audio = pc.addTransceiver(tone, direction="sendonly")
        set_opus_bitrate(audio.sender, self.config.audio_bitrate)
        video = pc.addTransceiver("video", direction="sendonly")
        self._video_sender = video.sender
        hook_sender(video.sender, self._on_video_negotiated)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self._media_port is not None:
                self._media_port.install_fast_path()

        self._open_data(pc)
        await pc.setLocalDescription(await pc.createOffer())  # gathers before returning
        munged = munge_simulcast_offer(pc.localDescription.sdp, [s.rid for s in DEFAULT_LAYERS])
        self._munged = munged
        self._simulcast = SimulcastSender.create(
            DEFAULT_LAYERS, munged.mid, munged.extensions, random.Random()
        )
        self._phase("publish.offer_sent")  # (before: the answer may be handled first)
        await self._send(PublishOffer(munged.sdp))

    def _on_video_negotiated(self, negotiated: NegotiatedRtp) -> None:
        """aiortc would start the video sender now (DTLS is up): start the simulcast path."""
        sender = self._simulcast
        port = self._media_port
        if sender is None or port is None or self._closed:
            return
        vp8 = next((c for c in negotiated.codecs if c.mimeType.lower() == "video/vp8"), None)
        if vp8 is None or vp8.payloadType is None:
            self._error("simulcast", "VP8 was not negotiated for video")
            return
        rtx = negotiated.rtx_payload_type(vp8.payloadType)
        sender.configure(vp8.payloadType, rtx, sender.layers[0].extensions)
        if self._simulcast_video is None:
            self._simulcast_video = SimulcastVideo(sender, port.send_rtp, self.config.fps)
            self._simulcast_video.start()
            self._event(self._clock(), "simulcast_started", payload_type=vp8.payloadType, rtx=rtx)

    def _on_publish_rtcp(self, data: bytes, now: float) -> None:
        video = self._simulcast_video
        if video is not None:
            video.on_rtcp(data)
        elif self._simulcast is not None:  # before the first frame: note keyframe requests
            self._simulcast.handle_rtcp(data)

    def _apply_simulcast_answer(self, sdp: str) -> None:
        """Take the extension ids from the server's answer and open the media port."""
        munged, sender, video_sender = self._munged, self._simulcast, self._video_sender
        if munged is None or sender is None or video_sender is None:
            return
        try:
            media = next((m for m in describe_remote_media(sdp) if m.mid == munged.mid), None)
        except ValueError:
            media = None
        if media is None or URI_RID not in media.extensions or "a=simulcast:" not in sdp:
            self._event(self._clock(), "simulcast_not_negotiated", mid=munged.mid)
            logger.warning("bot %s: the answer does not accept simulcast", self.config.name)
        extensions = munged.extensions
        if media is not None:
            extensions = SimulcastExtensions.from_map(media.extensions, munged.extensions)
        layer = sender.layers[0]
        sender.configure(layer.payload_type, layer.rtx_payload_type, extensions)
        if self._media_port is None:
            dtls = video_sender.transport
            self._media_port = MediaPort(dtls, lambda data, now: None, self._on_publish_rtcp)
            if self._pub_pc is not None and self._pub_pc.connectionState == "connected":
                self._media_port.install_fast_path()

    async def _leave(self) -> None:
        client = self._client
        if client is None or not client.connected:
            return
        self._leaving = True
        try:
            await client.send(Leave())
        except ClientClosed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._left.wait(), self.config.leave_timeout)

    async def _send(self, message: ClientMessage) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("not connected")
        await client.send(message)

    def _on_invalid(self, exc: ProtocolError) -> None:
        if exc.code == "unknown_type":
            logger.debug("bot %s: ignoring a message: %s", self.config.name, exc)
            return
        self._error(exc.code, f"server sent an invalid message: {exc}")

    async def _on_message(self, message: ServerMessage) -> None:
        try:
            await self._handle(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("bot %s: handling %s failed", self.config.name, message.type)
            self._error("internal", f"handling {message.type}: {exc!r}")

    async def _watch_connection(self, client: ProtocolClient) -> None:
        """When the websocket closes, the session is over; unexpected, it is a drop."""
        await client.closed.wait()
        if client.redirect is not None:
            return  # answered `redirect`: the bot joins elsewhere, the session goes on
        if not self._leaving and not self._closed and self._drop is None:
            self._drop = ("connection_lost", f"websocket closed (code {client.close_code})")
        self._left.set()
        self._session_over.set()

    def _on_server_shutdown(self, message: ServerShutdown) -> None:
        """``server_shutdown``: the server is going away and closes the websocket next."""
        now = self._clock()
        self._event(
            now,
            "server_shutdown",
            reason=message.reason,
            retry_after_ms=message.retry_after_ms,
            reconnect=message.reconnect,
        )
        if self._leaving or self._closed:
            return
        if self._drop is None:
            self._drop = ("server_shutdown", f"the server shut down ({message.reason})")
        self._retry_after_ms = message.retry_after_ms
        if not message.reconnect:  # the server said not to come back
            self._final = True
        self._session_over.set()

    async def _handle(self, message: ServerMessage) -> None:
        now = self._clock()
        if (self._leaving or self._closed) and isinstance(message, SubscribeOffer | PublishAnswer):
            return  # negotiations racing our own departure are moot
        match message:
            case Joined():
                self._on_joined(message, now)
                await self._request_layers(self._known_video_tracks())
            case ErrorMessage():
                self._on_error(message)
            case PublishAnswer():
                await self._on_publish_answer(message)
            case SubscribeOffer():
                await self._on_subscribe_offer(message, now)
            case ParticipantJoined(participant=participant):
                self._add_participant(participant, now)
                self._event(now, message.type, id=participant.id, name=participant.name)
            case ParticipantLeft(id=pid):
                for stats in self._tracks.values():
                    if stats.participant == pid:
                        stats.on_unpublished(now)
                self._event(now, message.type, id=pid)
            case TrackPublished(participant=pid, track=track):
                self._add_track(pid, track, now)
                self._event(now, message.type, participant=pid, track=track.id, kind=track.kind)
                if track.kind == "video" and pid != self._id:
                    await self._request_layers([track.id])
            case TrackUnpublished(participant=pid, track=track_id):
                key = (pid, track_id)
                if key in self._tracks:
                    self._tracks[key].on_unpublished(now)
                self._event(now, message.type, participant=pid, track=track_id)
            case Left(reason=reason, reconnect=reconnect):
                self._on_left(reason, now, final=reconnect is False)
            case Layer():
                self._on_layer(message, now)
            case ActiveSpeaker(participant=participant):
                self._event(now, message.type, participant=participant)
            case ServerShutdown():
                self._on_server_shutdown(message)
            case Pong():
                pass

    def _on_left(self, reason: str, now: float, final: bool = False) -> None:
        """``final``: the operator ended the session (``reconnect: false``): no rejoin."""
        self._left_reason = reason
        self._left.set()
        if not self._leaving:
            self._event(now, "left", reason=reason)
            if self._drop is None:
                self._final = final
                if final:
                    self._drop = ("removed", f"removed by the server's operator ({reason})")
                elif reason == "room closed":  # an older server's shutdown
                    self._drop = ("server_shutdown", "the server closed the room")
                else:
                    self._drop = ("removed", f"removed by the server ({reason})")
            self._session_over.set()

    def _on_joined(self, message: Joined, now: float) -> None:
        self._id = message.id
        if self._joined_at is None:
            self._joined_at = now
            self._phase("joined", now)
        self._session_joined_at = now
        self._ice_servers = message.ice_servers
        for participant in message.participants:
            self._add_participant(participant, now)

    def _on_layer(self, message: Layer, now: float) -> None:
        track, rid, paused = message.track, message.rid, message.paused
        width, height = message.width, message.height
        switched = False
        for stats in self._tracks.values():
            if stats.track == track:
                switched = stats.on_layer(rid, paused, width, height)
        self._event(
            now,
            "layer",
            track=track,
            rid=rid,
            width=width,
            height=height,
            paused=paused,
            switch=switched,
        )

    # ------------------------------------------------------------ layer requests

    async def set_max_height(self, track_id: str | None, max_height: int) -> None:
        """Ask for at most ``max_height`` of one remote video track (``track_id``), or of
        every remote video track and those published later (``None``). Sends
        ``set_layer`` at once for the tracks known now."""
        if track_id is None:
            self.config.max_height = max_height
            self._max_height_overrides.clear()
            targets = self._known_video_tracks()
        else:
            self._max_height_overrides[track_id] = max_height
            targets = [track_id]
        await self._request_layers(targets, force=True)

    def _known_video_tracks(self) -> list[str]:
        return [
            stats.track
            for stats in self._tracks.values()
            if stats.kind == "video" and stats.unpublished_at is None
        ]

    def _wanted_max_height(self, track_id: str) -> int | None:
        return self._max_height_overrides.get(track_id, self.config.max_height)

    async def _request_layers(self, track_ids: Iterable[str], *, force: bool = False) -> None:
        """Send ``set_layer`` for each track whose wanted height is not yet requested."""
        for track_id in track_ids:
            height = self._wanted_max_height(track_id)
            if height is None or (not force and self._max_height_sent.get(track_id) == height):
                continue
            client = self._client
            if client is None or not client.connected or self._leaving or self._closed:
                return
            self._max_height_sent[track_id] = height
            await self._send(SetLayer(track_id, height, request_id=f"set_layer:{track_id}"))
            self._event(self._clock(), "set_layer", track=track_id, max_height=height)

    def _on_error(self, message: ErrorMessage) -> None:
        code, text, request = message.code, message.message, message.request
        if request == "set_layer" and code == "not_found":
            # a set_layer that raced the subscription: it is sent again when the track
            # first appears in a subscribe_offer
            self._event(self._clock(), "set_layer_not_found", request_id=message.request_id)
            return
        logger.warning("bot %s: server error %s (%s): %s", self.config.name, code, request, text)
        entry: dict[str, Any] = {"code": code, "message": text}
        if request is not None:
            entry["request"] = request
        self._errors.append(entry)

    async def _on_publish_answer(self, message: PublishAnswer) -> None:
        pc = self._pub_pc
        if pc is None:
            self._error("protocol", "publish_answer without a publish_offer")
            return
        self._phase("publish.answer_received")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=message.sdp, type="answer"))
        if self.config.simulcast:
            self._apply_simulcast_answer(message.sdp)
        self._published = True
        self._published_tracks = [t.to_json() for t in message.tracks]

    async def _on_subscribe_offer(self, message: SubscribeOffer, now: float) -> None:
        self._phase("subscribe.offer_received", now)
        sdp = message.sdp
        mapping: dict[str, TrackKey] = {}
        for mid, info in message.tracks.items():
            key = (info.participant, info.track)
            mapping[mid] = key
            stats = self._tracks.get(key)
            if stats is None:
                stats = self._new_stats(key, info.kind, now)
            stats.mid = mid

        pc = self._sub_pc
        if pc is None:
            pc = create_peer_connection(self._ice_config())
            self._sub_pc = pc
            self._watch(pc, "subscribe")
            pc.on("track", self._on_track)
            if self.config.transport_cc:
                self._sub_twcc = SubscribeTransportCc(pc, self._rng.randint(1, 0xFFFFFFFF))

        async with self._stats_lock:
            # Close the books of the mappings that change, then start the new ones
            # from the receiver's current counters (a reused slot may keep its SSRC).
            await self._sample_stats_locked()
            for mid in set(self._mid_map) | set(mapping):
                if self._mid_map.get(mid) != mapping.get(mid):
                    raw = self._raw_stats.get(mid)
                    if raw is None:
                        self._stats_base.pop(mid, None)
                    else:
                        self._stats_base[mid] = raw
            self._mid_map = mapping
        self._rtx_ssrcs.update(int(m.group(2)) for m in _FID_GROUP.finditer(sdp))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        # this process decodes on the thread that reads the sockets: a kernel buffer of
        # 2 MB (a browser's network thread keeps reading) so that falling behind on a
        # busy machine delays packets instead of dropping them
        self.receive_buffers = enlarge_receive_buffers(pc, RECEIVE_BUFFER)
        answer = pc.localDescription.sdp
        for mid, codec in answer_codecs(answer).items():  # what each m-line decodes
            if mid in mapping and (stats := self._tracks.get(mapping[mid])) is not None:
                stats.codec = codec
        if self._sub_twcc is not None:
            # aiortc drops transport-cc from its answer: keep it, and send the feedback
            answer = self._sub_twcc.answer(sdp, answer)
        self._phase("subscribe.answer_sent")
        await self._send(SubscribeAnswer(answer))
        self._answered.set()
        # (Re)send set_layer once per video track when it first reaches us: an earlier
        # request may have come before the server had subscribed us to it.
        fresh = [
            key[1]
            for key in mapping.values()
            if key[1] not in self._offered_tracks
            and (stats := self._tracks.get(key)) is not None
            and stats.kind == "video"
        ]
        self._offered_tracks.update(key[1] for key in mapping.values())
        await self._request_layers(fresh, force=True)

    # ------------------------------------------------------------ bookkeeping

    def _add_participant(self, participant: ParticipantInfo, now: float) -> None:
        self._names[participant.id] = participant.name
        for track in participant.tracks:
            self._add_track(participant.id, track, now)

    def _add_track(self, pid: str, track: TrackInfo, now: float) -> None:
        if pid == self._id:
            return
        key = (pid, track.id)
        stats = self._tracks.get(key)
        if stats is None:
            self._new_stats(key, track.kind, now)
        else:
            stats.on_published(now)

    def _new_stats(self, key: TrackKey, kind: str, now: float) -> TrackStats:
        stats = TrackStats(
            participant=key[0],
            track=key[1],
            kind=kind,
            started_at=self._started_at,
            published_at=now,
            participant_name=self._names.get(key[0]),
            session=self._session_index,
        )
        self._tracks[key] = stats
        return stats

    def _event(self, now: float, type_: str, **fields: Any) -> None:
        self._events.append(
            {"t_ms": round((now - self._started_at) * 1000, 1), "type": type_, **fields}
        )

    def _error(self, code: str, message: str) -> None:
        logger.warning("bot %s: %s: %s", self.config.name, code, message)
        self._errors.append({"code": code, "message": message})

    def _ice_config(self) -> IceConfig:
        return IceConfig(servers=self._ice_servers, addresses=(self.config.ice_address,))

    def _spawn(self, coro: Coroutine[Any, Any, None], session: bool = True) -> None:
        """Run ``coro`` as a task of the current connection (cancelled with it), or of
        the bot's whole life (``session=False``)."""
        tasks = self._session_tasks if session else self._tasks
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _phase(self, phase: str, now: float | None = None) -> None:
        """Note a phase of the first join (later sessions are not timed)."""
        timeline = self._timeline
        if timeline is not None and self._session_index == 0:
            timeline.mark(phase, self._clock() if now is None else now)

    def _watch(self, pc: RTCPeerConnection, role: str) -> None:
        @pc.on("iceconnectionstatechange")
        def on_ice() -> None:
            if pc.iceConnectionState in ("connected", "completed"):
                self._phase(f"{role}.ice_connected")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                self._phase(f"{role}.dtls_connected")
            logger.debug("bot %s: %s connection %s", self.config.name, role, state)
            if state == "failed" and not self._closed and pc in (self._pub_pc, self._sub_pc):
                self._error("ice_failed", f"{role} peer connection failed")
                self._failed_connections.append(role)

    # ------------------------------------------------------------- receiving

    def _on_track(self, track: MediaStreamTrack) -> None:
        pc = self._sub_pc
        mid = None
        if pc is not None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    mid = transceiver.mid
                    break
        if mid is None:
            self._error("internal", f"no transceiver for remote {track.kind} track")
            return
        self._observe(transceiver.receiver, mid)
        release_frames_on_marker(transceiver.receiver)
        self._spawn(self._consume(track, mid))

    def _observe(self, receiver: RTCRtpReceiver, mid: str) -> None:
        """Count the audio packets ``receiver`` is handed (once per receiver: an m-line
        reused for another track keeps its receiver)."""
        if receiver in self._observed:
            return
        self._observed.add(receiver)

        def on_packet(packet: RtpPacket) -> None:
            key = self._mid_map.get(mid)
            stats = self._tracks.get(key) if key is not None else None
            if stats is not None and stats.kind == "video":
                self._on_video_packet(packet, stats.codec)
            if stats is not None and stats.kind == "audio":
                second = int(self._clock() - stats.started_at)
                stats.audio_packets.on_packet(packet.ssrc, packet.sequence_number, second)

        observe_received_rtp(receiver, on_packet)

    def _on_video_packet(self, packet: RtpPacket, codec: str | None) -> None:
        """The first video packets of the first join: first media packet (not RTX, not
        padding), first keyframe (VP8 only: an H.264 join has no ``first_keyframe``)."""
        timeline = self._timeline
        if timeline is None or timeline.has("subscribe.first_keyframe"):
            return
        if packet.ssrc in self._rtx_ssrcs or not packet.payload:
            return  # (retransmissions and the server's padding probes: not media)
        self._phase("subscribe.first_rtp")
        if codec != "vp8":
            return
        try:
            keyframe = Vp8Descriptor(packet.payload).keyframe
        except RtpError:
            return
        if keyframe:
            self._phase("subscribe.first_keyframe")

    async def _consume(self, track: MediaStreamTrack, mid: str) -> None:
        """Decode ``track`` until it ends, crediting frames to what ``mid`` carries now.

        aiortc's jitter buffer releases a frame only once the next one starts, so when
        a slot is reused the previous track's last frame can come out after the switch
        and be credited to the new track (one frame, possibly of the old size).
        """
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = self._clock()
            key = self._mid_map.get(mid)
            stats = self._tracks.get(key) if key is not None else None
            if stats is None:
                self._unattributed_frames += 1
                continue
            if isinstance(frame, VideoFrame):
                stats.on_frame(now, frame.width, frame.height)
                self._phase("subscribe.first_frame", now)
            else:
                stats.on_frame(now)
                if isinstance(frame, AudioFrame) and frame.pts is not None:
                    stats.on_audio_pts(now, frame.pts, frame.samples)
            if self._reconnects:
                self._reconnects[-1].on_frame(stats.participant_name, now)

    async def _sample_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            await self._sample_stats()

    async def _sample_stats(self) -> None:
        async with self._stats_lock:
            await self._sample_stats_locked()

    async def _sample_stats_locked(self) -> None:
        """Attribute each receiver's inbound-rtp counters to the track its mid carries."""
        pc = self._sub_pc
        if pc is None or self._closed:
            return
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            if mid is None:
                continue
            report = await transceiver.receiver.getStats()
            inbound = next((s for s in report.values() if s.type == "inbound-rtp"), None)
            # aiortc reports one inbound-rtp entry per receiver: the last SSRC seen wins,
            # which is the RTX stream once a retransmission arrived. Skip those samples.
            if inbound is None or inbound.ssrc in self._rtx_ssrcs:
                continue
            raw = (inbound.ssrc, inbound.packetsReceived, inbound.packetsLost)
            self._raw_stats[mid] = raw
            key = self._mid_map.get(mid)
            stats = self._tracks.get(key) if key is not None else None
            if stats is None:
                continue
            base = self._stats_base.get(mid)
            if base is not None and base[0] == raw[0]:
                stats.on_packets(max(raw[1] - base[1], 0), raw[2] - base[2], self._clock())
            else:
                stats.on_packets(raw[1], raw[2], self._clock())


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` as JSON, atomically (a reader never sees half a file)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(target)
