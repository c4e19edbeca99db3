"""``parley load --e2e``: glass-to-glass latency, from capture to decoded frame.

Publishers encode live: each frame of the test pattern carries its capture time
(``time.monotonic_ns()`` in units of 100 µs, modulo 2**32) drawn as two 16-bit block
counters (:func:`draw_timestamp`, built on :func:`loadgen.media.synthetic.draw_counter`), and is
encoded right then with libvpx (:class:`LiveEncoder`, a worker thread per publisher).
Subscribers put each decodable frame back together from its packets
(:class:`FrameAssembler`: VP8 descriptor and tag stripped), decode it with PyAV in a
worker thread (:class:`FrameDecoder`) and read the time back: the latency includes
capture-to-encode, encoding, packetization, the network and the server, frame
assembly (a frame is handed over as soon as its last packet arrived, as a jitter
buffer with no extra delay would) and decoding.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np

from loadgen.load.metrics import FLAG_FRAME_START, TAG_SIZE, Tag
from loadgen.media.simulcast import LayerSpec, Vp8LayerEncoder
from loadgen.media.synthetic import COUNTER_HEIGHT, PatternTrack, draw_counter, read_counter
from sfu.rtp.packet import RtpError, RtpView, Vp8Descriptor

#: Timestamp unit: 100 µs; the drawn value wraps every 2**32 units (about 5 days).
UNIT_NS = 100_000
_WRAP = 1 << 32


def timestamp_units(ns: int) -> int:
    return (ns // UNIT_NS) % _WRAP


def draw_timestamp(luma: np.ndarray, units: int) -> None:
    """Draw a 32-bit value as two counters: low half in rows 0-31, high half in 32-63."""
    draw_counter(luma, units & 0xFFFF)
    draw_counter(luma[COUNTER_HEIGHT:], (units >> 16) & 0xFFFF)


def read_timestamp(luma: np.ndarray) -> int:
    """The value :func:`draw_timestamp` drew; ValueError when unreadable."""
    return read_counter(luma) | (read_counter(luma[COUNTER_HEIGHT:]) << 16)


def elapsed_ms(drawn_units: int, now_ns: int) -> float:
    """Milliseconds from a drawn timestamp to ``now_ns`` (modulo the wrap)."""
    return ((timestamp_units(now_ns) - drawn_units) % _WRAP) * UNIT_NS / 1e6


class LiveEncoder:
    """Renders and encodes every layer of a frame live, stamped with its capture time."""

    def __init__(self, specs: Sequence[LayerSpec], fps: float) -> None:
        self._patterns = [PatternTrack(s.width, s.height, fps, paced=False) for s in specs]
        self._encoders = [Vp8LayerEncoder(s.width, s.height, s.bitrate, fps) for s in specs]
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="e2e-encode"
        )

    def _encode(self, n: int, pts: int, keyframes: list[bool]) -> tuple[list[bytes], int]:
        capture_ns = time.monotonic_ns()
        units = timestamp_units(capture_ns)
        frames = []
        for pattern, encoder, key in zip(self._patterns, self._encoders, keyframes, strict=True):
            image = pattern.render(n)
            draw_timestamp(image[: pattern.height], units)
            frames.append(encoder.encode(image, pts, key))
        return frames, capture_ns

    async def encode(self, n: int, pts: int, keyframes: list[bool]) -> tuple[list[bytes], int]:
        """``(VP8 frame per layer, capture time in ns)`` for frame ``n``."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("encoder closed")
        return await asyncio.get_running_loop().run_in_executor(
            executor, self._encode, n, pts, keyframes
        )

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        for encoder in self._encoders:
            encoder.close()
        for pattern in self._patterns:
            pattern.stop()


class FrameAssembler:
    """VP8 frame bytes from tagged packets, per track. Pure."""

    def __init__(self) -> None:
        self._parts: dict[Any, list[bytes]] = {}

    def on_packet(self, key: Any, data: bytes, tag: Tag) -> None:
        """Keep the VP8 bytes of one packet (RTP header, VP8 descriptor and tag removed)."""
        try:
            view = RtpView(data)
            end = view.payload_end - TAG_SIZE
            descriptor = Vp8Descriptor(data, view.payload_start, end)
        except RtpError:
            self._parts.pop(key, None)
            return
        if tag.flags & FLAG_FRAME_START:
            self._parts[key] = []
        parts = self._parts.get(key)
        if parts is not None:
            parts.append(data[view.payload_start + descriptor.size : end])

    def take(self, key: Any) -> bytes:
        """The frame assembled for ``key`` (call when the tracker says it is complete)."""
        return b"".join(self._parts.pop(key, []))


class FrameDecoder:
    """Decodes frames in a worker thread and records capture-to-decode latency."""

    def __init__(self, record: Callable[[float], None]) -> None:
        self._record = record
        self._decoders: dict[Any, Any] = {}
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="e2e-decode"
        )
        self.decoded = 0
        self.unreadable = 0
        self.errors = 0

    def submit(self, key: Any, frame: bytes) -> None:
        executor = self._executor
        if executor is not None and frame:
            executor.submit(self._decode, key, frame)

    def _decode(self, key: Any, frame: bytes) -> None:
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = self._decoders[key] = av.CodecContext.create("libvpx", "r")
        try:
            images = decoder.decode(av.Packet(frame))
        except av.FFmpegError:
            self.errors += 1
            return
        for image in images:
            now_ns = time.monotonic_ns()
            luma = image.to_ndarray(format="gray")
            self.decoded += 1
            try:
                drawn = read_timestamp(luma)
            except ValueError:
                self.unreadable += 1
                continue
            self._record(elapsed_ms(drawn, now_ns))

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._decoders.clear()
