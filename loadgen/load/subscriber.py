"""A lean load subscriber (:class:`LoadSubscriber`): no decoding; it counts packets, checks
continuity, times every packet from its tag and sends receiver reports and NACKs, and
transport-cc feedback when the server's offer negotiates it (``loadgen/media/twcc.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from typing import Any

from loadgen.load.bots import (
    PLI_INTERVAL,
    PSFB_PLI,
    BotSpec,
    LoadBot,
    SessionFactory,
    WorkerMetrics,
)
from loadgen.load.e2e import FrameAssembler, FrameDecoder
from loadgen.load.metrics import (
    CODE_NAMES,
    FLAG_KEYFRAME,
    FLAG_VIDEO,
    KINDS,
    LAYER_AUDIO,
    FreezeStats,
    StreamRx,
    TrackRx,
    parse_tag,
    split_stream_id,
)
from loadgen.load.rtcp import NACK_RETRY, ReceiverFeedback, rtp_header, rtx_original_seq
from loadgen.load.session import OfferedTrack, ParleySession
from loadgen.media.twcc import FEEDBACK_INTERVAL, TransportCcRecorder
from sfu.aiortc_adapter import (
    describe_remote_media,
)
from sfu.sdp import answer_transport_cc, keep_transport_cc

# ----------------------------------------------------------------- subscriber


class LoadSubscriber(LoadBot):
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
        #: transport-cc: the extension id the server's offer gave (None: not offered, or
        #: ``spec.feedback`` off), the arrivals it reports, the task sending them
        self._twcc_id: int | None = None
        self.twcc = TransportCcRecorder(self._own_ssrc)
        self._twcc_task: asyncio.Task[None] | None = None
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
        if self.spec.feedback:
            # aiortc's answer drops what it does not implement: keep transport-wide-cc
            # (the same id as offered; BUNDLE gives every m-section the same one)
            answer = keep_transport_cc(answer, sdp)
            self._twcc_id = answer_transport_cc(answer)
        if self._twcc_id is not None:
            if self._twcc_task is None:
                self._twcc_task = asyncio.ensure_future(self._send_transport_feedback())
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

    async def _send_transport_feedback(self) -> None:
        """Transport-cc feedback every ``FEEDBACK_INTERVAL`` s, of what arrived since."""
        while True:
            await asyncio.sleep(FEEDBACK_INTERVAL)
            port = self.sub_port
            if port is not None:
                for packet in self.twcc.feedback():
                    port.send(packet)

    def _on_rtp(self, data: bytes, now: float) -> None:
        if self._twcc_id is not None:
            self.twcc.on_rtp(data, self._twcc_id, now)
        tag = parse_tag(data)
        if tag is None:
            self.untagged += 1  # e.g. the server's padding-only probes
            if self.spec.feedback:
                _, seq, ssrc = rtp_header(data)
                self.feedback.on_rtp(ssrc, seq, now)
            return
        if self._awaiting_media is not None:
            self.media_back(now)
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
        if video and self.first_frame_at is None:
            self.phase("subscribe.first_rtp", now)
            if tag.flags & FLAG_KEYFRAME:
                self.phase("subscribe.first_keyframe", now)
        assembler = self.assembler
        if assembler is not None and video:
            assembler.on_packet(key, data, tag)
        if track.on_packet(tag, now):
            if self.first_frame_at is None:
                self.first_frame_at = now
                self.phase("subscribe.first_frame", now)
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
            struct.pack("!BBHII", 0x80 | PSFB_PLI, 206, 2, self._own_ssrc, media_ssrc)
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

    def bind_session(self) -> None:
        self.session.on_layer = self._on_layer

    async def _stop_feedback(self) -> None:
        """Stop the NACK timer and the feedback tasks (receiver reports, transport-cc)."""
        if self._nack_timer is not None:
            self._nack_timer.cancel()
            self._nack_timer = None
        for task in (self._feedback_task, self._twcc_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._feedback_task = self._twcc_task = None

    async def reset_media(self) -> None:
        await self._stop_feedback()
        self._twcc_id = None
        await super().reset_media()

    def finish(self, end: float) -> None:
        for track in self.tracks.values():
            track.finish(end)
        if self.spec.watch:
            self.timeline.append(self._snapshot(end))

    async def close_media(self) -> None:
        await self._stop_feedback()
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
            "join_phases_ms": self.join_phases,
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
            "transport_cc": self._twcc_id is not None,
            "transport_cc_feedback_sent": self.twcc.feedback_sent,
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
