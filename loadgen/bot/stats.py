"""What a bot measures of each remote track: packets, loss (:class:`PacketLoss`), decoded
frames, sizes, freezes and layer switches (:class:`TrackStats`); pure, times passed in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadgen.bot.config import DEFAULT_GRACE, GAP_RECORD_S

#: A remote track: (participant id, track id).
TrackKey = tuple[str, str]


# ------------------------------------------------------------------ statistics


def _bump(counts: list[int], second: int, by: int) -> None:
    """Add ``by`` to ``counts[second]`` (seconds since the start; the first hour kept)."""
    if 0 <= second < 3600:
        if len(counts) <= second:
            counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += by


@dataclass(slots=True)
class PacketLoss:
    """Unique RTP packets received and missing on one stream, per second (pure: the
    caller passes the second). A hole filled later (reordering) is taken back from the
    second it was counted in; duplicates count once; a forward jump of more than
    ``max_jump`` packets or a new SSRC starts over (a new stream, not a loss)."""

    horizon: int = 1000
    max_jump: int = 3000
    received: int = 0
    missing: int = 0
    received_per_second: list[int] = field(default_factory=list)
    missing_per_second: list[int] = field(default_factory=list)
    _ssrc: int | None = None
    _highest: int | None = None
    #: extended sequence number of each hole -> the second it was counted in (ascending)
    _holes: dict[int, int] = field(default_factory=dict)

    def on_packet(self, ssrc: int, seq: int, second: int) -> None:
        highest = self._highest
        if ssrc != self._ssrc or highest is None:
            self._ssrc, self._highest = ssrc, seq
            self._holes.clear()
            self._received(second)
            return
        delta = (seq - highest) & 0xFFFF
        if delta == 0:
            return  # a duplicate of the newest
        if delta < 0x8000:
            ext = highest + delta
            if delta > self.max_jump:
                self._holes.clear()
            else:
                for hole in range(highest + 1, ext):
                    self._holes[hole] = second
                    self.missing += 1
                    _bump(self.missing_per_second, second, 1)
            self._highest = ext
            self._received(second)
            holes = self._holes
            while holes:
                oldest = next(iter(holes))
                if oldest >= ext - self.horizon:
                    break
                del holes[oldest]  # too old to arrive now: final
            return
        counted = self._holes.pop(highest - (0x10000 - delta), None)
        if counted is None:
            return  # a duplicate, or older than the horizon
        self.missing -= 1
        _bump(self.missing_per_second, counted, -1)
        self._received(second)

    def _received(self, second: int) -> None:
        self.received += 1
        _bump(self.received_per_second, second, 1)


@dataclass(slots=True)
class TrackStats:
    """What the bot saw of one remote track. Pure: every time is passed in (seconds)."""

    participant: str
    track: str
    kind: str
    #: Reference for ``first_frame_ms``: when the bot started joining.
    started_at: float
    #: When the bot learned the track was published (or first saw it offered).
    published_at: float
    participant_name: str | None = None
    unpublished_at: float | None = None
    #: The subscribe m-line that last carried this track.
    mid: str | None = None
    #: the codec its subscribe m-line negotiated ("vp8", "h264", "opus"), once known
    codec: str | None = None
    frames_decoded: int = 0
    resolutions: list[tuple[int, int]] = field(default_factory=list)
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    max_gap: float = 0.0
    packets: int | None = None
    packets_lost: int | None = None
    #: decoded frames in each second since the start of joining (index: the second)
    frames_per_second: list[int] = field(default_factory=list)
    #: audio frames that never arrived (gaps in RTP timestamps), in total and per second
    audio_frames_missing: int = 0
    missing_per_second: list[int] = field(default_factory=list)
    _last_audio_pts: int | None = None
    #: audio packets that never arrived (RTP sequence numbers, a duplicate counted
    #: once), per second: what the link and the SFU lost, before aiortc's jitter buffer
    #: (which discards the frames it had prefetched around each hole, up to 5 per loss)
    audio_packets: PacketLoss = field(default_factory=PacketLoss)
    #: (ms since the start of joining, packets, packets lost) at each statistics sample
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    #: Changes of what the server forwards (``layer`` messages) after the first one.
    layer_switches: int = 0
    #: The last ``layer`` message's ``rid``, ``width``, ``height``, ``paused``.
    layer: dict[str, Any] | None = None
    #: Which connection of the bot saw this track (0, then 1 after a reconnect, ...).
    session: int = 0
    #: When that connection was lost (the track ended with it), if it was.
    ended_at: float | None = None
    #: (start, length) of every gap of at least GAP_RECORD_S between decoded video frames
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def on_layer(
        self, rid: str | None, paused: bool, width: int | None = None, height: int | None = None
    ) -> bool:
        """A ``layer`` message from the server; returns whether it is a switch (the rid or
        ``paused`` differ from the previous message's; the first message is no switch)."""
        previous = self.layer
        switched = previous is not None and (previous["rid"], previous["paused"]) != (
            rid,
            paused,
        )
        if switched:
            self.layer_switches += 1
        self.layer = {"rid": rid, "width": width, "height": height, "paused": paused}
        return switched

    def on_frame(self, now: float, width: int | None = None, height: int | None = None) -> None:
        """One decoded frame at ``now``; ``width``/``height`` for video frames."""
        self.frames_decoded += 1
        _bump(self.frames_per_second, int(now - self.started_at), 1)
        if self.first_frame_at is None:
            self.first_frame_at = now
        if self.last_frame_at is not None:
            gap = now - self.last_frame_at
            self.max_gap = max(self.max_gap, gap)
            if gap >= GAP_RECORD_S and self.kind == "video" and len(self.gaps) < 1000:
                self.gaps.append((self.last_frame_at, gap))
        self.last_frame_at = now
        if width is not None and height is not None:
            size = (width, height)
            if not self.resolutions or self.resolutions[-1] != size:
                self.resolutions.append(size)  # every change, in order

    def on_audio_pts(self, now: float, pts: int, samples: int) -> None:
        """An audio frame's RTP timestamp (``pts``): a jump of more than one frame means
        frames never arrived (duplicates and late ones are not counted twice)."""
        last = self._last_audio_pts
        if last is not None and samples > 0:
            step = (pts - last) & 0xFFFFFFFF
            if step >= 0x80000000:
                return  # older than the newest: not a loss
            missing = step // samples - 1
            if 0 < missing < 500:  # a larger jump is a new stream, not a loss
                self.audio_frames_missing += missing
                _bump(self.missing_per_second, int(now - self.started_at), missing)
        self._last_audio_pts = pts

    def on_packets(self, packets: int, packets_lost: int, now: float | None = None) -> None:
        """The latest receive counters attributed to this track (sampled at ``now``)."""
        self.packets = packets
        self.packets_lost = packets_lost
        if now is not None:
            self.timeline.append((round((now - self.started_at) * 1000, 1), packets, packets_lost))

    def on_unpublished(self, now: float) -> None:
        if self.unpublished_at is None:
            self.unpublished_at = now

    def on_session_end(self, now: float) -> None:
        """The bot lost the connection that carried this track (it ends with it)."""
        if self.ended_at is None and self.unpublished_at is None:
            self.ended_at = now

    def trailing_gap(self, end: float) -> float:
        """Seconds from the last decoded video frame to ``end`` when the track was still
        live then (published, its connection up) and had shown a frame; else 0."""
        if (
            self.kind != "video"
            or self.last_frame_at is None
            or self.unpublished_at is not None
            or self.ended_at is not None
        ):
            return 0.0
        return max(end - self.last_frame_at, 0.0)

    def longest_freeze(self, end: float) -> tuple[float, float] | None:
        """(start, length) of the longest gap in this video track's decoded frames, the
        time from the last frame to ``end`` included when the track was still live then;
        before the first frame and after the track ended nothing counts. None without
        frames or for audio."""
        if self.kind != "video" or self.last_frame_at is None:
            return None
        best = max(self.gaps, key=lambda g: g[1], default=None)
        if best is None or best[1] < self.max_gap:  # a gap shorter than GAP_RECORD_S
            best = (self.last_frame_at, self.max_gap)
        trailing = self.trailing_gap(end)
        if trailing > best[1]:
            best = (self.last_frame_at, trailing)
        return best

    def loss_pct(self) -> float | None:
        """Packets lost of those expected, in %, from the receiver's counters."""
        if self.packets is None or self.packets_lost is None:
            return None
        expected = self.packets + max(self.packets_lost, 0)
        return 100.0 * max(self.packets_lost, 0) / expected if expected > 0 else None

    def on_published(self, now: float) -> None:
        """(Re)published: an earlier unpublish no longer applies."""
        if self.unpublished_at is not None:
            self.unpublished_at = None
            self.published_at = now

    @property
    def first_frame_ms(self) -> float | None:
        if self.first_frame_at is None:
            return None
        return (self.first_frame_at - self.started_at) * 1000.0

    @property
    def max_freeze_ms(self) -> float | None:
        """Longest gap between consecutive decoded frames (video only)."""
        if self.kind != "video" or self.frames_decoded == 0:
            return None
        return self.max_gap * 1000.0

    def required(self, end: float, grace: float = DEFAULT_GRACE) -> bool:
        """Whether this track must have decoded a frame for the run to be ``ok``: not
        unpublished, and published at least ``grace`` seconds before ``end`` (or before
        the bot lost the connection that carried it)."""
        until = self.ended_at if self.ended_at is not None else end
        return self.unpublished_at is None and until - self.published_at >= grace

    def to_json(
        self, end: float, grace: float = DEFAULT_GRACE, freeze_limit: float = 1.0
    ) -> dict[str, Any]:
        """JSON of this track; ``freezes`` lists the gaps longer than ``freeze_limit`` s."""
        freezes = [g for g in self.gaps if g[1] > freeze_limit]
        trailing = self.trailing_gap(end)
        if trailing > freeze_limit and self.last_frame_at is not None:
            freezes.append((self.last_frame_at, trailing))
        return {
            "participant": self.participant,
            "participant_name": self.participant_name,
            "track": self.track,
            "kind": self.kind,
            "mid": self.mid,
            "codec": self.codec,
            "frames_decoded": self.frames_decoded,
            "resolutions": [list(r) for r in self.resolutions],
            "first_frame_ms": round_tenth(self.first_frame_ms),
            "max_freeze_ms": round_tenth(self.max_freeze_ms),
            "packets": self.packets,
            "packets_lost": self.packets_lost,
            "layer_switches": self.layer_switches,
            "layer": None if self.layer is None else dict(self.layer),
            "timeline": [list(sample) for sample in self.timeline],
            "frames_per_second": list(self.frames_per_second),
            "audio_frames_missing": self.audio_frames_missing if self.kind == "audio" else None,
            "missing_per_second": list(self.missing_per_second),
            "audio_packets_missing": (self.audio_packets.missing if self.kind == "audio" else None),
            "audio_packets_per_second": (
                list(self.audio_packets.received_per_second) if self.kind == "audio" else []
            ),
            "audio_packets_missing_per_second": (
                list(self.audio_packets.missing_per_second) if self.kind == "audio" else []
            ),
            "unpublished": self.unpublished_at is not None,
            "required": self.required(end, grace),
            "session": self.session,
            "ended_with_connection": self.ended_at is not None,
            "loss_pct": round_tenth(self.loss_pct()),
            "freezes": [
                [round((t - self.started_at) * 1000, 1), round(g * 1000, 1)] for t, g in freezes
            ],
        }


def round_tenth(value: float | None) -> float | None:
    """One decimal, as the summary shows figures (None stays None)."""
    return None if value is None else round(value, 1)


def evaluate_ok(
    joined: bool, tracks: Iterable[TrackStats], end: float, grace: float = DEFAULT_GRACE
) -> bool:
    """Joined, and every required track decoded at least one frame: the media part of
    the summary's ``ok`` (the whole verdict is :func:`loadgen.bot.verdict.evaluate`)."""
    return joined and all(t.frames_decoded > 0 for t in tracks if t.required(end, grace))
