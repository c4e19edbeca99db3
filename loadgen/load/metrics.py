"""Pure accounting for ``parley load``: histograms, per-packet tags, loss, freezes, joins.

Nothing here reads a clock or touches a socket: every time is an argument (seconds of
``time.monotonic()``, the clock every process on the machine shares), so the tests
drive it packet by packet.

* :class:`LatencyHistogram`: log-scale buckets 1 % wide; mergeable across processes,
  percentiles within 1 % of the exact value, exact count and maximum.
* :func:`pack_tag` / :func:`parse_tag`: the 20-byte trailer every load publisher puts
  at the end of each RTP payload: which stream, which packet, when it was handed to the
  transport. The SFU forwards payload bytes (after the VP8 descriptor) unchanged, so the
  subscriber reads it back without relying on SSRCs, sequence numbers or timestamps,
  which the SFU rewrites.
* :class:`StreamRx`: continuity and loss of one tagged stream (one publisher track, or
  one simulcast layer of it).
* :class:`TrackRx`: what a subscriber sees of one remote track: complete and decodable
  frames, first frame (join time), freezes (gaps over 500 ms), layer switches.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# ---------------------------------------------------------------- histograms

#: Relative width of one bucket: percentiles are within this fraction of the truth.
BUCKET_GROWTH = 0.01
#: Values at or below this (ms) share bucket 0.
BUCKET_FLOOR_MS = 0.001
_LOG_GROWTH = math.log1p(BUCKET_GROWTH)
_LOG_FLOOR = math.log(BUCKET_FLOOR_MS)


def bucket_of(value_ms: float) -> int:
    """The bucket holding ``value_ms``: bucket ``i`` spans ``(F·g^(i-1), F·g^i]``."""
    if value_ms <= BUCKET_FLOOR_MS:
        return 0
    return max(0, math.ceil((math.log(value_ms) - _LOG_FLOOR) / _LOG_GROWTH - 1e-9))


def bucket_upper(index: int) -> float:
    """Upper edge (ms) of bucket ``index``."""
    return BUCKET_FLOOR_MS * math.exp(index * _LOG_GROWTH)


class LatencyHistogram:
    """Latencies in milliseconds, in log buckets 1 % wide (sparse)."""

    __slots__ = ("buckets", "count", "total", "max", "min")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = -math.inf
        self.min = math.inf

    def record(self, value_ms: float) -> None:
        index = bucket_of(value_ms)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total += value_ms
        if value_ms > self.max:
            self.max = value_ms
        if value_ms < self.min:
            self.min = value_ms

    def merge(self, other: LatencyHistogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)

    def percentile(self, q: float) -> float | None:
        """The nearest-rank ``q``-th percentile (0 < q <= 100), within 1 %; None if empty.

        A bucket is represented by its upper edge, clamped to the observed min and max
        (so p100 is the exact maximum and a histogram of one value returns it).
        """
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(max(bucket_upper(index), self.min), self.max)
        return self.max

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        """``{"p50", "p95", "p99", "max", "mean", "count"}`` in ms (rounded to 0.001)."""
        return {
            "p50": _r3(self.percentile(50)),
            "p95": _r3(self.percentile(95)),
            "p99": _r3(self.percentile(99)),
            "max": _r3(self.max if self.count else None),
            "mean": _r3(self.mean()),
            "count": self.count,
        }

    def cdf(self) -> list[tuple[float, float]]:
        """``(upper edge ms, fraction of samples at or below it)`` per non-empty bucket."""
        out: list[tuple[float, float]] = []
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            out.append((min(bucket_upper(index), self.max), seen / self.count))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "max": self.max if self.count else None,
            "min": self.min if self.count else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        hist = cls()
        hist.buckets = {int(k): int(v) for k, v in data.get("buckets", {}).items()}
        hist.count = int(data.get("count", 0))
        hist.total = float(data.get("total", 0.0))
        if hist.count:
            hist.max = float(data["max"])
            hist.min = float(data["min"])
        return hist


def _r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """Exact nearest-rank percentile of a small list (join times); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# ----------------------------------------------------------------------- tags

TAG = struct.Struct("!HBBIIQ")
TAG_SIZE = TAG.size  # 20
TAG_MAGIC = 0x504C  # "PL"
TAG_VERSION = 1

#: Tag flags.
FLAG_VIDEO = 0x01
FLAG_FRAME_START = 0x02
FLAG_FRAME_END = 0x04
FLAG_KEYFRAME = 0x08

#: Stream ids: ``publisher index << 8 | layer code``.
LAYER_AUDIO = 0
LAYER_VIDEO = 1  # single-layer video
#: Simulcast layers by RID (codes 2, 3, 4...).
SIMULCAST_CODES = {"q": 2, "h": 3, "f": 4}
CODE_NAMES = {LAYER_AUDIO: "audio", LAYER_VIDEO: "video", 2: "q", 3: "h", 4: "f"}


def stream_id(publisher: int, layer_code: int) -> int:
    return ((publisher & 0xFFFFFF) << 8) | (layer_code & 0xFF)


def split_stream_id(stream: int) -> tuple[int, int]:
    """``(publisher index, layer code)``."""
    return stream >> 8, stream & 0xFF


def pack_tag(flags: int, stream: int, seq: int, send_ns: int) -> bytes:
    return TAG.pack(TAG_MAGIC, TAG_VERSION, flags, stream, seq & 0xFFFFFFFF, send_ns)


class Tag(NamedTuple):
    """A packet's tag (immutable; a NamedTuple: built once per received packet, several
    times cheaper than a frozen dataclass)."""

    flags: int
    stream: int
    seq: int
    send_ns: int

    @property
    def video(self) -> bool:
        return bool(self.flags & FLAG_VIDEO)


def parse_tag(payload: bytes) -> Tag | None:
    """The tag at the end of ``payload`` (an RTP packet or its payload), or None."""
    if len(payload) < TAG_SIZE:
        return None
    magic, version, flags, stream, seq, send_ns = TAG.unpack_from(payload, len(payload) - TAG_SIZE)
    if magic != TAG_MAGIC or version != TAG_VERSION:
        return None
    return Tag(flags, stream, seq, send_ns)


# -------------------------------------------------------------- continuity

#: Sequence numbers remembered as missing (for late/repaired arrivals); older ones stay lost.
MISSING_WINDOW = 4096


class StreamRx:
    """Continuity of one tagged stream at one subscriber (tag sequence numbers, 32-bit).

    ``lost`` counts packets between the first and the highest received that never
    arrived; a packet arriving late (reordered, or repaired by RTX) is taken back out.
    """

    __slots__ = ("first", "highest", "received", "duplicates", "skipped", "_missing")

    def __init__(self, seq: int) -> None:
        self.first = seq
        self.highest = seq
        self.received = 1
        self.duplicates = 0
        #: sequence numbers the server did not mean to send here (another layer was
        #: forwarded, or the track was paused): not expected
        self.skipped = 0
        self._missing: dict[int, None] = {}

    def resume(self, seq: int) -> None:
        """The stream comes back at ``seq`` after the server forwarded something else (or
        nothing): the gap since the highest packet received is not loss."""
        if seq > self.highest + 1:
            self.skipped += seq - self.highest - 1
            self.highest = seq - 1

    def on_packet(self, seq: int) -> bool:
        """Count one packet; returns False when it was a duplicate."""
        if seq > self.highest:
            missing = self._missing
            gap = seq - self.highest - 1
            if gap:
                for s in range(max(self.highest + 1, seq - MISSING_WINDOW), seq):
                    missing[s] = None
                while len(missing) > MISSING_WINDOW:
                    del missing[next(iter(missing))]
            self.highest = seq
            self.received += 1
            return True
        if seq in self._missing:
            del self._missing[seq]
            self.received += 1
            return True
        if seq < self.first:  # older than where we started (reordered): still media
            old_first = self.first
            self.first = seq
            for s in range(seq + 1, min(old_first, seq + MISSING_WINDOW)):
                self._missing[s] = None
            self.received += 1
            return True
        self.duplicates += 1
        return False

    @property
    def expected(self) -> int:
        return self.highest - self.first + 1 - self.skipped

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


#: A gap between two decodable video frames longer than this is a freeze.
FREEZE_S = 0.5


@dataclass(slots=True)
class FreezeStats:
    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, gap: float) -> None:
        self.count += 1
        self.total_s += gap
        self.max_s = max(self.max_s, gap)

    def merge(self, other: FreezeStats) -> None:
        self.count += other.count
        self.total_s += other.total_s
        self.max_s = max(self.max_s, other.max_s)


class TrackRx:
    """One remote track as one subscriber receives it (all its layers).

    Video frames are judged from the tags alone: a frame is *complete* when its
    packets from the one flagged start to the one flagged end arrived with
    consecutive tag sequence numbers, and *decodable* when it is complete and every
    frame since the last complete keyframe was too (what a decoder without
    retransmissions could show). Freezes are gaps over :data:`FREEZE_S` between
    decodable frames (and from the last one to the end of the run).
    """

    __slots__ = (
        "video",
        "current_stream",
        "layer_switches",
        "first_frame_at",
        "last_frame_at",
        "frames",
        "broken_frames",
        "freezes",
        "_frame_stream",
        "_frame_next",
        "_frame_key",
        "_decodable",
        "needs_keyframe",
    )

    def __init__(self, video: bool) -> None:
        self.video = video
        self.current_stream: int | None = None
        self.layer_switches = 0
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        self.frames = 0
        self.broken_frames = 0
        self.freezes = FreezeStats()
        self._frame_stream = -1
        self._frame_next = -1  # next tag seq expected in the frame being assembled
        self._frame_key = False
        self._decodable = False
        #: set when a frame broke: the caller may ask the server for a keyframe
        self.needs_keyframe = False

    def on_packet(self, tag: Tag, now: float) -> bool:
        """One packet; returns True when it completed a decodable frame."""
        stream = tag.stream
        if stream != self.current_stream:
            if self.current_stream is not None:
                self.layer_switches += 1
            self.current_stream = stream
            self._decodable = False  # a new layer starts at its own keyframe
            self._frame_next = -1
        if not self.video:
            return False
        flags = tag.flags
        if flags & FLAG_FRAME_START:
            if self._frame_next != -1 and self._frame_stream == stream:
                self._broken()  # the previous frame never ended
            self._frame_stream = stream
            self._frame_next = tag.seq + 1
            self._frame_key = bool(flags & FLAG_KEYFRAME)
        elif self._frame_next == tag.seq and self._frame_stream == stream:
            self._frame_next += 1
        else:
            if self._frame_next != -1:
                self._broken()
            self._frame_next = -1
            return False
        if not flags & FLAG_FRAME_END:
            return False
        self._frame_next = -1
        if self._frame_key:
            self._decodable = True
            self.needs_keyframe = False
        if not self._decodable:
            self.broken_frames += 1
            return False
        self.frames += 1
        if self.first_frame_at is None:
            self.first_frame_at = now
        elif self.last_frame_at is not None and now - self.last_frame_at > FREEZE_S:
            self.freezes.add(now - self.last_frame_at)
        self.last_frame_at = now
        return True

    def _broken(self) -> None:
        self.broken_frames += 1
        self._decodable = False
        self.needs_keyframe = True

    def finish(self, end: float) -> None:
        """Close the books at ``end``: a stream silent since its last frame froze."""
        if self.video and self.last_frame_at is not None and end - self.last_frame_at > FREEZE_S:
            self.freezes.add(end - self.last_frame_at)
            self.last_frame_at = end


# ---------------------------------------------------------- per-kind counters


@dataclass(slots=True)
class KindCounters:
    """Packets of one media kind: sent by publishers / received, lost by subscribers."""

    sent: int = 0
    received: int = 0
    lost: int = 0
    expected: int = 0
    duplicates: int = 0
    #: late arrivals on an RTX stream that filled a gap (included in ``received``)
    repaired: int = 0

    def merge(self, other: KindCounters) -> None:
        self.sent += other.sent
        self.received += other.received
        self.lost += other.lost
        self.expected += other.expected
        self.duplicates += other.duplicates
        self.repaired += other.repaired

    def loss_pct(self) -> float | None:
        if self.expected <= 0:
            return None
        return round(100.0 * self.lost / self.expected, 4)

    def loss_before_repair_pct(self) -> float | None:
        """Loss as the link caused it: what never arrived plus what RTX repaired."""
        if self.expected <= 0:
            return None
        return round(100.0 * (self.lost + self.repaired) / self.expected, 4)

    def to_json(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "expected": self.expected,
            "duplicates": self.duplicates,
            "repaired": self.repaired,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KindCounters:
        return cls(
            **{
                k: int(data.get(k, 0))
                for k in ("sent", "received", "lost", "expected", "duplicates", "repaired")
            }
        )


KINDS = ("audio", "video")


@dataclass(slots=True)
class Interval:
    """What one worker measured during one second (or any window): mergeable."""

    latency: dict[str, LatencyHistogram] = field(
        default_factory=lambda: {k: LatencyHistogram() for k in KINDS}
    )
    counters: dict[str, KindCounters] = field(
        default_factory=lambda: {k: KindCounters() for k in KINDS}
    )

    def merge(self, other: Interval) -> None:
        for kind in KINDS:
            self.latency[kind].merge(other.latency[kind])
            self.counters[kind].merge(other.counters[kind])

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": {k: h.to_json() for k, h in self.latency.items()},
            "counters": {k: c.to_json() for k, c in self.counters.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interval:
        return cls(
            latency={k: LatencyHistogram.from_json(data["latency"][k]) for k in KINDS},
            counters={k: KindCounters.from_json(data["counters"][k]) for k in KINDS},
        )


def merge_intervals(intervals: Iterable[Interval]) -> Interval:
    total = Interval()
    for interval in intervals:
        total.merge(interval)
    return total
