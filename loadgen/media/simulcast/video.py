"""The I/O edge (:class:`SimulcastVideo`): a paced loop rendering, encoding in a worker
thread and sending every layer, plus a sender report per layer each second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from loadgen.media.simulcast.layers import NTP_EPOCH_OFFSET, LayerSpec
from loadgen.media.simulcast.sender import SimulcastSender
from loadgen.media.simulcast.vp8 import TemporalFrame, Vp8LayerEncoder, vp8_is_keyframe
from loadgen.media.synthetic import VIDEO_CLOCK_RATE, PatternTrack
from sfu.rtp.packet import abs_send_time

# ------------------------------------------------------------------ I/O edge


class _LayerSource:
    """Pattern renderer + encoder of one layer (used only in the worker thread)."""

    def __init__(self, spec: LayerSpec, fps: float, temporal_layers: int) -> None:
        self.pattern = PatternTrack(spec.width, spec.height, fps, paced=False)
        self.encoder = Vp8LayerEncoder(
            spec.width, spec.height, spec.bitrate, fps, temporal_layers=temporal_layers
        )

    def close(self) -> None:
        self.encoder.close()
        self.pattern.stop()


class SimulcastVideo:
    """Renders, encodes and sends the layers of ``sender`` in real time.

    ``send(packet)`` sends one RTP or RTCP packet (``MediaPort.send_rtp``). Frame ``n``
    is captured at ``start + n / fps``; when the loop falls more than a frame behind it
    skips frames, as a camera would. Encoding runs in one worker thread owned here.
    ``close()`` stops the loop and the thread; it is idempotent.
    """

    def __init__(
        self,
        sender: SimulcastSender,
        send: Callable[[bytes], bool],
        fps: float = 15.0,
        *,
        wall_clock: Callable[[], float] = time.time,
        sr_interval: float = 1.0,
        temporal_layers: int = 2,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.sender = sender
        self.fps = fps
        self._send = send
        self._wall_clock = wall_clock
        self._sr_interval = sr_interval
        self._sources = [_LayerSource(layer.spec, fps, temporal_layers) for layer in sender.layers]
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="simulcast-vp8"
        )
        self._task: asyncio.Task[None] | None = None
        self.frames_skipped = 0
        self.encode_seconds = 0.0
        self.send_failures = 0
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.ensure_future(self._run())

    def _encode_all(
        self, n: int, pts: int, keyframes: list[bool]
    ) -> tuple[list[tuple[bytes, TemporalFrame | None]], float]:
        started = time.perf_counter()
        frames: list[tuple[bytes, TemporalFrame | None]] = []
        for source, key in zip(self._sources, keyframes, strict=True):
            encoder = source.encoder
            frame = encoder.encode(source.pattern.render(n), pts, key)
            frames.append((frame, encoder.temporal if encoder.temporal_layers > 1 else None))
        return frames, time.perf_counter() - started

    def send_time(self) -> bytes:
        return abs_send_time(self._wall_clock() + NTP_EPOCH_OFFSET)

    def send_packets(self, packets: list[bytes]) -> None:
        for packet in packets:
            if not self._send(packet):
                self.send_failures += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_sr = start
        n = 0
        while not self._closed:
            due = start + n / self.fps
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 1.0 / self.fps:
                skip = int(-delay * self.fps)
                self.frames_skipped += skip
                n += skip
            layers = self.sender.layers
            keyframes = [layer.take_keyframe_request() for layer in layers]
            capture = round(n * VIDEO_CLOCK_RATE / self.fps)
            executor = self._executor
            if executor is None:
                return
            frames, spent = await loop.run_in_executor(
                executor, self._encode_all, n, capture, keyframes
            )
            self.encode_seconds += spent
            if self._closed:
                return
            send_time = self.send_time()
            for index, (layer, (frame, temporal), key) in enumerate(
                zip(layers, frames, keyframes, strict=True)
            ):
                if key and not vp8_is_keyframe(frame):
                    layer.keyframe_requested = True  # libvpx dropped it: ask again
                if self.sender.sends(index):
                    self.send_packets(layer.frame_packets(frame, capture, send_time, temporal))
            n += 1
            now = loop.time()
            if now >= next_sr:
                next_sr = now + self._sr_interval
                self._send_reports(now - start)

    def _send_reports(self, elapsed: float) -> None:
        ntp = self._wall_clock() + NTP_EPOCH_OFFSET
        capture = round(elapsed * VIDEO_CLOCK_RATE)
        for layer in self.sender.layers:
            if layer.stats.packets:
                rtp = capture + layer.timestamp_offset
                self.send_packets([layer.sender_report(ntp, rtp)])

    def on_rtcp(self, data: bytes) -> None:
        """RTCP from the server: keyframe requests are noted, NACKs answered at once."""
        now = asyncio.get_running_loop().time()
        self.send_packets(self.sender.handle_rtcp(data, self.send_time(), now))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        executor = self._executor
        self._executor = None
        if executor is not None:
            # waits for an encode in flight (tens of ms) so encoders are not freed under it
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        for source in self._sources:
            source.close()
