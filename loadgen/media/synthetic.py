"""Synthetic media for the headless bot: a sine tone and a moving test pattern.

Both tracks are paced in real time (like a capture device) unless ``paced=False``.
The video frames carry a frame counter drawn as large luma blocks
(:func:`draw_counter`) that survives lossy coding and can be read back from a
decoded frame with :func:`read_counter`.
"""

from __future__ import annotations

import asyncio
import fractions
import math

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

#: Side of one counter block in pixels (one VP8/H.264 macroblock).
COUNTER_BLOCK = 16
#: Bits of the counter; the drawn value is ``n % 2**COUNTER_BITS``.
COUNTER_BITS = 16
#: Pixels the counter occupies: two block rows (bits, then their complement).
COUNTER_WIDTH = COUNTER_BLOCK * COUNTER_BITS
COUNTER_HEIGHT = 2 * COUNTER_BLOCK

_LUMA_HIGH = 235
_LUMA_LOW = 16
_LUMA_MID = 128

#: Luma of each stripe phase 0..63 of the moving pattern.
_STRIPE_LUMA = (np.arange(64, dtype=np.uint8) * 3 + 32).astype(np.uint8)

AUDIO_SAMPLE_RATE = 48_000
AUDIO_PTIME = 0.020
VIDEO_CLOCK_RATE = 90_000


def _check_plane(image: np.ndarray) -> None:
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D luma plane, got shape {image.shape}")
    height, width = image.shape
    if height < COUNTER_HEIGHT or width < COUNTER_WIDTH:
        raise ValueError(
            f"image {width}x{height} is smaller than the counter ({COUNTER_WIDTH}x{COUNTER_HEIGHT})"
        )


def draw_counter(image: np.ndarray, n: int) -> None:
    """Draw ``n`` (modulo ``2**COUNTER_BITS``) into the top-left of a luma plane, in place.

    ``image`` is a 2-D uint8 array (the Y plane, or the whole ``yuv420p`` ndarray
    whose first rows are the Y plane), at least ``COUNTER_WIDTH`` x ``COUNTER_HEIGHT``.
    The first block row holds the bits, most significant first (white = 1); the
    second row holds their complement, so a missing or damaged counter is detected.
    """
    _check_plane(image)
    value = n % (1 << COUNTER_BITS)
    b = COUNTER_BLOCK
    for i in range(COUNTER_BITS):
        bit = (value >> (COUNTER_BITS - 1 - i)) & 1
        x = i * b
        image[0:b, x : x + b] = _LUMA_HIGH if bit else _LUMA_LOW
        image[b : 2 * b, x : x + b] = _LUMA_LOW if bit else _LUMA_HIGH


def read_counter(image: np.ndarray) -> int:
    """Read back the counter :func:`draw_counter` drew.

    Each block is judged by the mean of its central half, so ringing at block edges
    does not matter. Raises :class:`ValueError` when a bit and its complement
    disagree (no counter, or one damaged beyond recognition).
    """
    _check_plane(image)
    b = COUNTER_BLOCK
    q = b // 4
    value = 0
    for i in range(COUNTER_BITS):
        x = i * b
        top = float(image[q : b - q, x + q : x + b - q].mean())
        bottom = float(image[b + q : 2 * b - q, x + q : x + b - q].mean())
        bit = top > _LUMA_MID
        if bit == (bottom > _LUMA_MID):
            raise ValueError(f"counter bit {i} unreadable (block means {top:.0f}, {bottom:.0f})")
        value = (value << 1) | int(bit)
    return value


class _Pacer:
    """Releases frames at ``start + pts_seconds`` of the event loop's clock."""

    def __init__(self, paced: bool) -> None:
        self._paced = paced
        self._start: float | None = None

    async def wait(self, at_seconds: float) -> None:
        if not self._paced:
            return
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + at_seconds - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


class ToneTrack(MediaStreamTrack):
    """A sine tone: 48 kHz mono s16 frames of 20 ms (960 samples), pts in samples."""

    kind = "audio"

    def __init__(
        self,
        frequency: float = 440.0,
        amplitude: float = 0.25,
        *,
        sample_rate: int = AUDIO_SAMPLE_RATE,
        ptime: float = AUDIO_PTIME,
        paced: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError("amplitude must be within [0, 1]")
        self.frequency = frequency
        self.sample_rate = sample_rate
        self.samples_per_frame = round(sample_rate * ptime)
        self._scale = amplitude * 32767.0
        self._time_base = fractions.Fraction(1, sample_rate)
        self._offsets = np.arange(self.samples_per_frame, dtype=np.float64)
        self._pts = 0
        self._pacer = _Pacer(paced)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = self._pts
        await self._pacer.wait(pts / self.sample_rate)
        if self.readyState != "live":
            raise MediaStreamError
        self._pts += self.samples_per_frame
        # Phase from the sample index modulo one period's worth keeps precision on long runs.
        t = ((pts + self._offsets) * self.frequency % self.sample_rate) / self.sample_rate
        samples = np.round(np.sin(2.0 * math.pi * t) * self._scale).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = pts
        frame.time_base = self._time_base
        return frame


class PatternTrack(MediaStreamTrack):
    """A moving test pattern in ``yuv420p`` with the frame counter drawn top-left.

    Diagonal luma stripes shift by a few pixels each frame and the chroma drifts
    slowly, so every frame differs from the last (the encoder has real work).
    """

    kind = "video"

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        fps: float = 15.0,
        *,
        paced: bool = True,
    ) -> None:
        super().__init__()
        if width % 2 or height % 2:
            raise ValueError("width and height must be even")
        if width < COUNTER_WIDTH or height < COUNTER_HEIGHT:
            raise ValueError(f"frame must be at least {COUNTER_WIDTH}x{COUNTER_HEIGHT}")
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.width = width
        self.height = height
        self.fps = fps
        self.frames = 0
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        yy, xx = np.mgrid[0:height, 0:width]
        #: (x + y) mod 64: the stripe phase of each pixel (uint8 keeps render() cheap at 720p)
        self._diagonal = ((xx + yy) % 64).astype(np.uint8)
        self._phase = np.empty((height, width), dtype=np.uint8)
        self._pacer = _Pacer(paced)

    def render(self, n: int) -> np.ndarray:
        """Frame ``n`` as a ``yuv420p`` ndarray of shape (height * 3 / 2, width)."""
        w, h = self.width, self.height
        image = np.empty((h * 3 // 2, w), dtype=np.uint8)
        luma = image[:h]
        phase = self._phase
        np.add(self._diagonal, (6 * n) % 64, out=phase)
        np.bitwise_and(phase, 63, out=phase)
        np.take(_STRIPE_LUMA, phase, out=luma)
        draw_counter(luma, n)
        chroma = image[h:]
        u = 128 + int(60 * math.sin(n / 20.0))
        v = 128 + int(60 * math.cos(n / 27.0))
        chroma[: h // 4] = u
        chroma[h // 4 :] = v
        return image

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = self.frames
        await self._pacer.wait(n / self.fps)
        if self.readyState != "live":
            raise MediaStreamError
        self.frames += 1
        frame = VideoFrame.from_ndarray(self.render(n), format="yuv420p")
        frame.pts = round(n * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = self._time_base
        return frame
