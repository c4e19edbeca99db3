"""A participant's publish side: the client's offer, the Sources of what it sends,
ingress (its RTP to the Sources) and the RTCP the SFU sends it (RR, REMB, NACK, PLI).

The client offers on its *publish* connection; the SFU answers. Each m-line that sends
becomes a ``PublishedTrack`` of one Source, or one per simulcast layer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, RtcpSrPacket

from . import aiortc_adapter as adapter
from .cache_window import CacheWindow
from .config import SfuConfig
from .ports import Clock, NegotiationError, Timer
from .publish_rtcp import publish_bitrate, receiver_reports
from .red_sdp import RedOffer, answer_red, offered_red
from .routing import IngressRouter
from .rtp.extensions import AUDIO_LEVEL_URI, MID_URI, REPAIRED_RID_URI, RID_URI
from .rtp.malformed import MalformedLog
from .rtp.packet import RtpError, RtpView
from .rtp.rtcp import build_nack, parse_rtcp_counted
from .sdp import SimulcastError, check_transport, read_simulcast, write_simulcast_answer
from .source import Source, SourceParams
from .tracks import PublishedTrack

logger = logging.getLogger(__name__)

#: H.264: packetization-mode 1, constrained baseline or baseline profile (what aiortc's
#: codec list matches, ``sfu/rtp/h264.py``); a publish answer keeps one codec, the offer's first
SUPPORTED_CODECS = {"audio": {"audio/opus"}, "video": {"video/vp8", "video/h264"}}
NO_CODEC = (
    "no supported codec offered: Parley forwards Opus, VP8, and H.264 with"
    " packetization-mode=1 in the constrained baseline or baseline profile"
)
#: Wait this long after a gap appears before the first NACK (lets reordering settle),
#: then send due NACKs every NACK_INTERVAL while packets are missing.
NACK_BATCH_DELAY = 0.005
NACK_INTERVAL = 0.02


def check_offer(offer_sdp: str) -> tuple[list[adapter.RemoteMedia], dict[str, tuple[str, ...]]]:
    """The offer's m-lines and its simulcast layers (RIDs by mid); NegotiationError when
    Parley cannot publish it."""
    try:
        media = adapter.describe_remote_media(offer_sdp)
        check_transport(offer_sdp)
        simulcast = read_simulcast(offer_sdp)
    except SimulcastError as exc:
        raise NegotiationError("bad_sdp", str(exc)) from exc
    except ValueError as exc:
        raise NegotiationError("bad_sdp", str(exc)) from exc
    layers: dict[str, tuple[str, ...]] = {}
    for index, offer in simulcast.items():
        m = media[index] if index < len(media) else None
        if m is None or m.kind != "video":
            raise NegotiationError("unsupported_media", "simulcast is supported for video only")
        if RID_URI not in m.extensions:
            raise NegotiationError(
                "bad_sdp",
                f"m-line {m.mid}: simulcast needs the rtp-stream-id header extension",
            )
        layers[m.mid] = offer.rids
    if not media:
        raise NegotiationError("bad_sdp", "the offer has no media sections")
    for m in media:
        if not m.live or m.kind == "application":  # the data channel (sfu/data_side.py)
            continue
        if m.kind not in SUPPORTED_CODECS:
            raise NegotiationError(
                "unsupported_media", f"m-line {m.mid}: {m.kind} is not supported"
            )
        if not SUPPORTED_CODECS[m.kind].intersection(m.codecs):
            raise NegotiationError(
                "unsupported_media",
                f"m-line {m.mid}: no supported {m.kind} codec offered"
                " (Parley forwards Opus, VP8 and H.264)",
            )
    return media, layers


class PublishSide:
    """The publish connection of one participant; the ``SourceOwner`` of its Sources."""

    def __init__(
        self,
        participant_id: str,
        config: SfuConfig,
        clock: Clock,
        counters: dict[str, int],
        malformed: MalformedLog,
        on_published: Callable[[PublishedTrack, float], None],
        on_unpublished: Callable[[PublishedTrack], None],
    ) -> None:
        self.id = participant_id
        self.config = config
        self._clock = clock
        self.counters = counters
        self.malformed = malformed
        self._on_published = on_published
        self._on_unpublished = on_unpublished
        self.tracks: dict[str, PublishedTrack] = {}  # by publish mid
        self.pc: RTCPeerConnection | None = None
        self.port: adapter.MediaPort | None = None
        self._router = IngressRouter()
        self._by_ssrc = self._router.by_ssrc
        self._by_rtx_ssrc = self._router.by_rtx_ssrc
        self._rtcp_ssrc = secrets.randbits(32) or 1
        self._nack_sources: set[Source] = set()
        self._nack_timer: Timer | None = None
        self._timers: set[Timer] = set()
        self._hooked_receivers: set[object] = set()
        self.closed = False

    # ------------------------------------------------------------ negotiation

    async def publish(
        self, offer_sdp: str, create_pc: Callable[[], RTCPeerConnection]
    ) -> tuple[str, list[PublishedTrack]]:
        """Apply the client's publish offer; returns the answer and the tracks now published."""
        if self.closed:
            raise NegotiationError("wrong_state", "participant is closed")
        media, layers = check_offer(offer_sdp)
        if self.pc is None:
            self.pc = create_pc()
        pc = self.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            if "description send parameters" in str(exc):  # aiortc: no codec in common
                raise NegotiationError("unsupported_media", NO_CODEC) from exc
            raise NegotiationError("bad_sdp", f"cannot apply offer: {exc}") from exc
        if self.closed:
            raise NegotiationError("wrong_state", "participant is closed")
        for transceiver in pc.getTransceivers():
            if transceiver.receiver not in self._hooked_receivers:
                adapter.hook_receiver(transceiver.receiver, lambda _params: None)
                self._hooked_receivers.add(transceiver.receiver)
            if not adapter.restrict_codecs(transceiver, SUPPORTED_CODECS[transceiver.kind], True):
                raise NegotiationError("unsupported_media", f"m-line {transceiver.mid}: {NO_CODEC}")
        by_mid = {m.mid: m for m in media}
        for mid in layers:
            m = by_mid[mid]
            wanted = {
                uri: m.extensions[uri] for uri in (RID_URI, REPAIRED_RID_URI) if uri in m.extensions
            }
            for transceiver in pc.getTransceivers():
                if transceiver.mid == mid:
                    adapter.add_header_extensions(transceiver, wanted)
        # a=setup:actpass is answered passive: Parley is the DTLS server (sfu/aiortc_adapter/dtls.py)
        adapter.answer_as_dtls_server(pc, (m.mid for m in media if m.setup == adapter.ACTPASS))
        if self.port is None:
            transceivers = pc.getTransceivers()
            if transceivers:
                dtls = transceivers[0].receiver.transport
            elif pc.sctp is not None:  # a data channel only
                dtls = pc.sctp.transport
            else:
                raise NegotiationError("bad_sdp", "the offer has no audio, video or data")
            self.port = adapter.MediaPort(
                dtls, self.on_rtp, self.on_rtcp, ingress=(self._by_ssrc, self.counters)
            )
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            raise NegotiationError("bad_sdp", f"cannot answer offer: {exc}") from exc
        red = offered_red(offer_sdp)  # Opus RED and DTX, which aiortc drops (sfu/red_sdp.py)
        self._update_sources(pc, media, layers, red)
        answer_sdp, _ = answer_red(pc.localDescription.sdp, red)
        if layers:
            answer_sdp = write_simulcast_answer(answer_sdp, layers)
        return answer_sdp, list(self.tracks.values())

    def _update_sources(
        self,
        pc: RTCPeerConnection,
        media: list[adapter.RemoteMedia],
        simulcast: dict[str, tuple[str, ...]],
        red: dict[str, RedOffer],
    ) -> None:
        by_mid = {m.mid: m for m in media}
        active: set[str] = set()
        now = self._clock.time()
        for transceiver in pc.getTransceivers():
            m = by_mid.get(transceiver.mid or "")
            if m is None or not m.live or m.direction not in ("sendonly", "sendrecv"):
                continue
            if m.kind != transceiver.kind:
                # a mid that aiortc gave another m-line (duplicate or missing a=mid):
                # never announce a track with the other kind's codec
                logger.info(
                    "participant %s: mid %s is not %s, not published", self.id, m.mid, m.kind
                )
                continue
            codecs = adapter.negotiated_codecs(transceiver)
            primary = codecs[0]
            assert primary.payloadType is not None  # negotiated codecs always have one
            rtx_pt = None
            for c in codecs:
                if (
                    c.mimeType.lower() == f"{m.kind}/rtx"
                    and c.parameters.get("apt") == primary.payloadType
                ):
                    rtx_pt = c.payloadType
            rids: tuple[str | None, ...] = simulcast.get(m.mid) or (None,)
            if rids != (None,):
                announced: list[tuple[int | None, int | None]] = [(None, None)] * len(rids)
            else:
                announced = [m.ssrcs[0] if m.ssrcs else (None, None)]
            router = self._router
            router.set_extension_ids(
                m.extensions.get(MID_URI, router.mid_ext),
                m.extensions.get(RID_URI, router.rid_ext),
                m.extensions.get(REPAIRED_RID_URI, router.rrid_ext),
            )
            active.add(m.mid)
            offer = red.get(m.mid)
            red_pt = offer.red_pt if offer and offer.opus_pt == primary.payloadType else None
            existing = self.tracks.get(m.mid)
            if existing is not None:
                old = existing.source.params
                same = (old.payload_type, old.kind, old.red_payload_type, old.codec) == (
                    primary.payloadType,
                    m.kind,
                    red_pt,
                    primary.mimeType.split("/")[1].lower(),
                ) and tuple(s.rid for s in existing.layers) == rids
                if same and (rids != (None,) or old.ssrc == announced[0][0]):
                    continue
                self.remove_track(existing)
            track_id = secrets.token_hex(6)
            sources = []
            for rid, (ssrc, rtx_ssrc) in zip(rids, announced, strict=True):
                params = SourceParams(
                    track_id=track_id,
                    kind=m.kind,
                    codec=primary.mimeType.split("/")[1].lower(),
                    clock_rate=primary.clockRate,
                    payload_type=primary.payloadType,
                    ssrc=ssrc,
                    rtx_payload_type=rtx_pt,
                    rtx_ssrc=rtx_ssrc,
                    audio_level_ext=m.extensions.get(AUDIO_LEVEL_URI, 0),
                    mid=m.mid,
                    rid=rid,
                    red_payload_type=red_pt,
                    fmtp=tuple(sorted((k, str(v)) for k, v in primary.parameters.items())),
                )
                sources.append(
                    Source(
                        params,
                        self,
                        keyframe_interval=self.config.keyframe_request_interval,
                        on_malformed=self._malformed_rtp,
                        cache_window=CacheWindow(
                            self.config.packet_cache_seconds,
                            max_packets=self.config.packet_cache_size,
                        ),
                    )
                )
            self.add_track(
                PublishedTrack(id=track_id, kind=m.kind, mid=m.mid, layers=tuple(sources)), now
            )
        for mid, track in list(self.tracks.items()):
            if mid not in active:
                self.remove_track(track)

    def add_track(self, track: PublishedTrack, now: float) -> None:
        """Publish ``track`` (its Sources routed from now on) and tell the room."""
        self.tracks[track.mid] = track
        for source in track.layers:
            self._router.add(source)
        self._on_published(track, now)

    def remove_track(self, track: PublishedTrack) -> None:
        self.tracks.pop(track.mid, None)
        for source in track.layers:
            self._router.remove(source)
            self._nack_sources.discard(source)
        self._on_unpublished(track)
        for source in track.layers:
            source.close()

    # ------------------------------------------------------------ ingress

    def on_rtp(self, data: bytes, now: float) -> None:
        try:
            pkt = RtpView(data)
        except RtpError as exc:
            self._malformed_rtp(str(exc), now)
            return
        self.counters["rtp_in"] += 1
        source = self._by_ssrc.get(pkt.ssrc)
        if source is not None:
            source.on_rtp(pkt, now)
            return
        source = self._by_rtx_ssrc.get(pkt.ssrc)
        if source is not None:
            source.on_rtx(pkt, now)
            return
        self._learn_ssrc(pkt, now)

    def _learn_ssrc(self, pkt: RtpView, now: float) -> None:
        """A packet of an SSRC not bound yet: bind it from its MID / RID extensions."""
        try:
            hit = self._router.learn(pkt)
        except RtpError as exc:  # its extension elements overrun their block
            self._malformed_rtp(str(exc), now)
            return
        if hit is None:
            self.counters["rtp_unknown"] += 1
            return
        source, rtx = hit
        if rtx:
            source.on_rtx(pkt, now)
            return
        source.on_rtp(pkt, now)
        if any(f.current is not source for f in source.forwarders):
            # a request made while the SSRC was unknown could not be sent
            source.last_keyframe_request = -1e9
            source.request_keyframe(now)

    def _malformed_rtp(self, reason: str, now: float) -> None:
        """A malformed RTP packet was dropped where it was parsed (here, the router or a
        Source): counted, and logged at most once per interval."""
        self.counters["rtp_malformed"] += 1
        self.malformed.add("rtp", reason, now)

    def on_rtcp(self, data: bytes, now: float) -> None:
        self.counters["rtcp_in"] += 1
        for packet in parse_rtcp_counted(data, now, self.counters, self.malformed):
            if isinstance(packet, RtcpSrPacket):
                source = self._by_ssrc.get(packet.ssrc)
                if source is not None:
                    info = packet.sender_info
                    source.on_sender_report(info.ntp_timestamp, info.rtp_timestamp, now)

    # ------------------------------------------------------------ SourceOwner

    def request_keyframe(self, source: Source) -> None:
        if self.port is None or source.ssrc is None:
            return
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=source.ssrc)
        self.port.send(bytes(pli))

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

    # ------------------------------------------------------------ upstream RTCP

    def _nack_tick(self) -> None:
        """Send due NACKs; run again every NACK_INTERVAL while anything is missing."""
        self._nack_timer = None
        if self.closed:
            return
        try:
            self.send_nacks(self._clock.time())
        except Exception:  # never let one bad tick stop loss repair
            logger.exception("participant %s: sending NACKs failed", self.id)
            self._nack_sources.clear()
        if self._nack_sources:
            self._nack_timer = self._clock.call_later(NACK_INTERVAL, self._nack_tick)

    def send_nacks(self, now: float) -> None:
        if self.port is None:
            return
        for source in list(self._nack_sources):
            due = source.nack.due(now)
            if due and source.ssrc is not None:
                self.port.send(build_nack(self._rtcp_ssrc, source.ssrc, due))
            if not len(source.nack):
                self._nack_sources.discard(source)

    def tick(self, now: float) -> None:
        """Once a second: the published layers' bitrates."""
        for track in self.tracks.values():
            for source in track.layers:
                source.tick(now)

    def send_receiver_reports(self, now: float) -> None:
        """RR for every stream received, and REMB for the video ones."""
        if self.port is None:
            return
        lo, hi = self.config.min_publish_bitrate, self.config.max_publish_bitrate
        tracks = list(self.tracks.values())
        payload = receiver_reports(tracks, self._rtcp_ssrc, publish_bitrate(tracks, lo, hi), now)
        if payload:
            self.port.send(payload)

    def publish_bitrate(self) -> int:
        """What to ask of this publisher's video (``publish_rtcp.publish_bitrate``)."""
        lo, hi = self.config.min_publish_bitrate, self.config.max_publish_bitrate
        return publish_bitrate(list(self.tracks.values()), lo, hi)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Unpublish every track (their subscribers are told first), stop the timers."""
        self.closed = True
        for track in list(self.tracks.values()):
            self.remove_track(track)

    def stop(self) -> None:
        """Close the port and cancel every timer (after ``close``)."""
        if self.port is not None:
            self.port.close()
        if self._nack_timer is not None:
            self._nack_timer.cancel()
        for timer in self._timers:
            timer.cancel()
