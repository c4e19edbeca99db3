"""The far side of a pipe: piped tracks published in this SFU's rooms (``sfu/pipe.py``).

For each origin participant whose tracks come down the pipe, the room here gets a
**remote publisher**: a real :class:`~sfu.participant.Participant` with the origin's id
and name, no peer connection, subscribed to nothing, whose listener is a
:class:`PipedListener`. Each announced track becomes a ``PublishedTrack`` of ordinary
Sources (one per simulcast layer) added with ``PublishSide.add_track``, so the room tells
its participants (``participant_joined``, ``track_published``) and subscribes them as for
any publisher; layer selection, congestion control, the packet cache, NACK/RTX and the C
forwarding loop work on them unchanged. Packets reach the Sources by pipe SSRC.

The :class:`Importer` is the Sources' ``SourceOwner``: what a Source would ask of its
publisher goes back up the pipe as RTCP naming pipe SSRCs: NACKs for what the pipe lost
(batched as ``PublishSide`` does), PLI, and once a second per video track a REMB of what
the subscribers here take of it (``publish_rtcp.publish_bitrate``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpSrPacket,
    pack_remb_fci,
)

from .participant import Participant
from .pipe_wire import TrackAnnouncement
from .ports import Clock, NullListener, Timer
from .publish_rtcp import publish_bitrate
from .publish_side import NACK_BATCH_DELAY, NACK_INTERVAL
from .rtp.packet import RtpError, RtpView
from .rtp.rtcp import build_nack
from .source import Source, SourceParams
from .tracks import PublishedTrack

__all__ = ["Importer", "PipedListener", "is_piped"]

logger = logging.getLogger(__name__)


class PipedListener(NullListener):
    """The listener of a remote publisher: tells its importer when it is gone."""

    def __init__(self, on_closed: Callable[[], None]) -> None:
        self._on_closed = on_closed

    def closed(self, reason: str) -> None:
        self._on_closed()


def is_piped(participant: Participant) -> bool:
    """Whether ``participant`` is a remote publisher fed by a pipe (of any pipe)."""
    return isinstance(participant.listener, PipedListener)


def _set_muted(publisher: Participant, track: PublishedTrack, muted: bool) -> None:
    """Mute or unmute ``track`` for everyone in its room (the signaling layer's own
    ``signaling.admin.set_muted`` also tells the clients: ``PipeTransport.set_muted``)."""
    track.muted = muted
    now = asyncio.get_running_loop().time()
    for p in list(publisher.room.participants.values()):
        if p is not publisher and not p.closed:
            p.update_layers(now)


class Importer:
    """Every remote publisher and piped Source one pipe feeds; their ``SourceOwner``."""

    def __init__(
        self,
        join: Callable[[str, str, PipedListener, str, str | None], Participant],
        send: Callable[[bytes], object],
        clock: Clock,
        min_bitrate: int,
        max_bitrate: int,
        cache_size: int = 1024,
        keyframe_interval: float = 0.5,
    ) -> None:
        self._join = join
        #: how a mute reaches the room (``PipeTransport.set_muted``)
        self.set_muted: Callable[[Participant, PublishedTrack, bool], None] = _set_muted
        self._send = send
        self._clock = clock
        self._lo, self._hi = min_bitrate, max_bitrate
        self._cache_size = cache_size
        self._keyframe_interval = keyframe_interval
        self._rtcp_ssrc = secrets.randbits(32) or 1
        #: remote publishers by (room, participant id)
        self.remote: dict[tuple[str, str], Participant] = {}
        #: piped tracks by (room, track id)
        self.tracks: dict[tuple[str, str], PublishedTrack] = {}
        self.by_ssrc: dict[int, Source] = {}
        self.by_rtx_ssrc: dict[int, Source] = {}
        self._nack_sources: set[Source] = set()
        self._nack_timer: Timer | None = None
        self._timers: set[Timer] = set()
        self.packets = 0
        self.unknown = 0
        self.malformed = 0
        self.nacks_sent = 0
        self.keyframe_requests = 0
        self.closed = False

    # ------------------------------------------------------------ control

    def on_export(self, a: TrackAnnouncement, now: float) -> None:
        """A track announced by the origin: publish it here (its remote publisher joins
        the room first if it is not there yet)."""
        if (a.room, a.track) in self.tracks or self.closed:
            return
        key = (a.room, a.participant)
        participant = self.remote.get(key)
        if participant is None or participant.closed:
            listener = PipedListener(lambda: self._gone(key))
            try:
                participant = self._join(
                    a.room, a.participant_name, listener, a.participant, a.identity
                )
            except (ValueError, RuntimeError) as exc:
                logger.warning("pipe: cannot add remote publisher %s: %s", a.participant, exc)
                return
            participant.can_subscribe = False
            participant.data_side.may_send = False
            self.remote[key] = participant
        sources = []
        for layer in a.layers:
            params = SourceParams(
                track_id=a.track,
                kind=a.kind,
                codec=a.codec,
                clock_rate=a.clock_rate,
                payload_type=a.payload_type,
                ssrc=layer.ssrc,
                rtx_payload_type=a.rtx_payload_type,
                rtx_ssrc=layer.rtx_ssrc,
                audio_level_ext=a.audio_level_ext,
                mid=a.mid,
                rid=layer.rid,
                red_payload_type=a.red_payload_type,
                fmtp=a.fmtp,
            )
            source = Source(
                params,
                self,
                cache_size=self._cache_size,
                keyframe_interval=self._keyframe_interval,
            )
            self.by_ssrc[layer.ssrc] = source
            self.by_rtx_ssrc[layer.rtx_ssrc] = source
            sources.append(source)
        track = PublishedTrack(
            id=a.track, kind=a.kind, mid=a.mid, layers=tuple(sources), muted=a.muted
        )
        self.tracks[(a.room, a.track)] = track
        participant.publish_side.add_track(track, now)

    def on_unexport(self, room: str, participant_id: str, track_id: str) -> None:
        track = self.tracks.pop((room, track_id), None)
        if track is None:
            return
        self._forget(track)
        participant = self.remote.get((room, participant_id))
        if participant is not None and not participant.closed:
            participant.publish_side.remove_track(track)

    def on_mute(self, room: str, participant_id: str, track_id: str, muted: bool) -> None:
        """The origin's operator muted or unmuted a piped track: so is it here."""
        track = self.tracks.get((room, track_id))
        participant = self.remote.get((room, participant_id))
        if track is not None and participant is not None and track.muted != muted:
            self.set_muted(participant, track, muted)

    def on_leave(self, room: str, participant_id: str, reason: str = "left") -> None:
        participant = self.remote.pop((room, participant_id), None)
        if participant is not None:
            self._drop_tracks(room, participant)
            participant.close_soon(reason)

    def _gone(self, key: tuple[str, str]) -> None:
        """A remote publisher closed (left, kicked by an operator, room closed)."""
        participant = self.remote.pop(key, None)
        if participant is not None:
            self._drop_tracks(key[0], participant)

    def _drop_tracks(self, room: str, participant: Participant) -> None:
        for track in list(participant.tracks.values()):
            if self.tracks.pop((room, track.id), None) is not None:
                self._forget(track)

    def _forget(self, track: PublishedTrack) -> None:
        for source in track.layers:
            if self.by_ssrc.get(source.ssrc or 0) is source:
                del self.by_ssrc[source.ssrc or 0]
            if self.by_rtx_ssrc.get(source.rtx_ssrc or 0) is source:
                del self.by_rtx_ssrc[source.rtx_ssrc or 0]
            self._nack_sources.discard(source)

    # ------------------------------------------------------------ media

    def on_rtp(self, data: bytes, now: float) -> None:
        try:
            pkt = RtpView(data)
        except RtpError:
            self.malformed += 1
            return
        self.packets += 1
        source = self.by_ssrc.get(pkt.ssrc)
        if source is not None:
            source.on_rtp(pkt, now)
            return
        source = self.by_rtx_ssrc.get(pkt.ssrc)
        if source is not None:
            source.on_rtx(pkt, now)
            return
        self.unknown += 1

    def on_rtcp(self, packet: AnyRtcpPacket, now: float) -> None:
        if isinstance(packet, RtcpSrPacket):
            source = self.by_ssrc.get(packet.ssrc)
            if source is not None:
                info = packet.sender_info
                source.on_sender_report(info.ntp_timestamp, info.rtp_timestamp, now)

    # ------------------------------------------------------------ SourceOwner

    def request_keyframe(self, source: Source) -> None:
        if source.ssrc is None or self.closed:
            return
        self.keyframe_requests += 1
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=source.ssrc)
        self._send(bytes(pli))

    def source_has_missing(self, source: Source) -> None:
        self._nack_sources.add(source)
        if self._nack_timer is None and not self.closed:
            self._nack_timer = self._clock.call_later(NACK_BATCH_DELAY, self._nack_tick)

    def keyframe_deferred(self, source: Source, at: float) -> None:
        if self.closed:
            return
        clock = self._clock
        self._timers.add(clock.call_at(at, lambda: source.poll(clock.time())))
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() >= clock.time()}

    def _nack_tick(self) -> None:
        self._nack_timer = None
        if self.closed:
            return
        now = self._clock.time()
        for source in list(self._nack_sources):
            due = source.nack.due(now)
            if due and source.ssrc is not None:
                self.nacks_sent += 1
                self._send(build_nack(self._rtcp_ssrc, source.ssrc, due))
            if not len(source.nack):
                self._nack_sources.discard(source)
        if self._nack_sources:
            self._nack_timer = self._clock.call_later(NACK_INTERVAL, self._nack_tick)

    # ------------------------------------------------------------ periodic

    def send_estimates(self) -> None:
        """A REMB per piped video track: what its subscribers here take of it."""
        for track in self.tracks.values():
            if track.kind != "video":
                continue
            ssrcs = [s.ssrc for s in track.layers if s.ssrc is not None]
            remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=self._rtcp_ssrc, media_ssrc=0)
            remb.fci = pack_remb_fci(publish_bitrate([track], self._lo, self._hi), ssrcs)
            self._send(bytes(remb))

    async def close(self, reason: str) -> None:
        """Every remote publisher leaves (its tracks unpublished here)."""
        self.closed = True
        if self._nack_timer is not None:
            self._nack_timer.cancel()
        for timer in self._timers:
            timer.cancel()
        remote = list(self.remote.values())
        self.remote.clear()
        self.tracks.clear()
        self.by_ssrc.clear()
        self.by_rtx_ssrc.clear()
        for participant in remote:
            await participant.close(reason)
