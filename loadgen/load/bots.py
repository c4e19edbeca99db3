"""The lean bots of ``parley load``: a publisher that replays cached media, a subscriber
that only counts.

Both speak the signaling protocol of ``docs/protocol.md`` (the web page's) over
``{url}/ws``. Peer connections come from :func:`sfu.aiortc_adapter.create_peer_connection`
(ICE only on the given address, no public STUN) and carry media through
:class:`sfu.aiortc_adapter.MediaPort`: aiortc negotiates, but neither encodes nor
decodes. A publisher sends tagged RTP (:class:`loadgen.media.prepared.OutStream`); a
subscriber reads each packet's tag right after SRTP decryption, records its one-way
latency and feeds :class:`loadgen.load.metrics.TrackRx`. Publishers answer PLI/FIR
with a keyframe and NACK with RTX; subscribers send a PLI when a frame breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket, RtcpSrPacket

from loadgen.load.e2e import FrameAssembler, FrameDecoder, LiveEncoder
from loadgen.load.metrics import (
    CODE_NAMES,
    FLAG_VIDEO,
    KINDS,
    LAYER_AUDIO,
    LAYER_VIDEO,
    SIMULCAST_CODES,
    FreezeStats,
    Interval,
    LatencyHistogram,
    StreamRx,
    TrackRx,
    parse_tag,
    split_stream_id,
    stream_id,
)
from loadgen.load.rtcp import NACK_RETRY, ReceiverFeedback, rtp_header, rtx_original_seq
from loadgen.load.session import OfferedTrack, OfferHandler, ParleySession, ServerSession
from loadgen.media.prepared import OPUS_FRAME, SINGLE_LAYER, ClipPlayer, MediaSet, OutStream
from loadgen.media.simulcast import (
    DEFAULT_LAYERS,
    URI_ABS_SEND_TIME,
    URI_MID,
    SimulcastExtensions,
    UplinkControl,
    munge_simulcast_offer,
    vp8_is_keyframe,
)
from sfu.aiortc_adapter import (
    MediaPort,
    NegotiatedRtp,
    create_peer_connection,
    describe_remote_media,
    hook_receiver,
    hook_sender,
)
from sfu.config import IceConfig
from sfu.rtp.packet import abs_send_time
from sfu.rtp.rtcp import normalize_lost, parse_rtcp

logger = logging.getLogger(__name__)

_NTP_EPOCH_OFFSET = 2_208_988_800
_PSFB_PLI = 1
_PSFB_FIR = 4
_RTPFB_NACK = 1
#: At most one PLI per track per this many seconds from a subscriber.
PLI_INTERVAL = 0.5


@dataclass(slots=True)
class BotSpec:
    """One bot of a load run. ``index`` is global per role (stream ids use it)."""

    role: str  # "publisher" | "subscriber"
    room: str
    name: str
    index: int
    start_at: float  # time.monotonic() when it starts joining
    simulcast: bool = False
    max_height: int | None = None
    #: glass to glass: publishers encode live, subscribers decode (``loadgen/load/e2e.py``)
    e2e: bool = False
    #: subscribers: keep a per-second timeline and the server's ``layer`` messages
    #: (the analysis of impaired links, ``loadgen/impair/schedule.py``)
    watch: bool = False
    #: subscribers: send receiver reports and NACKs (``loadgen/load/rtcp.py``)
    feedback: bool = True


# -------------------------------------------------------------- shared metrics


class WorkerMetrics:
    """Everything one worker process measures; ``interval`` is reset every second."""

    def __init__(self) -> None:
        self.total = Interval()
        self.interval = Interval()
        self.subscribers: list[LoadSubscriber] = []
        self._last_rx: dict[str, tuple[int, int, int, int]] = {}
        self._last_repaired: dict[str, int] = {}
        #: capture-to-decode latency (``--e2e``), recorded from decoder threads
        self.e2e = LatencyHistogram()
        self._e2e_lock = threading.Lock()

    def record_e2e(self, latency_ms: float) -> None:
        with self._e2e_lock:
            self.e2e.record(latency_ms)

    def record_latency(self, kind: str, latency_ms: float) -> None:
        self.total.latency[kind].record(latency_ms)
        self.interval.latency[kind].record(latency_ms)

    def count_sent(self, kind: str) -> None:
        self.total.counters[kind].sent += 1
        self.interval.counters[kind].sent += 1

    def take_interval(self) -> Interval:
        """The second that just ended: its latencies and its counter deltas."""
        interval = self.interval
        self.interval = Interval()
        for kind in KINDS:
            now = _rx_counters(self.subscribers, kind)
            last = self._last_rx.get(kind, (0, 0, 0, 0))
            counters = interval.counters[kind]
            counters.received = now[0] - last[0]
            counters.lost = now[1] - last[1]
            counters.expected = now[2] - last[2]
            counters.duplicates = now[3] - last[3]
            repaired = _repaired(self.subscribers, kind)
            counters.repaired = repaired - self._last_repaired.get(kind, 0)
            self._last_repaired[kind] = repaired
            self._last_rx[kind] = now
        return interval

    def finish_counters(self) -> None:
        for kind in KINDS:
            received, lost, expected, duplicates = _rx_counters(self.subscribers, kind)
            counters = self.total.counters[kind]
            counters.received = received
            counters.lost = lost
            counters.expected = expected
            counters.duplicates = duplicates
            counters.repaired = _repaired(self.subscribers, kind)


def _rx_counters(subscribers: list[LoadSubscriber], kind: str) -> tuple[int, int, int, int]:
    received = lost = expected = duplicates = 0
    video = kind == "video"
    for sub in subscribers:
        for stream, rx in sub.streams.items():
            if (split_stream_id(stream)[1] != LAYER_AUDIO) == video:
                received += rx.received
                lost += rx.lost
                expected += rx.expected
                duplicates += rx.duplicates
    return received, lost, expected, duplicates


def _repaired(subscribers: list[LoadSubscriber], kind: str) -> int:
    return sum(sub.repaired[kind] for sub in subscribers)


# ----------------------------------------------------------------------- base

SessionFactory = Callable[[str, OfferHandler], ServerSession]


class _LoadBot:
    """Join, run until :meth:`stop`, leave. Errors are recorded, never raised."""

    def __init__(
        self,
        spec: BotSpec,
        url: str,
        metrics: WorkerMetrics,
        ice_address: str = "127.0.0.1",
        session_factory: SessionFactory = ParleySession,
    ) -> None:
        self.spec = spec
        self.url = url
        self.metrics = metrics
        self.ice_address = ice_address
        self.errors: list[str] = []
        self.joined = False
        self.ws_open_at: float | None = None
        self.joined_at: float | None = None
        self.session = session_factory(url, self.on_offer)
        #: the peer connection on which this bot receives (every bot answers offers)
        self.sub_pc: RTCPeerConnection | None = None
        self.sub_port: MediaPort | None = None
        self._hooked: set[int] = set()
        self.packets_ignored = 0
        self._stop = asyncio.Event()
        self._closed = False
        self.done = False

    def ice_config(self) -> IceConfig:
        return IceConfig(servers=self.session.ice_servers, addresses=(self.ice_address,))

    async def run(self, join_timeout: float = 15.0) -> None:
        delay = self.spec.start_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        if self._stop.is_set():
            self.done = True
            return
        try:
            self.ws_open_at = time.monotonic()
            await self.session.join(
                self.spec.room, self.spec.name, self.spec.role == "publisher", join_timeout
            )
            self.joined_at = time.monotonic()
            self.joined = True
            await self.started()
            stop = asyncio.ensure_future(self._stop.wait())
            closed = asyncio.ensure_future(self.session.closed.wait())
            await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            closed.cancel()
            if not self._stop.is_set():
                self.errors.append("the server closed the connection")
        except Exception as exc:  # recorded in the report
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            await self.close()
            self.errors.extend(self.session.errors)
            self.done = True

    def stop(self) -> None:
        self._stop.set()

    async def started(self) -> None:
        """Joined: publish, or wait for offers."""

    async def on_offer(self, sdp: str, tracks: list[OfferedTrack]) -> str:
        """A server offer of what to receive; returns the answer. Receivers are hooked
        (nothing decoded) and packets go to :meth:`_on_rtp` through a MediaPort."""
        pc = self.sub_pc
        if pc is None:
            pc = create_peer_connection(self.ice_config())
            self.sub_pc = pc

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState == "connected" and self.sub_port is not None:
                    self.sub_port.install_fast_path()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if id(transceiver) not in self._hooked:
                self._hooked.add(id(transceiver))
                hook_receiver(transceiver.receiver, lambda n: None)
            if self.sub_port is None and transceiver.receiver.transport is not None:
                self.sub_port = MediaPort(
                    transceiver.receiver.transport, self._on_rtp, self._on_sub_rtcp
                )
        await pc.setLocalDescription(await pc.createAnswer())
        if pc.connectionState == "connected" and self.sub_port is not None:
            self.sub_port.install_fast_path()
        return str(pc.localDescription.sdp)

    def _on_rtp(self, data: bytes, now: float) -> None:
        """A decrypted packet of what this bot receives (publishers only count them)."""
        self.packets_ignored += 1

    def _on_sub_rtcp(self, data: bytes, now: float) -> None:
        """RTCP on the receiving connection (publishers ignore it)."""

    async def _close_receiving(self) -> None:
        if self.sub_port is not None:
            self.sub_port.close()
        if self.sub_pc is not None:
            with contextlib.suppress(Exception):
                await self.sub_pc.close()

    async def close_media(self) -> None:
        """Stop media and close peer connections."""

    def summary(self) -> dict[str, Any]:
        """What this bot did, for the report's ``bots.list``."""
        return {"name": self.spec.name, "role": self.spec.role, "joined": self.joined}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.stopping = True
        await self.close_media()
        await self.session.close()


# ------------------------------------------------------------------ publisher


class LoadPublisher(_LoadBot):
    """Publishes Opus and VP8 (one layer, or three simulcast layers) from cached clips."""

    def __init__(
        self,
        spec: BotSpec,
        url: str,
        metrics: WorkerMetrics,
        media: MediaSet,
        ice_address: str = "127.0.0.1",
        session_factory: SessionFactory = ParleySession,
    ) -> None:
        super().__init__(spec, url, metrics, ice_address, session_factory)
        self.media = media
        self.rng = random.Random()
        self.pc: RTCPeerConnection | None = None
        self.port: MediaPort | None = None
        self.audio: OutStream | None = None
        self.video: list[OutStream] = []
        self.players: list[ClipPlayer] = []
        self.media_started_at: float | None = None
        self.encoder: LiveEncoder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._audio_sender: RTCRtpSender | None = None
        self._video_sender: RTCRtpSender | None = None
        self._munged_mid: str | None = None
        self._sim_ext: SimulcastExtensions | None = None
        self._answer: str | None = None
        self._start = 0.0
        #: simulcast: the loss-based uplink control a browser has (``loadgen/media/simulcast.py``)
        self.uplink: UplinkControl | None = None

    async def started(self) -> None:
        pc = create_peer_connection(self.ice_config())
        self.pc = pc
        audio = pc.addTransceiver("audio", direction="sendonly")
        video = pc.addTransceiver("video", direction="sendonly")
        self._audio_sender = audio.sender
        self._video_sender = video.sender
        hook_sender(audio.sender, lambda n: self._negotiated("audio", n))
        hook_sender(video.sender, lambda n: self._negotiated("video", n))
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        if self.spec.simulcast:
            munged = munge_simulcast_offer(sdp, [s.rid for s in DEFAULT_LAYERS])
            sdp = munged.sdp
            self._munged_mid = munged.mid
            self._sim_ext = munged.extensions
        self._answer = await self.session.publish(sdp, 15.0)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=self._answer, type="answer"))

    def _port(self, dtls: RTCDtlsTransport) -> MediaPort:
        if self.port is None:
            self.port = MediaPort(dtls, lambda data, now: None, self._on_rtcp)
        self.port.install_fast_path()
        return self.port

    def _negotiated(self, kind: str, negotiated: NegotiatedRtp) -> None:
        """aiortc would start this sender now (DTLS is up): start our stream instead."""
        if self._closed:
            return
        sender = self._audio_sender if kind == "audio" else self._video_sender
        if sender is None:
            return
        self._port(sender.transport)
        if not self._start:
            self._start = time.monotonic()
        codec = negotiated.primary_codec
        pt = codec.payloadType
        if pt is None:
            self.errors.append(f"no {kind} payload type")
            return
        ext = negotiated.extensions
        ssrc, rtx_ssrc = negotiated.ssrcs[0]
        mid = negotiated.mid.encode()
        if kind == "audio":
            self.audio = OutStream(
                stream=stream_id(self.spec.index, LAYER_AUDIO),
                video=False,
                ssrc=ssrc,
                payload_type=pt,
                clock_rate=codec.clockRate,
                extensions=[(ext[URI_MID], mid)] if URI_MID in ext else [],
                first_seq=self.rng.randint(0, 0xFFFF),
                timestamp_offset=self.rng.randint(0, 0xFFFFFFFF),
            )
            self._tasks.append(asyncio.ensure_future(self._audio_loop()))
        else:
            rtx_pt = negotiated.rtx_payload_type(pt)
            self.video = self._video_streams(negotiated, pt, rtx_pt, ssrc, rtx_ssrc)
            if self.spec.simulcast:
                self.uplink = UplinkControl(len(self.video))
            self.players = [
                ClipPlayer(
                    self.media.video[
                        DEFAULT_LAYERS[i].rid if self.spec.simulcast else SINGLE_LAYER.rid
                    ]
                )
                for i in range(len(self.video))
            ]
            if self.spec.e2e:
                specs = DEFAULT_LAYERS if self.spec.simulcast else (SINGLE_LAYER,)
                self.encoder = LiveEncoder(specs, self.media.fps)
            self._tasks.append(asyncio.ensure_future(self._video_loop()))
            self._tasks.append(asyncio.ensure_future(self._report_loop()))
        if self.audio is not None and self.video and self.media_started_at is None:
            self.media_started_at = time.monotonic()

    def _video_streams(
        self,
        negotiated: NegotiatedRtp,
        pt: int,
        rtx_pt: int | None,
        ssrc: int,
        rtx_ssrc: int | None,
    ) -> list[OutStream]:
        ext = negotiated.extensions
        mid = negotiated.mid.encode()
        if not self.spec.simulcast:
            return [
                OutStream(
                    stream=stream_id(self.spec.index, LAYER_VIDEO),
                    video=True,
                    ssrc=ssrc,
                    payload_type=pt,
                    clock_rate=90_000,
                    extensions=[(ext[URI_MID], mid)] if URI_MID in ext else [],
                    abs_send_time_id=ext.get(URI_ABS_SEND_TIME, 0),
                    rtx_ssrc=rtx_ssrc,
                    rtx_payload_type=rtx_pt,
                    first_seq=self.rng.randint(0, 0xFFFF),
                    timestamp_offset=self.rng.randint(0, 0xFFFFFFFF),
                    picture_id=self.rng.randint(0, 0x7FFF),
                )
            ]
        fallback = self._sim_ext
        assert fallback is not None
        sim = fallback
        if self._answer is not None:
            media = next(
                (m for m in describe_remote_media(self._answer) if m.mid == self._munged_mid),
                None,
            )
            if media is not None:
                sim = SimulcastExtensions.from_map(media.extensions, fallback)
        streams = []
        used: set[int] = set()
        for spec in DEFAULT_LAYERS:
            ssrcs: list[int] = []
            while len(ssrcs) < 2:
                value = self.rng.randint(1, 0xFFFFFFFF)
                if value not in used:
                    used.add(value)
                    ssrcs.append(value)
            rid = spec.rid.encode()
            static = [(sim.mid, mid)] if sim.mid else []
            streams.append(
                OutStream(
                    stream=stream_id(self.spec.index, SIMULCAST_CODES[spec.rid]),
                    video=True,
                    ssrc=ssrcs[0],
                    payload_type=pt,
                    clock_rate=90_000,
                    extensions=[*static, (sim.rid, rid)] if sim.rid else static,
                    abs_send_time_id=sim.abs_send_time,
                    rtx_ssrc=ssrcs[1],
                    rtx_payload_type=rtx_pt,
                    rtx_extensions=[*static, (sim.repaired_rid, rid)]
                    if sim.repaired_rid
                    else static,
                    first_seq=self.rng.randint(0, 0xFFFF),
                    timestamp_offset=self.rng.randint(0, 0xFFFFFFFF),
                    picture_id=self.rng.randint(0, 0x7FFF),
                )
            )
        return streams

    def _send(self, packet: bytes) -> None:
        port = self.port
        if port is not None:
            port.send_rtp(packet)

    async def _audio_loop(self) -> None:
        stream = self.audio
        assert stream is not None
        clip = self.media.audio
        start = time.monotonic()
        n = 0
        metrics = self.metrics
        while True:
            delay = start + n * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.1:  # fell behind (a stalled loop): skip, like a device would
                n += int(-delay / 0.02)
            payload = clip[n % len(clip)]
            self._send(stream.packet(payload, n * OPUS_FRAME, 0, 0, time.monotonic_ns()))
            metrics.count_sent("audio")
            n += 1

    async def _video_loop(self) -> None:
        fps = self.media.fps
        start = time.monotonic()
        n = 0
        metrics = self.metrics
        while True:
            delay = start + n / fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 1.0 / fps:
                n += int(-delay * fps)
            timestamp = round(n * 90_000 / fps)
            keys = [stream.keyframe_requested for stream in self.video]
            for stream in self.video:
                stream.keyframe_requested = False
            if self.encoder is not None:
                frames, _ = await self.encoder.encode(n, timestamp, keys)
                for stream, frame, key in zip(self.video, frames, keys, strict=True):
                    if key and not vp8_is_keyframe(frame):
                        stream.keyframe_requested = True  # libvpx dropped it: ask again
            else:
                frames = [
                    player.next(keyframe=key)
                    for player, key in zip(self.players, keys, strict=True)
                ]
            send_time = abs_send_time(time.time() + _NTP_EPOCH_OFFSET)
            active = self.uplink.active if self.uplink is not None else len(self.video)
            for index, (stream, frame) in enumerate(zip(self.video, frames, strict=True)):
                if not frame or index >= active:
                    continue
                for payload, marker, flags in stream.frame_payloads(frame):
                    self._send(
                        stream.packet(
                            payload, timestamp, marker, flags, time.monotonic_ns(), send_time
                        )
                    )
                    metrics.count_sent("video")
            n += 1

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            port = self.port
            if port is None:
                continue
            ntp = time.time() + _NTP_EPOCH_OFFSET
            elapsed = time.monotonic() - self._start
            streams = [*self.video, *([self.audio] if self.audio is not None else [])]
            for stream in streams:
                if stream.packets:
                    port.send(stream.sender_report(ntp, elapsed))

    def _stream_for(self, ssrc: int) -> OutStream | None:
        for stream in self.video:
            if stream.ssrc == ssrc:
                return stream
        if self.audio is not None and self.audio.ssrc == ssrc:
            return self.audio
        return None

    def _on_rtcp(self, data: bytes, now: float) -> None:
        for packet in parse_rtcp(data):
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                self._uplink_report(packet, now)
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt == _PSFB_PLI:
                    stream = self._stream_for(packet.media_ssrc)
                    if stream is not None:
                        stream.keyframe_requested = True
                elif packet.fmt == _PSFB_FIR:
                    fci = packet.fci
                    for pos in range(0, len(fci) - 7, 8):
                        stream = self._stream_for(int.from_bytes(fci[pos : pos + 4]))
                        if stream is not None:
                            stream.keyframe_requested = True
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == _RTPFB_NACK:
                stream = self._stream_for(packet.media_ssrc)
                if stream is None:
                    continue
                for seq in normalize_lost(packet.lost):
                    rtx = stream.retransmission(seq)
                    if rtx is not None:
                        self._send(rtx)

    def _uplink_report(self, packet: RtcpRrPacket | RtcpSrPacket, now: float) -> None:
        """The server's report of what arrives: drop the top layer on loss, like a browser."""
        uplink = self.uplink
        if uplink is None:
            return
        sent = {s.ssrc for i, s in enumerate(self.video) if i < uplink.active}
        worst = max((r.fraction_lost / 256 for r in packet.reports if r.ssrc in sent), default=None)
        if worst is None:
            return
        back = uplink.on_loss(worst, now)
        if back is not None:
            self.video[back].keyframe_requested = True

    async def close_media(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.encoder is not None:
            await self.encoder.close()
        if self.port is not None:
            self.port.close()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        await self._close_receiving()

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "room": self.spec.room,
            "role": "publisher",
            "joined": self.joined,
            "media_started": self.media_started_at is not None,
            "audio_packets": self.audio.packets if self.audio else 0,
            "video_packets": sum(s.packets for s in self.video),
            "keyframes": sum(s.keyframes for s in self.video),
            "rtx_sent": sum(s.rtx_sent for s in self.video),
            "packets_received": self.packets_ignored,
            "uplink_layers": self.uplink.active if self.uplink is not None else None,
            "uplink_changes": len(self.uplink.changes) if self.uplink is not None else 0,
            "errors": list(self.errors),
            **(
                {"watch": {"uplink": [[t, n] for t, n in self.uplink.changes]}}
                if self.spec.watch and self.uplink is not None
                else {}
            ),
        }


# ----------------------------------------------------------------- subscriber


class LoadSubscriber(_LoadBot):
    """Answers subscribe offers and counts: tags, latency, continuity, frames, freezes."""

    def __init__(
        self,
        spec: BotSpec,
        url: str,
        metrics: WorkerMetrics,
        ice_address: str = "127.0.0.1",
        session_factory: SessionFactory = ParleySession,
    ) -> None:
        super().__init__(spec, url, metrics, ice_address, session_factory)
        self.streams: dict[int, StreamRx] = {}
        #: (publisher index, kind) -> what this subscriber saw of that track
        self.tracks: dict[tuple[int, str], TrackRx] = {}
        self.first_frame_at: float | None = None
        self.untagged = 0
        self._pending_layers: list[OfferedTrack] = []
        self._layer_tasks: set[asyncio.Task[None]] = set()
        self._video_tracks: set[str] = set()
        self._last_pli: dict[tuple[int, str], float] = {}
        self._own_ssrc = random.randint(1, 0xFFFFFFFF)
        self.assembler: FrameAssembler | None = None
        self.decoder: FrameDecoder | None = None
        if spec.e2e:
            self.assembler = FrameAssembler()
            self.decoder = FrameDecoder(metrics.record_e2e)
        self.plis_sent = 0
        #: late arrivals that filled a gap, by kind (RTX repairs of what the link lost)
        self.repaired = {kind: 0 for kind in KINDS}
        self.feedback = ReceiverFeedback(self._own_ssrc, nack=spec.feedback)
        #: RTX SSRC -> its media SSRC (from the server's offers)
        self._rtx_media: dict[int, int] = {}
        #: SSRC -> track id, and video tracks the server said it paused (``layer``)
        self._ssrc_track: dict[int, str] = {}
        self._paused: set[str] = set()
        self.session.on_layer = self._on_layer
        self._nack_timer: asyncio.TimerHandle | None = None
        self._feedback_task: asyncio.Task[None] | None = None
        #: with ``spec.watch``: per second (t, audio expected, audio lost, video expected,
        #: video lost, video repaired, freezes, freeze seconds, frames)
        self.timeline: list[tuple[float, ...]] = []
        metrics.subscribers.append(self)

    @property
    def join_ms(self) -> float | None:
        """Websocket opening -> first decodable complete remote video frame."""
        if self.first_frame_at is None or self.ws_open_at is None:
            return None
        return (self.first_frame_at - self.ws_open_at) * 1000.0

    async def started(self) -> None:
        if self.spec.feedback or self.spec.watch:
            self._feedback_task = asyncio.ensure_future(self._every_second())

    async def _every_second(self) -> None:
        """Receiver reports (``spec.feedback``) and the timeline (``spec.watch``)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            port = self.sub_port
            if self.spec.feedback and port is not None:
                for packet in self.feedback.receiver_reports(now):
                    port.send(packet)
            if self.spec.watch:
                self.timeline.append(self._snapshot(now))

    def _snapshot(self, now: float) -> tuple[float, ...]:
        audio = [rx for s, rx in self.streams.items() if split_stream_id(s)[1] == LAYER_AUDIO]
        video = [rx for s, rx in self.streams.items() if split_stream_id(s)[1] != LAYER_AUDIO]
        freezes = self.freezes()
        return (
            round(now, 3),
            sum(rx.expected for rx in audio),
            sum(rx.lost for rx in audio),
            sum(rx.expected for rx in video),
            sum(rx.lost for rx in video),
            self.repaired["video"],
            freezes.count,
            round(freezes.total_s, 3),
            sum(t.frames for t in self.tracks.values()),
        )

    async def on_offer(self, sdp: str, tracks: list[OfferedTrack]) -> str:
        mids = {t.mid: t.track for t in tracks}
        with contextlib.suppress(ValueError):
            for media in describe_remote_media(sdp):
                for ssrc, rtx in media.ssrcs:
                    if media.mid in mids:
                        self._ssrc_track[ssrc] = mids[media.mid]
                    if media.kind == "video":
                        self.feedback.nack_ssrcs.add(ssrc)
                    if rtx is not None:
                        self._rtx_media[rtx] = ssrc
        answer = await super().on_offer(sdp, tracks)
        fresh = [t for t in tracks if t.kind == "video" and t.track not in self._video_tracks]
        self._video_tracks.update(t.track for t in fresh)
        if self.spec.max_height is not None and fresh:
            # after the answer is sent: the server knows the subscription by then
            self._pending_layers.extend(fresh)
            asyncio.get_running_loop().call_soon(self._request_layers)
        return answer

    def _request_layers(self) -> None:
        height = self.spec.max_height
        pending, self._pending_layers = self._pending_layers, []
        if height is None or self._closed:
            return
        for track in pending:
            task = asyncio.ensure_future(self.session.set_layer(track, height))
            self._layer_tasks.add(task)
            task.add_done_callback(self._layer_tasks.discard)

    def _on_rtp(self, data: bytes, now: float) -> None:
        tag = parse_tag(data)
        if tag is None:
            self.untagged += 1  # e.g. the server's padding-only probes
            if self.spec.feedback:
                _, seq, ssrc = rtp_header(data)
                self.feedback.on_rtp(ssrc, seq, now)
            return
        stream = tag.stream
        rx = self.streams.get(stream)
        video = tag.flags & FLAG_VIDEO
        kind = "video" if video else "audio"
        publisher = split_stream_id(stream)[0]
        key = (publisher, kind)
        track = self.tracks.get(key)
        late = False
        if rx is None:
            self.streams[stream] = StreamRx(tag.seq)
        else:
            if video and self._resumes(data, stream, track):
                rx.resume(tag.seq)
            late = tag.seq <= rx.highest
            if not rx.on_packet(tag.seq):
                return  # a duplicate
        if self.spec.feedback:
            _, seq, ssrc = rtp_header(data)
            media_ssrc = self._rtx_media.get(ssrc)
            if media_ssrc is not None:
                osn = rtx_original_seq(data)
                if osn is not None:
                    self.feedback.repaired(media_ssrc, osn)
                if late:
                    self.repaired[kind] += 1
            nack = self.feedback.on_rtp(ssrc, seq, now)
            if nack is not None and self.sub_port is not None:
                self.sub_port.send(nack)
                self._schedule_nack_retry()
        self.metrics.record_latency(kind, now * 1000.0 - tag.send_ns / 1e6)
        if track is None:
            track = self.tracks[key] = TrackRx(bool(video))
        assembler = self.assembler
        if assembler is not None and video:
            assembler.on_packet(key, data, tag)
        if track.on_packet(tag, now):
            if self.first_frame_at is None:
                self.first_frame_at = now
            if assembler is not None and self.decoder is not None:
                self.decoder.submit(key, assembler.take(key))
        elif track.needs_keyframe:
            self._request_keyframe(key, data, now)

    def _request_keyframe(self, key: tuple[int, str], data: bytes, now: float) -> None:
        if now - self._last_pli.get(key, -1e9) < PLI_INTERVAL or self.sub_port is None:
            return
        self._last_pli[key] = now
        media_ssrc = struct.unpack_from("!I", data, 8)[0]
        self.sub_port.send(
            struct.pack("!BBHII", 0x80 | _PSFB_PLI, 206, 2, self._own_ssrc, media_ssrc)
        )
        self.plis_sent += 1

    def _on_layer(self, track: str, rid: str | None, paused: bool) -> None:
        if paused and track in self._video_tracks:
            self._paused.add(track)

    def _resumes(self, data: bytes, stream: int, track: TrackRx | None) -> bool:
        """Whether this packet starts a layer again after another layer (or a pause)."""
        if track is not None and track.current_stream != stream:
            return True
        if self._paused:
            name = self._ssrc_track.get(struct.unpack_from("!I", data, 8)[0])
            if name in self._paused:
                self._paused.discard(name)
                return True
        return False

    def _schedule_nack_retry(self) -> None:
        if self._nack_timer is None and not self._closed:
            self._nack_timer = asyncio.get_running_loop().call_later(NACK_RETRY, self._retry_nacks)

    def _retry_nacks(self) -> None:
        self._nack_timer = None
        port = self.sub_port
        if port is None or self._closed:
            return
        for packet in self.feedback.nack_retries(asyncio.get_running_loop().time()):
            port.send(packet)
        if self.feedback.pending():
            self._schedule_nack_retry()

    def _on_sub_rtcp(self, data: bytes, now: float) -> None:
        self.feedback.on_rtcp(data, now)

    def finish(self, end: float) -> None:
        for track in self.tracks.values():
            track.finish(end)
        if self.spec.watch:
            self.timeline.append(self._snapshot(end))

    async def close_media(self) -> None:
        if self._nack_timer is not None:
            self._nack_timer.cancel()
            self._nack_timer = None
        if self._feedback_task is not None:
            self._feedback_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feedback_task
            self._feedback_task = None
        await self._close_receiving()
        if self.decoder is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.decoder.close)

    def freezes(self) -> FreezeStats:
        total = FreezeStats()
        for track in self.tracks.values():
            total.merge(track.freezes)
        return total

    def layer_switches(self) -> int:
        return sum(t.layer_switches for t in self.tracks.values())

    def summary(self) -> dict[str, Any]:
        freezes = self.freezes()
        return {
            "name": self.spec.name,
            "room": self.spec.room,
            "role": "subscriber",
            "max_height": self.spec.max_height,
            "joined": self.joined,
            "join_ms": None if self.join_ms is None else round(self.join_ms, 1),
            "tracks": len(self.tracks),
            "video_tracks_offered": len(self._video_tracks),
            "frames": sum(t.frames for t in self.tracks.values()),
            "broken_frames": sum(t.broken_frames for t in self.tracks.values()),
            "freezes": freezes.count,
            "freeze_ms": round(freezes.total_s * 1000, 1),
            "layer_switches": self.layer_switches(),
            "layers": sorted(
                {
                    split_stream_id(t.current_stream)[1]
                    for t in self.tracks.values()
                    if t.video and t.current_stream is not None
                }
            ),
            "packets": sum(rx.received for rx in self.streams.values()),
            "lost": sum(rx.lost for rx in self.streams.values()),
            "repaired": sum(self.repaired.values()),
            "untagged": self.untagged,
            "plis_sent": self.plis_sent,
            "nacks_sent": self.feedback.nacks_sent,
            "nacked_packets": self.feedback.nacked_packets,
            "receiver_reports_sent": self.feedback.reports_sent,
            "e2e_decoded": self.decoder.decoded if self.decoder else None,
            "e2e_unreadable": self.decoder.unreadable if self.decoder else None,
            "e2e_decode_errors": self.decoder.errors if self.decoder else None,
            "errors": list(self.errors),
            **({"watch": self._watch()} if self.spec.watch else {}),
        }

    def _watch(self) -> dict[str, Any]:
        """Raw material of the impaired-link analysis (times in ``time.monotonic()``)."""
        return {
            "layers": [list(e) for e in self.session.layer_events if e[1] in self._video_tracks],
            "timeline": [list(row) for row in self.timeline],
            "received_layers": {
                str(publisher): CODE_NAMES.get(split_stream_id(t.current_stream)[1])
                for (publisher, kind), t in self.tracks.items()
                if kind == "video" and t.current_stream is not None
            },
        }
