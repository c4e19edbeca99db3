"""Media for ``parley load``: clips encoded once and cached on disk, and tagged RTP streams.

* :func:`prepare_media` encodes (once per machine: the clips are cached under
  ``$XDG_CACHE_HOME/parley/load-media``) a few seconds of the bot's moving test pattern
  as VP8 at each simulcast size, and a tone as Opus, with PyAV. Frame 0 of a video clip
  is its only keyframe, so replaying from frame 0 answers a keyframe request with a
  clean keyframe and the clip wraps around on a keyframe too.
* :class:`ClipPlayer` walks a clip in a loop; :class:`OutStream` (pure) turns payloads
  into RTP packets for one SSRC, appending the 20-byte tag of
  :mod:`loadgen.load.metrics` to every payload, keeps the last packets for NACKs and
  builds RTX and sender reports.
"""

from __future__ import annotations

import fractions
import hashlib
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

from loadgen.load.metrics import (
    FLAG_FRAME_END,
    FLAG_FRAME_START,
    FLAG_KEYFRAME,
    FLAG_VIDEO,
    TAG_SIZE,
    pack_tag,
)
from loadgen.media.simulcast import (
    DEFAULT_LAYERS,
    MAX_PAYLOAD,
    LayerSpec,
    Vp8LayerEncoder,
    vp8_is_keyframe,
)
from loadgen.media.simulcast import vp8_packetize as _vp8_packetize
from loadgen.media.synthetic import AUDIO_SAMPLE_RATE, PatternTrack, ToneTrack
from sfu.rtp.packet import build_extension_block, build_rtp_header

#: Samples per Opus packet (20 ms at 48 kHz) and the Opus bitrate.
OPUS_FRAME = 960
OPUS_BITRATE = 32_000
#: The single-layer (non-simulcast) video of a load publisher: the middle layer.
SINGLE_LAYER = DEFAULT_LAYERS[1]
_CLIP_MAGIC = b"PARLEYCLIP1\n"
_U32 = struct.Struct("!I")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parley" / "load-media"


# --------------------------------------------------------------------- clips


def encode_vp8_clip(spec: LayerSpec, fps: float, seconds: float) -> list[bytes]:
    """``seconds`` of the moving pattern at ``spec``'s size and bitrate; frame 0 is key."""
    count = max(1, round(seconds * fps))
    pattern = PatternTrack(spec.width, spec.height, fps, paced=False)
    encoder = Vp8LayerEncoder(spec.width, spec.height, spec.bitrate, fps)
    frames: list[bytes] = []
    try:
        for n in range(count):
            pts = round(n * 90_000 / fps)
            frame = encoder.encode(pattern.render(n), pts, keyframe=n == 0)
            if n == 0 and not vp8_is_keyframe(frame):
                raise RuntimeError("libvpx did not start with a keyframe")
            if frame:
                frames.append(frame)
    finally:
        encoder.close()
        pattern.stop()
    return frames


def encode_opus_clip(seconds: float) -> list[bytes]:
    """``seconds`` of a 440 Hz tone as Opus packets of 20 ms (mono, 32 kbit/s)."""
    tone = ToneTrack(paced=False)
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_SAMPLE_RATE  # type: ignore[attr-defined]
    codec.layout = "mono"  # type: ignore[attr-defined]
    codec.format = "s16"  # type: ignore[attr-defined]
    codec.bit_rate = OPUS_BITRATE
    codec.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
    count = max(1, round(seconds * AUDIO_SAMPLE_RATE / OPUS_FRAME))
    packets: list[bytes] = []
    offsets = np.arange(OPUS_FRAME, dtype=np.float64)
    for n in range(count):
        t = ((n * OPUS_FRAME + offsets) * tone.frequency % AUDIO_SAMPLE_RATE) / AUDIO_SAMPLE_RATE
        samples = np.round(np.sin(2.0 * np.pi * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = n * OPUS_FRAME
        frame.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
        packets += [bytes(p) for p in codec.encode(frame)]  # type: ignore[attr-defined]
    tone.stop()
    return packets


def write_clip(path: Path, frames: Sequence[bytes]) -> None:
    """Write frames as ``magic, count, (length, bytes)*``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(_CLIP_MAGIC + _U32.pack(len(frames)))
        for frame in frames:
            f.write(_U32.pack(len(frame)) + frame)
    tmp.replace(path)


def read_clip(path: Path) -> list[bytes]:
    """Read a clip written by :func:`write_clip`; ValueError when the file is damaged."""
    data = path.read_bytes()
    if not data.startswith(_CLIP_MAGIC):
        raise ValueError(f"{path} is not a Parley clip")
    pos = len(_CLIP_MAGIC)
    (count,) = _U32.unpack_from(data, pos)
    pos += 4
    frames: list[bytes] = []
    for _ in range(count):
        if pos + 4 > len(data):
            raise ValueError(f"{path} is truncated")
        (length,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + length > len(data):
            raise ValueError(f"{path} is truncated")
        frames.append(data[pos : pos + length])
        pos += length
    if not frames:
        raise ValueError(f"{path} is empty")
    return frames


@dataclass(frozen=True, slots=True)
class MediaSet:
    """Encoded clips: Opus packets, and VP8 frames per layer name (``q``/``h``/``f``)."""

    audio: list[bytes]
    video: dict[str, list[bytes]]
    fps: float


def clip_path(cache_dir: Path, name: str, params: str) -> Path:
    digest = hashlib.sha1(params.encode()).hexdigest()[:12]
    return cache_dir / f"{name}-{digest}.clip"


def _cached(cache_dir: Path, name: str, params: str, encode: object) -> list[bytes]:
    path = clip_path(cache_dir, name, params)
    try:
        return read_clip(path)
    except (OSError, ValueError):
        pass
    assert callable(encode)
    frames: list[bytes] = encode()
    write_clip(path, frames)
    return frames


def prepare_media(
    cache_dir: Path | None = None,
    *,
    fps: float = 15.0,
    seconds: float = 10.0,
    layers: Sequence[LayerSpec] = DEFAULT_LAYERS,
) -> MediaSet:
    """Load the clips from the cache, encoding (and caching) whatever is missing."""
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    audio = _cached(
        directory,
        "opus",
        f"opus tone440 {OPUS_BITRATE} {seconds}",
        lambda: encode_opus_clip(seconds),
    )
    video: dict[str, list[bytes]] = {}
    for spec in layers:
        video[spec.rid] = _cached(
            directory,
            f"vp8-{spec.width}x{spec.height}",
            f"vp8 pattern {spec.width}x{spec.height} {spec.bitrate} {fps} {seconds} v1",
            lambda spec=spec: encode_vp8_clip(spec, fps, seconds),  # type: ignore[misc]
        )
    return MediaSet(audio=audio, video=video, fps=fps)


class ClipPlayer:
    """Plays a clip in a loop; a keyframe request restarts it from its keyframe (frame 0)."""

    __slots__ = ("frames", "position", "loops")

    def __init__(self, frames: Sequence[bytes], start: int = 0) -> None:
        if not frames:
            raise ValueError("empty clip")
        self.frames = frames
        self.position = start % len(frames)
        self.loops = 0

    def next(self, keyframe: bool = False) -> bytes:
        if keyframe:
            self.position = 0
        frame = self.frames[self.position]
        self.position += 1
        if self.position == len(self.frames):
            self.position = 0
            self.loops += 1
        return frame


# -------------------------------------------------------------------- RTP out


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """VP8 payloads small enough that each packet, tag included, stays under the MTU."""
    return _vp8_packetize(frame, picture_id, MAX_PAYLOAD - TAG_SIZE)


class OutStream:
    """RTP for one publisher stream (a track, or one simulcast layer). Pure.

    Every payload gets a tag (stream id, tag sequence number, send time) appended; the
    tag sequence number runs on across keyframe restarts, so a subscriber sees one
    continuous tagged stream. ``extensions`` are the static header-extension elements
    (mid, rid); abs-send-time is added per packet when ``abs_send_time_id`` is set.
    """

    def __init__(
        self,
        *,
        stream: int,
        video: bool,
        ssrc: int,
        payload_type: int,
        clock_rate: int,
        extensions: Sequence[tuple[int, bytes]] = (),
        abs_send_time_id: int = 0,
        rtx_ssrc: int | None = None,
        rtx_payload_type: int | None = None,
        rtx_extensions: Sequence[tuple[int, bytes]] = (),
        first_seq: int = 0,
        timestamp_offset: int = 0,
        picture_id: int = 0,
        cache_packets: int = 512,
    ) -> None:
        self.stream = stream
        self.video = video
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.extensions = list(extensions)
        self.abs_send_time_id = abs_send_time_id
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.rtx_extensions = list(rtx_extensions)
        self.timestamp_offset = timestamp_offset
        self.picture_id = picture_id & 0x7FFF
        self.keyframe_requested = True
        self.packets = 0
        self.octets = 0
        self.rtx_sent = 0
        self.keyframes = 0
        self.tag_seq = 0
        self._seq = first_seq & 0xFFFF
        self._rtx_seq = 0
        self._cache: OrderedDict[int, tuple[int, int, bytes]] = OrderedDict()
        self._cache_packets = cache_packets
        self._static_ext = build_extension_block(self.extensions)

    def _extension(self, elements: list[tuple[int, bytes]], send_time: bytes | None) -> bytes:
        if self.abs_send_time_id and send_time is not None:
            return build_extension_block([*elements, (self.abs_send_time_id, send_time)])
        if elements is self.extensions:
            return self._static_ext
        return build_extension_block(elements)

    def packet(
        self,
        payload: bytes,
        timestamp: int,
        marker: int,
        flags: int,
        send_ns: int,
        send_time: bytes | None = None,
    ) -> bytes:
        """One RTP packet: ``payload`` + tag; ``timestamp`` before this stream's offset."""
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        ts = (timestamp + self.timestamp_offset) & 0xFFFFFFFF
        body = payload + pack_tag(flags, self.stream, self.tag_seq, send_ns)
        self.tag_seq += 1
        extension = self._extension(self.extensions, send_time)
        self._cache[seq] = (ts, marker, body)
        if len(self._cache) > self._cache_packets:
            self._cache.popitem(last=False)
        self.packets += 1
        self.octets += len(body)
        return build_rtp_header(marker, self.payload_type, seq, ts, self.ssrc, extension) + body

    def frame_payloads(self, frame: bytes) -> list[tuple[bytes, int, int]]:
        """``(payload, marker, flags)`` for one VP8 frame; advances the picture id."""
        payloads = vp8_payloads(frame, self.picture_id)
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        key = vp8_is_keyframe(frame)
        if key:
            self.keyframes += 1
        last = len(payloads) - 1
        out = []
        for i, payload in enumerate(payloads):
            flags = FLAG_VIDEO
            if i == 0:
                flags |= FLAG_FRAME_START | (FLAG_KEYFRAME if key else 0)
            if i == last:
                flags |= FLAG_FRAME_END
            out.append((payload, int(i == last), flags))
        return out

    def retransmission(self, seq: int, send_time: bytes | None = None) -> bytes | None:
        """RTX (RFC 4588) of media ``seq`` with its original tag, or None."""
        cached = self._cache.get(seq & 0xFFFF)
        if cached is None or self.rtx_payload_type is None or self.rtx_ssrc is None:
            return None
        ts, marker, body = cached
        rtx_seq = self._rtx_seq
        self._rtx_seq = (rtx_seq + 1) & 0xFFFF
        self.rtx_sent += 1
        extension = self._extension(self.rtx_extensions, send_time)
        header = build_rtp_header(
            marker, self.rtx_payload_type, rtx_seq, ts, self.rtx_ssrc, extension
        )
        return header + struct.pack("!H", seq & 0xFFFF) + body

    def sender_report(self, ntp_seconds: float, elapsed: float) -> bytes:
        """An SR mapping ``ntp_seconds`` to the RTP time ``elapsed`` seconds after start."""
        rtp = (round(elapsed * self.clock_rate) + self.timestamp_offset) & 0xFFFFFFFF
        info = RtcpSenderInfo(
            ntp_timestamp=int(ntp_seconds * (1 << 32)) & 0xFFFFFFFFFFFFFFFF,
            rtp_timestamp=rtp,
            packet_count=self.packets & 0xFFFFFFFF,
            octet_count=self.octets & 0xFFFFFFFF,
        )
        return bytes(RtcpSrPacket(ssrc=self.ssrc, sender_info=info))
