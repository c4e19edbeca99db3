"""One VP8 layer encoded with libvpx through PyAV, and frames split into payloads."""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from av import VideoFrame

from loadgen.media.simulcast.layers import MAX_PAYLOAD, VP8_CPU_USED
from loadgen.media.synthetic import VIDEO_CLOCK_RATE

# ----------------------------------------------------------------------- VP8


@dataclass(frozen=True, slots=True)
class TemporalFrame:
    """Where one frame sits in the temporal-layer pattern: its TID and whether it is a
    layer sync frame (it references the base layer only, so a receiver that had
    dropped its layer can take it up from here: RFC 7741's Y bit)."""

    tid: int
    layer_sync: bool


#: libvpx temporal patterns ffmpeg sets up with ``ts_layering_mode`` (2 and 3), as
#: (TID, layer sync) per position: in mode 2 the TL1 frame references the last TL0 frame
#: only; in mode 3 (Chromium's 0-2-1-2) the first TL2 frame and the TL1 frame reference
#: the last TL0 frame, the second TL2 frame the TL1 frame before it.
TEMPORAL_PATTERNS: dict[int, tuple[TemporalFrame, ...]] = {
    1: (TemporalFrame(0, False),),
    2: (TemporalFrame(0, False), TemporalFrame(1, True)),
    3: (
        TemporalFrame(0, False),
        TemporalFrame(2, True),
        TemporalFrame(1, True),
        TemporalFrame(2, False),
    ),
}
#: Cumulative share of the layer's bitrate up to each TID (Chromium's split).
TEMPORAL_SHARES: dict[int, tuple[float, ...]] = {1: (1.0,), 2: (0.6, 1.0), 3: (0.4, 0.6, 1.0)}


def vp8_packetize(
    frame: bytes,
    picture_id: int,
    max_payload: int = MAX_PAYLOAD,
    temporal: TemporalFrame | None = None,
    tl0picidx: int = 0,
) -> list[bytes]:
    """Split one VP8 frame into RTP payloads (RFC 7741), each with a descriptor: X=1,
    S on the first, partition 0, a 15-bit picture id (I=1); with ``temporal`` also
    TL0PICIDX (L=1) and the TID / layer sync byte (T=1, Y). Sizes are balanced."""
    if not frame:
        return []
    pid = picture_id & 0x7FFF
    if temporal is None:
        tail = bytes((0x80, 0x80 | (pid >> 8), pid & 0xFF))
    else:
        tid_byte = ((temporal.tid & 3) << 6) | (0x20 if temporal.layer_sync else 0)
        tail = bytes((0xE0, 0x80 | (pid >> 8), pid & 0xFF, tl0picidx & 0xFF, tid_byte))
    room = max_payload - 1 - len(tail)
    count = -(-len(frame) // room)
    size = -(-len(frame) // count)
    first = b"\x90" + tail
    rest = b"\x80" + tail
    return [(first if i == 0 else rest) + frame[i * size : (i + 1) * size] for i in range(count)]


def vp8_is_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a keyframe (P bit of the frame tag clear)."""
    return bool(frame) and not frame[0] & 1


def ts_parameters(temporal_layers: int, bitrate: int) -> str:
    """ffmpeg's libvpx ``ts-parameters`` for 2 or 3 temporal layers (``ts_layering_mode``
    last: it sets the pattern, decimators and periodicity, and must come after the rest)."""
    shares = TEMPORAL_SHARES[temporal_layers]
    targets = ",".join(str(max(1, round(bitrate * share / 1000))) for share in shares)
    pattern = TEMPORAL_PATTERNS[temporal_layers]
    decimators = ",".join(str(len(pattern) // (1 << t)) for t in range(temporal_layers))
    return (
        f"ts_number_layers={temporal_layers}:ts_target_bitrate={targets}"
        f":ts_rate_decimator={decimators}:ts_periodicity={len(pattern)}"
        f":ts_layer_id={','.join(str(f.tid) for f in pattern)}"
        f":ts_layering_mode={temporal_layers}"
    )


class Vp8LayerEncoder:
    """libvpx (through PyAV) for one layer: CBR at ``bitrate``, realtime, fastest speed.

    With ``temporal_layers`` 2 or 3 libvpx encodes temporal layers (ffmpeg's
    ``ts_layering_mode``): the frames of a higher TID are never referenced by a lower
    one, so they can be dropped. ffmpeg walks the pattern one position per encoded
    input frame and restarts it at every forced keyframe; ``temporal`` follows it and
    describes the frame ``encode`` returned last.

    Not thread-safe: the bot drives all its encoders from one worker thread.
    """

    def __init__(
        self,
        width: int,
        height: int,
        bitrate: int,
        fps: float,
        cpu_used: int = VP8_CPU_USED,
        temporal_layers: int = 1,
    ) -> None:
        if temporal_layers not in TEMPORAL_PATTERNS:
            raise ValueError("temporal_layers must be 1, 2 or 3")
        codec: Any = av.CodecContext.create("libvpx", "w")
        codec.width = width
        codec.height = height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(round(fps * 1000), 1000)
        codec.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        # keyframes only when asked for (PLI/FIR) or at start: one libvpx placed on its
        # own would not restart ffmpeg's temporal pattern
        codec.gop_size = 1 << 30
        codec.qmin = 2
        codec.qmax = 56
        codec.thread_count = 1
        options = {
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
        if temporal_layers > 1:
            options["ts-parameters"] = ts_parameters(temporal_layers, bitrate)
        codec.options = options
        self._codec: Any = codec
        self.temporal_layers = temporal_layers
        self._pattern = TEMPORAL_PATTERNS[temporal_layers]
        self._position = 0
        #: the TID and layer sync bit of the frame ``encode`` returned last
        self.temporal = self._pattern[0]
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
            self._position = 0  # ffmpeg restarts the pattern at a forced keyframe
        self.temporal = self._pattern[self._position]
        self._position = (self._position + 1) % len(self._pattern)
        return b"".join(bytes(packet) for packet in codec.encode(frame))

    def close(self) -> None:
        self._codec = None
