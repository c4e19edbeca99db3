"""One VP8 layer encoded with libvpx through PyAV, and frames split into payloads."""

from __future__ import annotations

import fractions
from typing import Any

import av
import numpy as np
from av import VideoFrame

from loadgen.media.simulcast.layers import MAX_PAYLOAD, VP8_CPU_USED
from loadgen.media.synthetic import VIDEO_CLOCK_RATE

# ----------------------------------------------------------------------- VP8


def vp8_packetize(frame: bytes, picture_id: int, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Split one VP8 frame into RTP payloads (RFC 7741), each with a 4-byte descriptor:
    X=1, S on the first, partition 0, a 15-bit picture id. Sizes are balanced."""
    if not frame:
        return []
    room = max_payload - 4
    count = -(-len(frame) // room)
    size = -(-len(frame) // count)
    pid = picture_id & 0x7FFF
    tail = bytes((0x80, 0x80 | (pid >> 8), pid & 0xFF))
    first = b"\x90" + tail
    rest = b"\x80" + tail
    return [(first if i == 0 else rest) + frame[i * size : (i + 1) * size] for i in range(count)]


def vp8_is_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a keyframe (P bit of the frame tag clear)."""
    return bool(frame) and not frame[0] & 1


class Vp8LayerEncoder:
    """libvpx (through PyAV) for one layer: CBR at ``bitrate``, realtime, fastest speed.

    Not thread-safe: the bot drives all its encoders from one worker thread.
    """

    def __init__(
        self, width: int, height: int, bitrate: int, fps: float, cpu_used: int = VP8_CPU_USED
    ) -> None:
        codec: Any = av.CodecContext.create("libvpx", "w")
        codec.width = width
        codec.height = height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(round(fps * 1000), 1000)
        codec.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        codec.gop_size = 3000  # keyframes only when asked for (PLI/FIR) or at start
        codec.qmin = 2
        codec.qmax = 56
        codec.thread_count = 1
        codec.options = {
            "bufsize": str(bitrate),
            "cpu-used": str(cpu_used),
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "overshoot-pct": "15",
            "undershoot-pct": "100",
            "partitions": "0",
            "static-thresh": "1",
            "error-resilient": "1",
        }
        self._codec: Any = codec
        self.width = width
        self.height = height

    def encode(self, image: np.ndarray, pts: int, keyframe: bool) -> bytes:
        """Encode one ``yuv420p`` ndarray; returns the VP8 frame (b"" if libvpx dropped it)."""
        codec = self._codec
        if codec is None:
            raise RuntimeError("encoder closed")
        frame = VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return b"".join(bytes(packet) for packet in codec.encode(frame))

    def close(self) -> None:
        self._codec = None
