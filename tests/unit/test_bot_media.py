"""The headless bot: synthetic media, statistics, the ``ok`` rule, and a run against a
fake signaling server built from plain aiortc (loopback only; no Parley SFU needed)."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import socket
import time
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import WSMsgType, web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import get_decoder, get_encoder
from aiortc.codecs.vpx import vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from loadgen.bot import Bot, BotConfig, TrackStats, evaluate_ok, main
from loadgen.media.synthetic import (
    COUNTER_HEIGHT,
    COUNTER_WIDTH,
    PatternTrack,
    ToneTrack,
    draw_counter,
    read_counter,
)
from sfu.aiortc_adapter import create_peer_connection
from sfu.config import IceConfig

# ------------------------------------------------------------------ tone track


async def test_tone_track_frames_are_20ms_of_48k_mono_with_increasing_pts():
    track = ToneTrack(paced=False)
    frames = [await track.recv() for _ in range(50)]
    for i, frame in enumerate(frames):
        assert frame.samples == 960
        assert frame.sample_rate == 48_000
        assert frame.format.name == "s16"
        assert frame.layout.name == "mono"
        assert frame.pts == i * 960
        assert frame.time_base == fractions.Fraction(1, 48_000)
    # One second of audio: a continuous 440 Hz sine at the requested amplitude.
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)
    assert samples.size == 48_000
    spectrum = np.abs(np.fft.rfft(samples))
    assert int(np.argmax(spectrum)) == 440  # 1 Hz per bin for a 1 s window
    assert abs(samples.max() - 0.25 * 32767) < 2
    # No discontinuity at frame boundaries: consecutive samples never jump more than
    # a 440 Hz sine can in one sample.
    max_step = 0.25 * 32767 * 2 * np.pi * 440 / 48_000
    assert np.abs(np.diff(samples)).max() <= max_step + 2


async def test_tone_track_is_paced_in_real_time():
    track = ToneTrack()
    start = time.monotonic()
    for _ in range(6):
        await track.recv()
    elapsed = time.monotonic() - start
    assert 0.095 <= elapsed < 0.5  # 5 intervals of 20 ms


async def test_stopped_tracks_raise_media_stream_error():
    for track in (ToneTrack(paced=False), PatternTrack(paced=False)):
        await track.recv()
        track.stop()
        with pytest.raises(MediaStreamError):
            await track.recv()


# --------------------------------------------------------------- pattern track


async def test_pattern_track_frames_carry_a_readable_counter():
    track = PatternTrack(paced=False)
    previous = None
    for n in range(5):
        frame = await track.recv()
        assert (frame.width, frame.height) == (320, 240)
        assert frame.format.name == "yuv420p"
        assert frame.pts == n * 6000  # 90 kHz clock at 15 fps
        image = frame.to_ndarray()
        assert read_counter(image[:240]) == n
        if previous is not None:  # the pattern moves outside the counter
            assert not np.array_equal(image[COUNTER_HEIGHT:240], previous[COUNTER_HEIGHT:240])
        previous = image


async def test_pattern_track_is_paced_at_15_fps():
    track = PatternTrack()
    start = time.monotonic()
    for _ in range(4):
        await track.recv()
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 0.6  # 3 intervals of 1/15 s


@pytest.mark.parametrize("n", [0, 1, 2, 0x5555, 0xAAAA, 12345, 65535])
def test_draw_then_read_counter(n):
    image = np.full((240, 320), 77, dtype=np.uint8)
    draw_counter(image, n)
    assert read_counter(image) == n


def test_counter_wraps_and_rejects_bad_images():
    image = np.zeros((COUNTER_HEIGHT, COUNTER_WIDTH), dtype=np.uint8)
    draw_counter(image, 65536 + 9)
    assert read_counter(image) == 9
    with pytest.raises(ValueError):
        read_counter(np.full((240, 320), 128, dtype=np.uint8))  # no counter drawn
    with pytest.raises(ValueError):
        draw_counter(np.zeros((240, 200), dtype=np.uint8), 1)  # too narrow
    with pytest.raises(ValueError):
        read_counter(np.zeros((240, 320, 3), dtype=np.uint8))  # not a plane


def test_counter_survives_vp8_round_trip():
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)
    encoder = get_encoder(codec)
    decoder = get_decoder(codec)
    encoder.target_bitrate = 250_000  # aiortc's minimum: the harshest case
    track = PatternTrack(paced=False)
    decoded: list[tuple[int, int]] = []
    for n in [*range(40), *range(65_530, 65_540)]:
        frame = av.VideoFrame.from_ndarray(track.render(n), format="yuv420p")
        frame.pts = n * 6000
        frame.time_base = fractions.Fraction(1, 90_000)
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(vp8_depayload(p) for p in payloads)
        for out in decoder.decode(JitterFrame(data, timestamp)):
            assert (out.width, out.height) == (320, 240)
            decoded.append((n % 65_536, read_counter(out.to_ndarray(format="yuv420p")[:240])))
    assert len(decoded) == 50
    assert all(expected == got for expected, got in decoded)


# ----------------------------------------------------------------- statistics


def _stats(kind: str = "video", published_at: float = 100.0) -> TrackStats:
    return TrackStats(
        participant="p1", track="t1", kind=kind, started_at=100.0, published_at=published_at
    )


def test_track_stats_from_a_scripted_sequence():
    stats = _stats()
    script = [
        (100.5, 320, 240),
        (100.6, 320, 240),
        (100.7, 640, 480),
        (101.6, 640, 480),  # 900 ms freeze
        (101.7, 320, 240),  # back to an earlier size: a change like any other
        (101.8, 160, 120),
    ]
    for now, width, height in script:
        stats.on_frame(now, width, height)
    stats.on_packets(120, 3)
    assert stats.frames_decoded == 6
    assert stats.resolutions == [(320, 240), (640, 480), (320, 240), (160, 120)]
    assert stats.first_frame_ms == pytest.approx(500.0)
    assert stats.max_freeze_ms == pytest.approx(900.0)
    out = stats.to_json(end=110.0)
    assert out["resolutions"] == [[320, 240], [640, 480], [320, 240], [160, 120]]
    assert out["first_frame_ms"] == 500.0
    assert out["max_freeze_ms"] == 900.0
    assert (out["packets"], out["packets_lost"]) == (120, 3)
    assert out["participant"] == "p1" and out["track"] == "t1" and out["kind"] == "video"
    json.dumps(out)  # serialisable


def test_track_stats_audio_and_empty():
    audio = _stats("audio")
    assert audio.first_frame_ms is None and audio.frames_decoded == 0
    audio.on_frame(100.25)
    audio.on_frame(100.27)
    assert audio.resolutions == []
    assert audio.first_frame_ms == pytest.approx(250.0)
    assert audio.max_freeze_ms is None  # only reported for video
    video = _stats()
    assert video.max_freeze_ms is None  # nothing decoded yet
    video.on_frame(101.0, 320, 240)
    assert video.max_freeze_ms == 0.0  # a single frame has no gap


def test_required_tracks_and_the_ok_rule():
    end = 110.0
    decoded = _stats(published_at=100.0)
    decoded.on_frame(101.0, 320, 240)
    silent = _stats(published_at=100.0)
    late = _stats(published_at=108.0)  # published only 2 s before the end
    gone = _stats(published_at=100.0)
    gone.on_unpublished(104.0)
    assert decoded.required(end) and silent.required(end)
    assert not late.required(end) and not gone.required(end)
    assert late.required(end, grace=1.0)

    assert evaluate_ok(True, [decoded, late, gone], end)
    assert evaluate_ok(True, [], end)
    assert not evaluate_ok(True, [decoded, silent], end)  # a required track never decoded
    assert not evaluate_ok(False, [decoded], end)  # never joined
    assert not evaluate_ok(True, [late], end, grace=1.0)

    gone.on_published(107.5)  # republished: counts again once old enough
    assert not gone.required(end) and gone.required(end, grace=2.0)
    gone.on_unpublished(109.0)
    assert gone.unpublished_at == 109.0 and not gone.required(end, grace=0.0)


# ------------------------------------------------------------ fake server


class FakeServer:
    """Speaks the Parley signaling protocol with plain aiortc peer connections.

    On join it announces a publisher "Source" (audio a1, video v1) and offers those
    tracks on the subscribe connection. With ``renegotiate`` it then unpublishes v1
    (its mid goes unmapped), announces "Second" with video v2 and maps the same video
    mid to v2 (a reused slot, same SSRC) carrying a 352x288 pattern.
    """

    def __init__(
        self, *, refuse_join: bool = False, renegotiate: bool = True, offer_video: bool = True
    ) -> None:
        self.refuse_join = refuse_join
        self.renegotiate = renegotiate
        self.offer_video = offer_video
        self.received: list[dict[str, Any]] = []
        self.pcs: list[RTCPeerConnection] = []
        self.tracks: list[MediaStreamTrack] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.published_frames: dict[str, int] = {"audio": 0, "video": 0}
        self.published_counters: list[int] = []
        self.video_sent_at_switch: int | None = None
        self.video_sent_total: int | None = None
        self.flow_error: BaseException | None = None
        self._answer: asyncio.Queue[str] = asyncio.Queue()
        self._video_sender: Any = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        if self._video_sender is not None:
            report = await self._video_sender.getStats()
            outbound = [s for s in report.values() if s.type == "outbound-rtp"]
            self.video_sent_total = outbound[0].packetsSent
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for pc in self.pcs:
            await pc.close()
        for track in self.tracks:
            track.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)

    def _pc(self) -> RTCPeerConnection:
        pc = create_peer_connection(IceConfig())  # no ICE servers, 127.0.0.1 only
        self.pcs.append(pc)
        return pc

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            self.received.append(message)
            kind = message["type"]
            if kind == "join":
                if self.refuse_join:
                    await ws.send_json(
                        {
                            "type": "error",
                            "code": "join_refused",
                            "message": "full",
                            "request": "join",
                        }
                    )
                    continue
                await ws.send_json(
                    {
                        "type": "joined",
                        "id": "p-bot",
                        "room": message["room"],
                        "participants": [
                            {
                                "id": "p-src",
                                "name": "Source",
                                "tracks": [
                                    {"id": "a1", "kind": "audio"},
                                    {"id": "v1", "kind": "video"},
                                ],
                            }
                        ],
                        "ice_servers": [],
                    }
                )
                self._spawn(self._subscribe_flow(ws))
            elif kind == "publish_offer":
                await self._on_publish(ws, message["sdp"])
            elif kind == "subscribe_answer":
                self._answer.put_nowait(message["sdp"])
            elif kind == "leave":
                await ws.send_json({"type": "left", "reason": "leave"})
        return ws

    async def _on_publish(self, ws: web.WebSocketResponse, sdp: str) -> None:
        pc = self._pc()
        pc.on("track", lambda track: self._spawn(self._consume_published(track)))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        tracks = [
            {"id": f"bot-{t.kind}", "kind": t.kind, "mid": t.mid} for t in pc.getTransceivers()
        ]
        await ws.send_json(
            {"type": "publish_answer", "sdp": pc.localDescription.sdp, "tracks": tracks}
        )

    async def _consume_published(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.published_frames[track.kind] += 1
                if track.kind == "video":
                    image = frame.to_ndarray(format="yuv420p")[: frame.height]
                    self.published_counters.append(read_counter(image))

    async def _offer(self, ws: web.WebSocketResponse, pc: RTCPeerConnection, tracks: dict) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        await self._send_offer(ws, pc, tracks)

    async def _send_offer(
        self, ws: web.WebSocketResponse, pc: RTCPeerConnection, tracks: dict
    ) -> None:
        await ws.send_json(
            {"type": "subscribe_offer", "sdp": pc.localDescription.sdp, "tracks": tracks}
        )
        answer = await asyncio.wait_for(self._answer.get(), 5)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _subscribe_flow(self, ws: web.WebSocketResponse) -> None:
        try:
            await self._subscribe_flow_inner(ws)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.flow_error = exc
            raise

    async def _subscribe_flow_inner(self, ws: web.WebSocketResponse) -> None:
        pc = self._pc()
        src_audio = {"participant": "p-src", "track": "a1", "kind": "audio"}
        if not self.offer_video:  # v1 is announced but never offered
            tone = ToneTrack()
            self.tracks.append(tone)
            only = pc.addTransceiver(tone, direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())  # assigns the mid
            await self._send_offer(ws, pc, {only.mid: src_audio})
            return
        tone, pattern = ToneTrack(), PatternTrack()
        self.tracks += [tone, pattern]
        audio = pc.addTransceiver(tone, direction="sendonly")
        video = pc.addTransceiver(pattern, direction="sendonly")
        self._video_sender = video.sender
        await pc.setLocalDescription(await pc.createOffer())
        a, v = audio.mid, video.mid
        src_video = {"participant": "p-src", "track": "v1", "kind": "video"}
        await self._send_offer(ws, pc, {a: src_audio, v: src_video})
        if not self.renegotiate:
            return
        await asyncio.sleep(1.5)

        # v1 goes away: its mid is no longer listed.
        video.sender.replaceTrack(None)  # not pattern.stop(): that would end the sender
        await ws.send_json({"type": "track_unpublished", "participant": "p-src", "track": "v1"})
        await self._offer(ws, pc, {a: src_audio})
        await asyncio.sleep(0.2)  # let frames already in flight drain

        # A new participant's track reuses the video slot (and its SSRC).
        await ws.send_json(
            {
                "type": "participant_joined",
                "participant": {
                    "id": "p-two",
                    "name": "Second",
                    "tracks": [{"id": "v2", "kind": "video"}],
                },
            }
        )
        await self._offer(
            ws, pc, {a: src_audio, v: {"participant": "p-two", "track": "v2", "kind": "video"}}
        )
        report = await video.sender.getStats()
        self.video_sent_at_switch = next(
            s.packetsSent for s in report.values() if s.type == "outbound-rtp"
        )
        bigger = PatternTrack(352, 288)
        self.tracks.append(bigger)
        video.sender.replaceTrack(bigger)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_bot_publishes_subscribes_and_follows_renegotiation(tmp_path):
    server = FakeServer()
    url = await server.start()
    path = tmp_path / "bot.json"
    config = BotConfig(
        url=url, room="r1", name="bot-1", duration=5.0, json_path=str(path), grace=1.0
    )
    try:
        summary = await Bot(config).run()
    finally:
        await server.close()

    assert server.flow_error is None
    assert json.loads(path.read_text()) == summary
    assert summary["joined"] and summary["published"] and summary["id"] == "p-bot"
    assert summary["ok"], json.dumps(summary, indent=1)
    assert summary["errors"] == []
    assert 0 < summary["join_ms"] < 2000
    assert [m["type"] for m in server.received][0] == "join"
    assert server.received[-1]["type"] == "leave"
    join = dict(server.received[0])
    assert isinstance(join.pop("request_id"), str)  # parley_client matches replies by it
    assert join == {"type": "join", "room": "r1", "name": "bot-1"}

    # What the bot published reached the server, frame counters intact and increasing.
    assert server.published_frames["audio"] > 50
    assert len(server.published_counters) > 20
    assert server.published_counters == sorted(server.published_counters)

    tracks = {(t["participant"], t["track"]): t for t in summary["tracks"]}
    assert set(tracks) == {("p-src", "a1"), ("p-src", "v1"), ("p-two", "v2")}
    a1, v1, v2 = tracks["p-src", "a1"], tracks["p-src", "v1"], tracks["p-two", "v2"]
    assert a1["participant_name"] == "Source" and v2["participant_name"] == "Second"
    assert a1["kind"] == "audio" and a1["resolutions"] == [] and a1["frames_decoded"] > 100
    assert a1["max_freeze_ms"] is None
    assert v1["resolutions"] == [[320, 240]] and v1["frames_decoded"] > 5
    assert v1["unpublished"] and not v1["required"]
    # aiortc's jitter buffer releases a frame only when the next one starts, so v1's
    # last frame may come out of the reused slot after the switch, counted for v2.
    assert v2["resolutions"] in ([[352, 288]], [[320, 240], [352, 288]])
    assert v2["frames_decoded"] > 15
    assert v2["required"] and a1["required"]
    assert v2["mid"] == v1["mid"]
    assert 0 < v1["first_frame_ms"] < 1500 < v2["first_frame_ms"] < 4000
    assert 0 <= v2["max_freeze_ms"] < 1000
    assert v1["packets"] > 0 and a1["packets"] > 0
    # The reused slot keeps its SSRC, so v2's count starts from the counters at the switch.
    assert server.video_sent_at_switch is not None and server.video_sent_total is not None
    assert 0 < v2["packets"] <= server.video_sent_total - server.video_sent_at_switch + 5
    assert v1["packets"] <= server.video_sent_at_switch
    events = [e["type"] for e in summary["events"]]
    assert events == ["track_unpublished", "participant_joined"]


async def test_bot_without_publishing_and_without_renegotiation(tmp_path):
    server = FakeServer(renegotiate=False)
    url = await server.start()
    config = BotConfig(url=url, room="r1", name="viewer", duration=2.5, publish=False, grace=1.0)
    try:
        summary = await Bot(config).run()
    finally:
        await server.close()
    assert summary["ok"] and not summary["published"]
    assert "publish_offer" not in [m["type"] for m in server.received]
    assert sum(server.published_frames.values()) == 0
    kinds = sorted(t["kind"] for t in summary["tracks"] if t["frames_decoded"] > 0)
    assert kinds == ["audio", "video"]


async def test_bot_reports_a_track_it_never_received():
    # The server announces v1 but only offers audio: v1 is required and undecoded.
    server = FakeServer(offer_video=False)
    url = await server.start()
    config = BotConfig(url=url, room="r1", name="viewer", duration=1.5, publish=False, grace=1.0)
    try:
        summary = await Bot(config).run()
    finally:
        await server.close()
    assert summary["joined"] and not summary["ok"]
    tracks = {t["track"]: t for t in summary["tracks"]}
    assert tracks["a1"]["frames_decoded"] > 0
    assert tracks["v1"]["frames_decoded"] == 0 and tracks["v1"]["required"]


async def test_main_exits_non_zero_when_the_join_is_refused(tmp_path):
    server = FakeServer(refuse_join=True)
    url = await server.start()
    path = tmp_path / "refused.json"
    argv = ["--url", url, "--room", "r1", "--name", "b", "--duration", "3", "--json", str(path)]
    try:
        start = time.monotonic()
        code = await asyncio.to_thread(main, argv)
        elapsed = time.monotonic() - start
    finally:
        await server.close()
    assert code == 1
    assert elapsed < 2.5  # gave up at once instead of running for --duration
    summary = json.loads(path.read_text())
    assert summary["joined"] is False and summary["ok"] is False
    assert summary["name"] == "b" and summary["room"] == "r1"
    assert any(e.get("code") == "join_refused" for e in summary["errors"])


async def test_bot_without_a_server_fails_cleanly(tmp_path):
    config = BotConfig(url=f"http://127.0.0.1:{_free_port()}", room="r", name="b", duration=1.0)
    summary = await Bot(config).run()
    assert summary["joined"] is False and summary["ok"] is False
    assert summary["errors"] and summary["errors"][0]["code"] == "connection"


def test_audio_gaps_in_rtp_timestamps_count_missing_frames():
    stats = TrackStats(
        participant="p", track="a", kind="audio", started_at=100.0, published_at=100.0
    )
    for i, pts in enumerate([0, 960, 1920, 4800, 5760, 5760, 4800, 6720]):
        stats.on_audio_pts(100.5 + i * 0.02, pts, 960)
    # 2880 and 3840 never came; a duplicate and a late frame are not losses
    assert stats.audio_frames_missing == 2
    assert stats.missing_per_second == [2]
    stats.on_audio_pts(101.5, (6720 + 960 * 1000) & 0xFFFFFFFF, 960)  # a new stream
    assert stats.audio_frames_missing == 2
