"""A load publisher (:class:`LoadPublisher`): replays the prepared clips (or encodes live with
``--e2e``) as tagged RTP, answers keyframe requests and NACKs, and, with simulcast, adapts
its layers to loss as a browser does."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket, RtcpSrPacket

from loadgen.load.bots import (
    NTP_EPOCH_OFFSET,
    PSFB_FIR,
    PSFB_PLI,
    RTPFB_NACK,
    BotSpec,
    LoadBot,
    SessionFactory,
    WorkerMetrics,
)
from loadgen.load.e2e import LiveEncoder
from loadgen.load.metrics import (
    LAYER_AUDIO,
    LAYER_VIDEO,
    SIMULCAST_CODES,
    stream_id,
)
from loadgen.load.session import ParleySession
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
    hook_sender,
)
from sfu.rtp.packet import abs_send_time
from sfu.rtp.rtcp import normalize_lost, parse_rtcp

# ------------------------------------------------------------------ publisher


class LoadPublisher(LoadBot):
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
        #: tag sequence numbers reached per stream id, kept across a rejoin (the
        #: subscribers count what a failover lost as a gap, not as a new stream)
        self._tag_seqs: dict[int, int] = {}
        #: simulcast: the loss-based uplink control a browser has (``loadgen/media/simulcast/``)
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
            self.audio.tag_seq = self._tag_seqs.get(self.audio.stream, 0)
            self._tasks.append(asyncio.ensure_future(self._audio_loop()))
        else:
            rtx_pt = negotiated.rtx_payload_type(pt)
            self.video = self._video_streams(negotiated, pt, rtx_pt, ssrc, rtx_ssrc)
            for stream in self.video:
                stream.tag_seq = self._tag_seqs.get(stream.stream, 0)
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
        if self.audio is not None and self.video:
            if self.media_started_at is None:
                self.media_started_at = time.monotonic()
            else:  # publishing again after a rejoin
                self.media_back(time.monotonic())

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
            send_time = abs_send_time(time.time() + NTP_EPOCH_OFFSET)
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
            ntp = time.time() + NTP_EPOCH_OFFSET
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
                if packet.fmt == PSFB_PLI:
                    stream = self._stream_for(packet.media_ssrc)
                    if stream is not None:
                        stream.keyframe_requested = True
                elif packet.fmt == PSFB_FIR:
                    fci = packet.fci
                    for pos in range(0, len(fci) - 7, 8):
                        stream = self._stream_for(int.from_bytes(fci[pos : pos + 4]))
                        if stream is not None:
                            stream.keyframe_requested = True
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTPFB_NACK:
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

    async def reset_media(self) -> None:
        for stream in [*self.video, *([self.audio] if self.audio is not None else [])]:
            self._tag_seqs[stream.stream] = stream.tag_seq
        await self.close_media()
        self.encoder = None
        self.pc = self.port = None
        self.audio = None
        self.video = []
        self.players = []
        self.uplink = None
        self._audio_sender = self._video_sender = None
        self._answer = self._munged_mid = None
        self._sim_ext = None
        await super().reset_media()

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
