"""The origin side of a pipe: published tracks sent to another SFU (``sfu/pipe.py``).

Each layer (Source) of an exported track gets a :class:`PipeTap`: a subscriber of the
Source, as a Forwarder is (``SourceSubscriber``), attached for as long as the export
lasts, so every layer is piped whether or not anyone here wants it. The C loop
(``sfu/native.py``) calls a tap's ``forward`` like any non-native subscriber: the packet
goes down the pipe as it came from the publisher, its SSRC replaced by the layer's pipe
SSRC. Feedback from the far side is answered here: NACKs from the Source's packet cache
(RTX on the pipe), PLI/FIR as the Source's keyframe request (throttled, to the
publisher), REMB as the tap's ``remb`` (what ``publish_rtcp.publish_bitrate`` asks of a
single-layer publisher). Sender reports are passed on, extrapolated to when they are
sent (``send_sender_reports``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, cast

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)

from .observer import SfuObserver
from .participant import Participant
from .pipe_import import is_piped
from .pipe_wire import PIPE_RTX_PT, LayerAnnouncement, TrackAnnouncement, build_rtx, with_ssrc
from .rtp.packet import RtpView
from .rtp.rtcp import normalize_lost
from .source import Source
from .tracks import PublishedTrack

__all__ = ["Exporter", "PipeTap"]

logger = logging.getLogger(__name__)


class PipeTap:
    """Sends one origin Source down the pipe (a ``SourceSubscriber`` of it)."""

    def __init__(
        self, source: Source, ssrc: int, rtx_ssrc: int, send: Callable[[bytes], object]
    ) -> None:
        self.source = source
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self._send = send
        self._rtx_pt = source.params.rtx_payload_type or PIPE_RTX_PT
        self._rtx_seq = random.randrange(0, 0x10000)
        #: what the far side's subscribers take of this track (its REMB), bit/s
        self.remb: int | None = None
        #: the last sender report passed on (``Source.sender_report``)
        self.sr_sent: tuple[int, int, float] | None = None
        self.packets = 0
        self.bytes = 0
        self.retransmitted = 0
        self.nack_misses = 0
        self.closed = False

    @property
    def current(self) -> Source:
        return self.source

    def forward(self, source: Source, pkt: RtpView, vp8: object, now: float) -> None:
        data = pkt.data
        self._send(b"".join((data[:8], self.ssrc.to_bytes(4, "big"), data[12:])))
        self.packets += 1
        self.bytes += len(data)

    def skip(self, pkt: RtpView) -> None:
        """Padding only: piped too, so the far side sees no gap to ask for."""
        self._send(with_ssrc(pkt.data, self.ssrc))

    def source_closed(self, source: Any) -> None:
        self.closed = True

    def on_nack(self, seqs: list[int]) -> int:
        """Resend what the far side lost, from the Source's cache, as RTX."""
        sent = 0
        source = self.source
        for seq in seqs:
            entry = source.cache.get(seq)
            if entry is None:
                self.nack_misses += 1
                continue
            pkt = cast("tuple[RtpView, object]", entry[1])[0]
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            self._send(
                build_rtx(
                    pkt.data,
                    pkt.payload_start,
                    pkt.payload_end,
                    self._rtx_pt,
                    self._rtx_seq,
                    self.rtx_ssrc,
                )
            )
            sent += 1
        self.retransmitted += sent
        return sent

    def sender_report(self, now: float) -> bytes | None:
        """The publisher's latest sender report, if not passed on yet, extrapolated to
        ``now`` and naming the pipe SSRC."""
        sr = self.source.sender_report
        if sr is None or sr is self.sr_sent:
            return None
        self.sr_sent = sr
        ntp, rtp_ts, arrival = sr
        elapsed = max(0.0, now - arrival)
        info = RtcpSenderInfo(
            ntp_timestamp=(ntp + int(elapsed * (1 << 32))) & 0xFFFFFFFFFFFFFFFF,
            rtp_timestamp=(rtp_ts + int(elapsed * self.source.clock_rate)) & 0xFFFFFFFF,
            packet_count=self.packets & 0xFFFFFFFF,
            octet_count=self.bytes & 0xFFFFFFFF,
        )
        return bytes(RtcpSrPacket(ssrc=self.ssrc, sender_info=info))


class Exported:
    """One exported track: where it is, its taps, its announcement."""

    def __init__(
        self, room: str, participant: Participant, track: PublishedTrack, taps: list[PipeTap]
    ) -> None:
        self.room = room
        self.participant = participant
        self.track = track
        self.taps = taps
        #: the mute state the far side has been told
        self.muted = track.muted


class Exporter(SfuObserver):
    """Every track one pipe exports. ``announce`` sends a control message reliably and
    returns its sequence number; ``send`` sends a datagram (RTP/RTCP) to the far side."""

    def __init__(
        self,
        send: Callable[[bytes], object],
        announce: Callable[[dict[str, Any]], int],
        clock: Callable[[], float],
    ) -> None:
        self._send = send
        self._clock = clock
        self._announce = announce
        self.tracks: dict[str, Exported] = {}  # by track id
        self.taps: dict[int, PipeTap] = {}  # by pipe ssrc (media and RTX)
        #: rooms whose every local publisher is exported, and single participants
        #: (room, participant id) whose every track is, now and later
        self.rooms: set[str] = set()
        self.participants: set[tuple[str, str]] = set()
        #: participants with a remote publisher on the far side (a track announced)
        self.announced: set[str] = set()
        self.keyframe_requests = 0
        self.nacks = 0

    def _new_ssrc(self) -> int:
        while True:
            ssrc = random.randrange(1, 1 << 32)
            if ssrc not in self.taps:
                return ssrc

    def export(self, room: str, participant: Participant, track: PublishedTrack, now: float) -> int:
        """Pipe ``track`` (every layer) from now on; returns its announcement's number."""
        if track.id in self.tracks:
            return -1
        taps = []
        for source in track.layers:
            tap = PipeTap(source, self._new_ssrc(), 0, self._send)
            self.taps[tap.ssrc] = tap
            tap.rtx_ssrc = self._new_ssrc()
            self.taps[tap.rtx_ssrc] = tap
            taps.append(tap)
        self.tracks[track.id] = Exported(room, participant, track, taps)
        p = track.source.params
        announcement = TrackAnnouncement(
            room=room,
            participant=participant.id,
            participant_name=participant.name,
            track=track.id,
            kind=track.kind,
            mid=track.mid,
            codec=p.codec,
            clock_rate=p.clock_rate,
            payload_type=p.payload_type,
            rtx_payload_type=p.rtx_payload_type,
            red_payload_type=p.red_payload_type,
            audio_level_ext=p.audio_level_ext,
            layers=tuple(LayerAnnouncement(t.source.rid, t.ssrc, t.rtx_ssrc) for t in taps),
            muted=track.muted,
            fmtp=p.fmtp,
            identity=participant.identity,
        )
        n = self._announce({"t": "export", "track": announcement.to_json()})
        self.announced.add(participant.id)
        for tap in taps:
            tap.source.add_forwarder(tap, now)  # (asks the publisher for a keyframe)
        return n

    def unexport(self, track: PublishedTrack, tell: bool = True) -> None:
        exported = self.tracks.pop(track.id, None)
        if exported is None:
            return
        for tap in exported.taps:
            tap.source.remove_forwarder(tap)
            self.taps.pop(tap.ssrc, None)
            self.taps.pop(tap.rtx_ssrc, None)
        if tell:
            self._announce(
                {
                    "t": "unexport",
                    "room": exported.room,
                    "participant": exported.participant.id,
                    "track": track.id,
                }
            )

    def unexport_room(self, room: str) -> None:
        """Unexport every track of ``room``; the far side's remote publishers of the
        room leave (``leave``): without tracks they would stay there as participants."""
        leaving: set[str] = set()
        for exported in list(self.tracks.values()):
            if exported.room == room:
                leaving.add(exported.participant.id)
                self.unexport(exported.track)
        self.participants = {(r, p) for r, p in self.participants if r != room}
        for participant_id in sorted(leaving & self.announced):
            self.announced.discard(participant_id)
            self._announce({"t": "leave", "room": room, "participant": participant_id})

    def wants(self, room: str, participant: Participant) -> bool:
        """Whether ``participant``'s new tracks are exported (followed, and local)."""
        if is_piped(participant):
            return False  # a track that came down a pipe never goes back up one
        return room in self.rooms or (room, participant.id) in self.participants

    # ------------------------------------------------------------ SfuObserver

    def track_published(self, room: Any, participant: Participant, track: PublishedTrack) -> None:
        if self.wants(room.id, participant):
            self.export(room.id, participant, track, self._clock())

    def track_unpublished(self, room: Any, participant: Participant, track: PublishedTrack) -> None:
        self.unexport(track)

    def participant_left(self, room: Any, participant: Participant, reason: str) -> None:
        """Its tracks are unexported already (``track_unpublished``): the far side's
        remote publisher leaves too, if there is one."""
        known = participant.id in self.announced
        for exported in list(self.tracks.values()):
            if exported.participant is participant:
                self.unexport(exported.track, tell=False)
        self.participants.discard((room.id, participant.id))
        self.announced.discard(participant.id)
        if known:
            self._announce({"t": "leave", "room": room.id, "participant": participant.id})

    def room_finished(self, room: Any) -> None:
        self.rooms.discard(room.id)

    # ------------------------------------------------------------ feedback

    def on_rtcp(self, packet: AnyRtcpPacket, now: float) -> None:
        """Feedback from the far side about piped streams."""
        if isinstance(packet, RtcpRtpfbPacket):
            if packet.fmt == RTCP_RTPFB_NACK:
                tap = self.taps.get(packet.media_ssrc)
                if tap is not None:
                    self.nacks += 1
                    tap.on_nack(normalize_lost(packet.lost))
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                tap = self.taps.get(packet.media_ssrc)
                if tap is not None:
                    self.keyframe_requests += 1
                    tap.source.request_keyframe(now)
            elif packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                for ssrc in ssrcs:
                    tap = self.taps.get(ssrc)
                    if tap is not None:
                        tap.remb = bitrate

    def send_sender_reports(self, now: float) -> None:
        """The publishers' new sender reports; and an operator's mute or unmute of an
        exported track since the last call (``PublishedTrack.muted``)."""
        for exported in self.tracks.values():
            if exported.track.muted != exported.muted:
                exported.muted = exported.track.muted
                self._announce(
                    {
                        "t": "mute",
                        "room": exported.room,
                        "participant": exported.participant.id,
                        "track": exported.track.id,
                        "muted": exported.muted,
                    }
                )
            for tap in exported.taps:
                sr = tap.sender_report(now)
                if sr is not None:
                    self._send(sr)

    def close(self) -> None:
        """Detach every tap (nothing is announced: the pipe is closing)."""
        for exported in list(self.tracks.values()):
            self.unexport(exported.track, tell=False)
        self.rooms.clear()
        self.participants.clear()
