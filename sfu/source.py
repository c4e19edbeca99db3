"""A Source is one published stream as the SFU receives it from its publisher.

It owns the packet cache (to answer subscribers' NACKs), receive statistics (for
receiver reports to the publisher), loss detection (NACKs to the publisher), the
publisher's sender-report clock mapping (for lip sync downstream), keyframe
tracking and throttled keyframe requests. Forwarders subscribe to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from .cache_window import CacheSizer, CacheWindow
from .nack import NackGenerator
from .native import SourceCore, fanout
from .packet_cache import PacketCache
from .ports import SourceOwner, SourceSubscriber
from .receive_stats import ReceiveStatistics
from .rtp.h264 import H264Tracker, parse_h264
from .rtp.packet import RtpError, RtpView, Vp8Descriptor, abs_send_time
from .rtp.red import check_red

__all__ = ["Source", "SourceOwner", "SourceParams"]

#: A starting forwarder is sent the cached newest keyframe and what followed it when it
#: came at most this long ago (s) in at most this many packets (``Source.recent_keyframe``).
REPLAY_AGE = 0.5
REPLAY_PACKETS = 128


@dataclass(frozen=True, slots=True)
class SourceParams:
    track_id: str
    kind: str  # "audio" | "video"
    codec: str  # "opus" | "vp8" | "h264"
    clock_rate: int
    payload_type: int
    ssrc: int | None
    rtx_payload_type: int | None = None
    rtx_ssrc: int | None = None
    audio_level_ext: int = 0
    mid: str = ""
    #: the simulcast layer's RID (None: the track has one layer)
    rid: str | None = None
    #: the payload type of RFC 2198 RED (Opus inside) the publisher may send, or None
    red_payload_type: int | None = None
    #: the codec's format parameters as negotiated (H.264: profile-level-id,
    #: packetization-mode), offered as they are to subscribers
    fmtp: tuple[tuple[str, str], ...] = ()


class Source(SourceCore):
    """Its per-packet fields (counters, keyframe marks, its statistics, NACK tracker and
    cache) live in the C base ``sfu.native.SourceCore``, which the C ingress
    (``sfu/_ingress.c``) updates for packets of the steady state; ``on_rtp`` is the
    reference for what it does."""

    def __init__(
        self,
        params: SourceParams,
        owner: SourceOwner[Source],
        cache_size: int = 1024,
        keyframe_interval: float = 0.5,
        on_malformed: Callable[[str, float], None] | None = None,
        cache_window: CacheWindow | None = None,
    ) -> None:
        self.params = params
        #: told (reason, now) of each malformed packet dropped here
        self._on_malformed = on_malformed
        #: malformed packets dropped here
        self.malformed = 0
        self.track_id = params.track_id
        self.kind = params.kind
        self.is_video = params.kind == "video"
        self.is_vp8 = params.codec == "vp8"
        #: H.264: keyframes are IDRs with SPS+PPS before them (sfu/rtp/h264.py)
        self.h264 = H264Tracker() if params.codec == "h264" else None
        self.clock_rate = params.clock_rate
        self.payload_type = params.payload_type
        self.ssrc = params.ssrc
        self.rtx_ssrc = params.rtx_ssrc
        self.rid = params.rid
        self._audio_level_ext = params.audio_level_ext
        self._owner = owner
        #: with a window, the cache's capacity follows the packet rate (``tick``)
        self.cache_sizer = CacheSizer(cache_window) if cache_window is not None else None
        self.cache = PacketCache(cache_size if cache_window is None else cache_window.max_packets)
        self.cache.rebuild = self._rebuild  # packets are cached as bytes, parsed when asked for
        self.stats = ReceiveStatistics(params.clock_rate)
        self.nack = NackGenerator()
        #: replaced, never mutated, so that iterating it while forwarding is safe
        self.forwarders: tuple[SourceSubscriber, ...] = ()
        self.keyframe_interval = keyframe_interval
        self.last_keyframe_request = -1e9
        self.keyframe_pending = False
        #: keyframe requests sent upstream, and those held back by ``keyframe_interval``
        self.keyframe_requests_sent = 0
        self.keyframe_requests_throttled = 0
        self.last_keyframe_time: float | None = None
        #: sequence number of the first packet of the newest VP8 keyframe (``recent_keyframe``)
        self.last_keyframe_seq: int | None = None
        self.width = 0
        self.height = 0
        #: (64-bit NTP timestamp, RTP timestamp, local arrival time) of the last SR.
        self.sender_report: tuple[int, int, float] | None = None
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.last_packet_time: float | None = None
        #: fraction (0..1) of this stream lost on the way from its publisher, as in the
        #: last receiver report the SFU sent it
        self.upstream_loss = 0.0
        #: sum of 127 - audio level over packets that carried one, and their count
        #: (the room's active speaker detection samples these)
        self.loudness_sum = 0
        self.loudness_packets = 0
        #: bits per second, measured by ``tick``
        self.bitrate = 0.0
        self._rate_mark: tuple[float, int] | None = None
        #: bytes and frames received per VP8 temporal layer (TID 0-3)
        self.tid_bytes = [0, 0, 0, 0]
        self.tid_frames = [0, 0, 0, 0]
        #: (bit/s, frames/s) of the temporal layers up to each TID (cumulative: entry
        #: ``t`` is what forwarding TIDs 0..t costs and shows), measured by ``tick``;
        #: empty without temporal layers
        self.temporal: tuple[tuple[float, float], ...] = ()
        self._tid_mark: tuple[float, tuple[int, ...], tuple[int, ...]] | None = None
        self.closed = False

    # ------------------------------------------------------------------ ingress

    def _malformed(self, exc: RtpError, now: float) -> None:
        self.dropped += 1
        self.malformed += 1
        if self._on_malformed is not None:
            self._on_malformed(str(exc), now)

    def on_rtp(self, pkt: RtpView, now: float) -> None:
        """One media packet of this source (hot path).

        A malformed packet (header-extension elements that overrun their block, a bad
        VP8 descriptor) is dropped here and reported to ``on_malformed``; one whose
        extensions are malformed changes nothing, one with a bad VP8 descriptor counts
        as received (it is not asked for again) but is neither cached nor forwarded.
        """
        if pkt.payload_type != self.payload_type:
            if pkt.payload_type != self.params.red_payload_type:
                self.dropped += 1
                return
            try:  # RED: each forwarder strips it or passes it on (sfu/rtp/red.py)
                if pkt.payload_end > pkt.payload_start:  # (padding only: skipped below)
                    check_red(pkt.data[pkt.payload_start : pkt.payload_end], self.payload_type)
            except RtpError as exc:
                self._malformed(exc, now)
                return
        level = None
        if self._audio_level_ext and pkt.ext_profile:
            try:
                level = pkt.extension(self._audio_level_ext)
            except RtpError as exc:
                self._malformed(exc, now)
                return
        seq = pkt.seq
        self.stats.add(seq, pkt.timestamp, now)
        self.nack.add(seq, now)
        if len(self.nack):
            self._owner.source_has_missing(self)
        self.packets += 1
        self.bytes += len(pkt.data)
        self.last_packet_time = now
        if pkt.payload_end == pkt.payload_start:
            # padding only: never forwarded; close the gap it leaves downstream
            for forwarder in self.forwarders:
                forwarder.skip(pkt)
            return
        if level:
            pkt.audio_level = level[0]
            self.loudness_sum += 127 - (level[0] & 0x7F)
            self.loudness_packets += 1
        vp8 = None
        if self.is_vp8:
            try:
                vp8 = Vp8Descriptor(pkt.data, pkt.payload_start, pkt.payload_end)
            except RtpError as exc:
                self._malformed(exc, now)
                return
            tid = vp8.tid
            if tid >= 0:
                self.tid_bytes[tid] += len(pkt.data)
                if vp8.start and not vp8.partition_id:
                    self.tid_frames[tid] += 1
            if vp8.keyframe:
                self.last_keyframe_time = now
                self.last_keyframe_seq = seq
                self.keyframe_pending = False
                if vp8.width:
                    self.width, self.height = vp8.width, vp8.height
        elif self.h264 is not None:
            self._on_h264(pkt, now)
            return
        self.cache.store(seq, pkt.data)  # its meta: ``_rebuild``, when a NACK asks for it
        forwarders = self.forwarders
        if forwarders:
            pkt.abs_send_time = abs_send_time(now)
            fanout(self, pkt, vp8, now, forwarders)  # C for steady forwarders (sfu/native.py)

    def _rebuild(self, data: bytes) -> tuple[RtpView, Vp8Descriptor | None]:
        """The RtpView (audio level set) and VP8 descriptor of a packet ``on_rtp`` took
        in: the cache's meta, made when first asked for, and the packet as the C
        ingress hands it to a forwarder on the Python path."""
        pkt = RtpView(data)
        if self._audio_level_ext and pkt.ext_profile:
            level = pkt.extension(self._audio_level_ext)
            if level:
                pkt.audio_level = level[0]
        vp8 = Vp8Descriptor(data, pkt.payload_start, pkt.payload_end) if self.is_vp8 else None
        return pkt, vp8

    def _on_h264(self, pkt: RtpView, now: float) -> None:
        """An H.264 packet: cached now, forwarded when its run is complete (a
        parameter-set-only packet waits for the slice after it: ``H264Tracker``)."""
        assert self.h264 is not None
        try:
            nals = parse_h264(pkt.data, pkt.payload_start, pkt.payload_end)
        except RtpError as exc:
            self._malformed(exc, now)
            return
        self.cache.store(pkt.seq, pkt.data, (pkt, None))
        run = self.h264.push(pkt, nals)
        if run and run[0][1].keyframe:
            self.last_keyframe_time = now
            self.keyframe_pending = False
            if run[0][1].width:
                self.width, self.height = run[0][1].width, run[0][1].height
        if self.forwarders:
            ast = abs_send_time(now)
            for held, desc in run:
                held.abs_send_time = held.abs_send_time or ast
                fanout(self, held, desc, now, self.forwarders)

    def on_rtx(self, pkt: RtpView, now: float) -> None:
        """An RTX packet: forwarded only when it repairs a loss we asked for."""
        if pkt.payload_end - pkt.payload_start < 2 or self.ssrc is None:
            return  # padding-only probe
        data = pkt.data
        osn = (data[pkt.payload_start] << 8) | data[pkt.payload_start + 1]
        if osn not in self.nack.missing:
            return  # unsolicited copy (bandwidth probing): never forwarded as new media
        original = (
            bytes((data[0] & 0xDF, (data[1] & 0x80) | self.payload_type))
            + osn.to_bytes(2, "big")
            + data[4:8]
            + self.ssrc.to_bytes(4, "big")
            + data[12 : pkt.payload_start]
            + data[pkt.payload_start + 2 : pkt.payload_end]
        )
        self.on_rtp(RtpView(original), now)

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        self.sender_report = (ntp, rtp_ts, now)
        self.stats.on_sender_report(ntp, now)

    # ------------------------------------------------------------------ control

    def request_keyframe(self, now: float) -> None:
        """Ask the publisher for a keyframe, at most once per ``keyframe_interval``."""
        if not self.is_video or self.closed:
            return
        if now - self.last_keyframe_request >= self.keyframe_interval:
            self.last_keyframe_request = now
            self.keyframe_pending = False
            self.keyframe_requests_sent += 1
            self._owner.request_keyframe(self)
            return
        self.keyframe_requests_throttled += 1
        if not self.keyframe_pending:
            self.keyframe_pending = True
            self._owner.keyframe_deferred(self, self.last_keyframe_request + self.keyframe_interval)

    def tick(self, now: float) -> None:
        """Update ``bitrate`` and the cache's capacity; call about once a second."""
        sizer = self.cache_sizer
        if sizer is not None and (capacity := sizer.update(self.packets, now)) is not None:
            self.cache.resize(capacity)
        mark = self._rate_mark
        if mark is not None and now - mark[0] >= 0.2:
            rate = (self.bytes - mark[1]) * 8 / (now - mark[0])
            self.bitrate = rate if self.bitrate == 0 else 0.5 * self.bitrate + 0.5 * rate
        if mark is None or now - mark[0] >= 0.2:
            self._rate_mark = (now, self.bytes)
            self._tick_temporal(now)

    def _tick_temporal(self, now: float) -> None:
        """Update ``temporal`` from the per-TID counters (the same smoothing as ``bitrate``)."""
        mark = self._tid_mark
        self._tid_mark = (now, tuple(self.tid_bytes), tuple(self.tid_frames))
        if mark is None:
            return
        span = now - mark[0]
        frames = [self.tid_frames[t] - mark[2][t] for t in range(4)]
        top = max((t for t in range(4) if frames[t] > 0), default=-1)
        if top < 1:
            self.temporal = ()  # one temporal layer (or none seen): nothing to choose
            return
        rates: list[tuple[float, float]] = []
        bits = fps = 0.0
        for t in range(top + 1):
            bits += (self.tid_bytes[t] - mark[1][t]) * 8 / span
            fps += frames[t] / span
            rates.append((bits, fps))
        old = self.temporal
        if len(old) == len(rates):
            rates = [
                (0.5 * (b0 + b1), 0.5 * (f0 + f1))
                for (b0, f0), (b1, f1) in zip(old, rates, strict=True)
            ]
        self.temporal = tuple(rates)

    def active(self, now: float, timeout: float) -> bool:
        """Whether the publisher sent this stream within ``timeout`` seconds."""
        last = self.last_packet_time
        return last is not None and now - last <= timeout

    def poll(self, now: float) -> None:
        """Periodic work: a deferred keyframe request."""
        if self.keyframe_pending:
            self.request_keyframe(now)

    def add_forwarder(
        self, forwarder: SourceSubscriber, now: float, *, replay: bool = False
    ) -> None:
        """Attach ``forwarder``; a video source asks for a keyframe, unless ``replay``
        (a forwarder that never sent anything) and :meth:`recent_keyframe` has one: the
        forwarder is then given those packets at once."""
        if forwarder in self.forwarders or self.closed:
            return
        self.forwarders = (*self.forwarders, forwarder)
        cached = self.recent_keyframe(now) if replay and self.is_video else []
        if self.is_video and not cached:
            self.request_keyframe(now)
        for pkt, vp8 in cached:
            forwarder.forward(self, pkt, vp8, now)

    def recent_keyframe(self, now: float) -> list[tuple[RtpView, Vp8Descriptor | None]]:
        """The newest VP8 keyframe and every packet since, from the cache, when it came
        at most ``REPLAY_AGE`` s ago, in at most ``REPLAY_PACKETS`` packets, all cached:
        a forwarder that starts (a subscriber joining) sends them at once instead of
        waiting for the keyframe it would ask for. Empty otherwise."""
        first, newest, at = self.last_keyframe_seq, self.cache.newest, self.last_keyframe_time
        if first is None or newest is None or at is None or now - at > REPLAY_AGE:
            return []
        count = ((newest - first) & 0xFFFF) + 1
        entries = [
            self.cache.get((first + i) & 0xFFFF) for i in range(min(count, 1 + REPLAY_PACKETS))
        ]
        if count > REPLAY_PACKETS or any(e is None for e in entries):
            return []
        packets: list[tuple[RtpView, Vp8Descriptor | None]] = []
        for entry in entries:
            assert entry is not None
            pkt, vp8 = cast(tuple[RtpView, Vp8Descriptor | None], entry[1])
            pkt.abs_send_time = abs_send_time(now)
            packets.append((pkt, vp8))
        return packets

    def remove_forwarder(self, forwarder: SourceSubscriber) -> None:
        if forwarder in self.forwarders:
            self.forwarders = tuple(f for f in self.forwarders if f is not forwarder)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for forwarder in self.forwarders:
            forwarder.source_closed(self)
        self.forwarders = ()
        self.cache.clear()
        self.cache.rebuild = None  # (it is bound to this Source: a held cache kept it alive)
