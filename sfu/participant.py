"""A Participant: one client in a room, with a publish and a subscribe peer connection.

The client offers on its *publish* connection; the SFU offers on the client's
*subscribe* connection and renegotiates it as remote tracks come and go. Neither
side ever offers on the other's connection, so there is no glare.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

from . import aiortc_adapter as adapter
from .bwe import BandwidthEstimator
from .config import SfuConfig
from .forwarder import EgressParams, Forwarder
from .layers import (
    ACTIVE_TIMEOUT,
    LayerRequest,
    allocate,
    allowed,
    expected_bitrate,
    ordered,
    priority,
)
from .pacer import Pacer, TokenBucket
from .routing import IngressRouter
from .rtp.malformed import MalformedLog
from .rtp.packet import RtpError, RtpView
from .rtp.rtcp import build_nack, normalize_lost, parse_rtcp_checked
from .sdp import (
    REPAIRED_RID_URI,
    RID_URI,
    SimulcastError,
    check_transport,
    read_simulcast,
    write_simulcast_answer,
)
from .source import Source, SourceParams

if TYPE_CHECKING:
    from .room import Room

logger = logging.getLogger(__name__)

SUPPORTED_CODECS = {"audio": {"audio/opus"}, "video": {"video/vp8"}}
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
#: Wait this long after a gap appears before the first NACK (lets reordering settle),
#: then send due NACKs every NACK_INTERVAL while packets are missing.
NACK_BATCH_DELAY = 0.005
NACK_INTERVAL = 0.02
#: A subscriber whose receiver reports more than this fraction lost (in 1/256) gets
#: what it cannot repair twice (``Participant._lossy``) until it has reported no loss
#: for REDUNDANCY_HOLD seconds.
LOSS_REDUNDANT = 2
REDUNDANCY_HOLD = 10.0
#: Retransmissions may use at most this share of the estimate (of what is sent, and at
#: least RTX_FLOOR bit/s, while there is no cap).
RTX_SHARE = 0.3
RTX_FLOOR = 1_000_000.0
#: Probing goes on until the estimate is this many times what the allocation sends.
PROBE_HEADROOM = 1.5
#: Receiver-report loss is ignored this long (s) after a forwarder switches or resumes.
LOSS_SETTLE = 2.0
#: A bandwidth probe's padding goes out in slices this far apart (s).
PROBE_TICK = 0.02


class NegotiationError(Exception):
    """An offer or answer that cannot be applied. ``code`` is a signaling error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ParticipantListener(Protocol):
    """How a participant tells its owner (the signaling session) what happened."""

    def participant_joined(self, other: Participant) -> None: ...

    def participant_left(self, other: Participant) -> None: ...

    def track_published(self, other: Participant, track: PublishedTrack) -> None: ...

    def track_unpublished(self, other: Participant, track: PublishedTrack) -> None: ...

    def layer_changed(self, subscription: Subscription) -> None:
        """What is forwarded of a subscribed track changed layer, paused or resumed."""
        ...

    def active_speaker_changed(self, speaker: Participant | None) -> None:
        """The room's active speaker changed (None: the last one left)."""
        ...

    def subscriptions_changed(self) -> None: ...

    def closed(self, reason: str) -> None: ...


@dataclass(eq=False)
class PublishedTrack:
    id: str
    kind: str
    mid: str
    #: one Source, or one per simulcast layer in the publisher's order
    layers: tuple[Source, ...]

    @property
    def source(self) -> Source:
        return self.layers[0]

    @property
    def rids(self) -> tuple[str, ...] | None:
        """The simulcast layers' RIDs, or None for a single-layer track."""
        if len(self.layers) == 1 and self.layers[0].rid is None:
            return None
        return tuple(s.rid or "" for s in self.layers)


@dataclass(eq=False)
class Subscription:
    publisher: Participant
    track: PublishedTrack
    forwarder: Forwarder
    transceiver: RTCRtpTransceiver | None = None
    negotiated: bool = False


class Participant:
    def __init__(
        self,
        room: Room,
        participant_id: str,
        name: str,
        listener: ParticipantListener,
        config: SfuConfig,
    ) -> None:
        self.room = room
        self.id = participant_id
        self.name = name
        self.listener = listener
        self.config = config
        self.tracks: dict[str, PublishedTrack] = {}  # by publish mid
        self.closed = False
        self.close_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        self._pub_pc: RTCPeerConnection | None = None
        self._pub_port: adapter.MediaPort | None = None
        self._sub_pc: RTCPeerConnection | None = None
        self._sub_port: adapter.MediaPort | None = None
        self._router = IngressRouter()
        self._by_ssrc = self._router.by_ssrc
        self._by_rtx_ssrc = self._router.by_rtx_ssrc
        self._rtcp_ssrc = secrets.randbits(32) or 1
        self._nack_sources: set[Source] = set()
        self._nack_timer: asyncio.TimerHandle | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.subscriptions: dict[str, Subscription] = {}  # by publisher track id
        self._by_out_ssrc: dict[int, Forwarder] = {}
        self._sub_offer_pending = False
        self._sub_offer_at = 0.0
        self._sub_dirty = False
        self._sub_transceivers: dict[RTCRtpTransceiver, Subscription | None] = {}
        #: the last forwarder of each inactive m-line (its stream continues on reuse)
        self._sub_previous: dict[RTCRtpTransceiver, Forwarder] = {}
        #: when the receiver last reported loss (see ``_lossy``)
        self._lossy_at: float | None = None
        self._hooked_receivers: set[object] = set()
        self.remb_bitrate: int | None = None
        #: bit/s of video the SFU sends this subscriber, measured each second
        self.egress_bitrate = 0.0
        self._egress_mark: tuple[float, int] | None = None
        #: the subscribe transport's refused packets already counted (``_measure``)
        self._tx_errors_mark = 0
        #: what this subscriber's link takes, from its REMB and receiver reports
        self.bwe = BandwidthEstimator()
        #: the allocation is held back by the estimate (so probing is worth it)
        self._wants_more = False
        self._probe_timer: asyncio.TimerHandle | None = None
        self._padding_bytes = 0
        #: paces video while the estimate has a cap (``sfu/pacer.py``)
        self.pacer = Pacer()
        self._pacer_timer: asyncio.TimerHandle | None = None
        self._task = asyncio.ensure_future(self._run())
        self._close_task: asyncio.Task[None] | None = None
        self.counters = {
            "rtp_in": 0,
            "rtp_unknown": 0,
            "rtp_malformed": 0,
            "rtcp_malformed": 0,
            "rtcp_in": 0,
            "nacks_in": 0,
            "rtx_sent": 0,
            "probes": 0,
            "padding_packets": 0,
            "frames_dropped": 0,
            "send_failures": 0,
            "rtx_limited": 0,
        }
        #: retransmission budget (bytes) while the estimate has a cap: RTX may take at
        #: most RTX_SHARE of it, so repairs do not feed the congestion they repair
        #: bytes retransmissions may still use (``_rtx_budget``)
        self._rtx_bucket = TokenBucket()
        #: malformed RTP/RTCP from this client's peer connections: dropped, counted by
        #: reason, logged at most once per interval (``sfu/rtp/malformed.py``)
        self.malformed = MalformedLog(
            f"participant {participant_id} ({name!r})", config.malformed_log_interval, logger
        )

    # =============================================================== publish

    async def publish(self, offer_sdp: str) -> tuple[str, list[PublishedTrack]]:
        """Apply the client's publish offer; returns the answer and the tracks now published."""
        if self.closed:
            raise NegotiationError("wrong_state", "participant is closed")
        try:
            media = adapter.describe_remote_media(offer_sdp)
            check_transport(offer_sdp)
            simulcast = read_simulcast(offer_sdp)
        except SimulcastError as exc:
            raise NegotiationError("bad_sdp", str(exc)) from exc
        except ValueError as exc:
            raise NegotiationError("bad_sdp", str(exc)) from exc
        for index in simulcast:
            m = media[index] if index < len(media) else None
            if m is None or m.kind != "video":
                raise NegotiationError("unsupported_media", "simulcast is supported for video only")
            if RID_URI not in m.extensions:
                raise NegotiationError(
                    "bad_sdp",
                    f"m-line {m.mid}: simulcast needs the rtp-stream-id header extension",
                )
        if not media:
            raise NegotiationError("bad_sdp", "the offer has no media sections")
        for m in media:
            if m.port == 0:
                continue
            if m.kind not in SUPPORTED_CODECS:
                raise NegotiationError(
                    "unsupported_media", f"m-line {m.mid}: {m.kind} is not supported"
                )
            if not SUPPORTED_CODECS[m.kind].intersection(m.codecs):
                raise NegotiationError(
                    "unsupported_media",
                    f"m-line {m.mid}: no supported {m.kind} codec offered"
                    " (Parley forwards Opus and VP8)",
                )
        first = self._pub_pc is None
        if first:
            self._pub_pc = adapter.create_peer_connection(self.config.ice)
            self._watch(self._pub_pc)
        pc = self._pub_pc
        assert pc is not None
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise NegotiationError("bad_sdp", f"cannot apply offer: {exc}") from exc
        if self.closed:
            raise NegotiationError("wrong_state", "participant is closed")
        for transceiver in pc.getTransceivers():
            if transceiver.receiver not in self._hooked_receivers:
                adapter.hook_receiver(transceiver.receiver, lambda _params: None)
                self._hooked_receivers.add(transceiver.receiver)
            if not adapter.restrict_codecs(transceiver, SUPPORTED_CODECS[transceiver.kind]):
                raise NegotiationError(
                    "unsupported_media",
                    f"m-line {transceiver.mid}: no supported {transceiver.kind} codec (need Opus or VP8)",
                )
        by_mid = {m.mid: m for m in media}
        layers: dict[str, tuple[str, ...]] = {}
        for index, offer in simulcast.items():
            m = media[index]
            layers[m.mid] = offer.rids
            wanted = {
                uri: m.extensions[uri] for uri in (RID_URI, REPAIRED_RID_URI) if uri in m.extensions
            }
            for transceiver in pc.getTransceivers():
                if transceiver.mid == m.mid and by_mid.get(m.mid) is not None:
                    adapter.add_header_extensions(transceiver, wanted)
        if self._pub_port is None:
            transceivers = pc.getTransceivers()
            if not transceivers:
                raise NegotiationError("bad_sdp", "the offer has no audio or video")
            dtls = transceivers[0].receiver.transport
            self._pub_port = adapter.MediaPort(
                dtls, self._on_publisher_rtp, self._on_publisher_rtcp
            )
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            raise NegotiationError("bad_sdp", f"cannot answer offer: {exc}") from exc
        self._update_sources(pc, media, layers)
        answer_sdp = pc.localDescription.sdp
        if layers:
            answer_sdp = write_simulcast_answer(answer_sdp, layers)
        return answer_sdp, list(self.tracks.values())

    def _update_sources(
        self,
        pc: RTCPeerConnection,
        media: list[adapter.RemoteMedia],
        simulcast: dict[str, tuple[str, ...]],
    ) -> None:
        by_mid = {m.mid: m for m in media}
        active: set[str] = set()
        now = self._loop.time()
        for transceiver in pc.getTransceivers():
            m = by_mid.get(transceiver.mid or "")
            if m is None or m.port == 0 or m.direction not in ("sendonly", "sendrecv"):
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
            existing = self.tracks.get(m.mid)
            if existing is not None:
                old = existing.source.params
                same = (old.payload_type, old.kind) == (primary.payloadType, m.kind) and tuple(
                    s.rid for s in existing.layers
                ) == rids
                if same and (rids != (None,) or old.ssrc == announced[0][0]):
                    continue
                self._remove_track(existing)
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
                )
                sources.append(
                    Source(
                        params,
                        self,
                        cache_size=self.config.packet_cache_size,
                        keyframe_interval=self.config.keyframe_request_interval,
                        on_malformed=self._malformed_rtp,
                    )
                )
            track = PublishedTrack(id=track_id, kind=m.kind, mid=m.mid, layers=tuple(sources))
            self.tracks[m.mid] = track
            for source in sources:
                self._router.add(source)
            self.room.track_published(self, track, now)
        for mid, track in list(self.tracks.items()):
            if mid not in active:
                self._remove_track(track)

    def _remove_track(self, track: PublishedTrack) -> None:
        self.tracks.pop(track.mid, None)
        for source in track.layers:
            self._router.remove(source)
            self._nack_sources.discard(source)
        self.room.track_unpublished(self, track)
        for source in track.layers:
            source.close()

    # ------------------------------------------------------------ ingress

    def _on_publisher_rtp(self, data: bytes, now: float) -> None:
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

    def _parse_rtcp(self, data: bytes, now: float) -> list[AnyRtcpPacket]:
        """A compound RTCP packet's parts; a malformed one is dropped and counted."""
        packets, reason = parse_rtcp_checked(data)
        if reason is not None:
            self.counters["rtcp_malformed"] += 1
            self.malformed.add("rtcp", reason, now)
        return packets

    def _on_publisher_rtcp(self, data: bytes, now: float) -> None:
        self.counters["rtcp_in"] += 1
        for packet in self._parse_rtcp(data, now):
            if isinstance(packet, RtcpSrPacket):
                source = self._by_ssrc.get(packet.ssrc)
                if source is not None:
                    info = packet.sender_info
                    source.on_sender_report(info.ntp_timestamp, info.rtp_timestamp, now)

    # SourceOwner
    def request_keyframe(self, source: Source) -> None:
        if self._pub_port is None or source.ssrc is None:
            return
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=source.ssrc)
        self._pub_port.send(bytes(pli))

    def source_has_missing(self, source: Source) -> None:
        self._nack_sources.add(source)
        if self._nack_timer is None and not self.closed:
            self._nack_timer = self._loop.call_later(NACK_BATCH_DELAY, self._nack_tick)

    def _nack_tick(self) -> None:
        """Send due NACKs; run again every NACK_INTERVAL while anything is missing."""
        self._nack_timer = None
        if self.closed:
            return
        try:
            self._send_nacks(self._loop.time())
        except Exception:  # never let one bad tick stop loss repair
            logger.exception("participant %s: sending NACKs failed", self.id)
            self._nack_sources.clear()
        if self._nack_sources:
            self._nack_timer = self._loop.call_later(NACK_INTERVAL, self._nack_tick)

    def keyframe_deferred(self, source: Source, at: float) -> None:
        if self.closed:
            return
        self._timers.add(self._loop.call_at(at, lambda: source.poll(self._loop.time())))
        self._timers = {
            t for t in self._timers if not t.cancelled() and t.when() >= self._loop.time()
        }

    def _send_nacks(self, now: float) -> None:
        if self._pub_port is None:
            return
        for source in list(self._nack_sources):
            due = source.nack.due(now)
            if due and source.ssrc is not None:
                self._pub_port.send(build_nack(self._rtcp_ssrc, source.ssrc, due))
            if not len(source.nack):
                self._nack_sources.discard(source)

    def _send_receiver_reports(self, now: float) -> None:
        if self._pub_port is None:
            return
        reports = []
        video_ssrcs = []
        for source in (layer for track in self.tracks.values() for layer in track.layers):
            if source.ssrc is None or source.packets == 0:
                continue
            block = source.stats.report_block(source.ssrc, now)
            source.upstream_loss = block.fraction_lost / 256.0
            reports.append(
                RtcpReceiverInfo(
                    ssrc=source.ssrc,
                    fraction_lost=block.fraction_lost,
                    packets_lost=block.packets_lost,
                    highest_sequence=block.highest_seq,
                    jitter=block.jitter,
                    lsr=block.lsr,
                    dlsr=block.dlsr,
                )
            )
            if source.is_video:
                video_ssrcs.append(source.ssrc)
        if not reports:
            return
        payload = b"".join(
            bytes(RtcpRrPacket(ssrc=self._rtcp_ssrc, reports=reports[i : i + 31]))
            for i in range(0, len(reports), 31)
        )
        if video_ssrcs:
            remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=self._rtcp_ssrc, media_ssrc=0)
            remb.fci = pack_remb_fci(self._publish_bitrate(), video_ssrcs)
            payload += bytes(remb)
        self._pub_port.send(payload)

    def _publish_bitrate(self) -> int:
        """What to ask of this publisher's video: the lowest subscriber estimate, bounded."""
        lo, hi = self.config.min_publish_bitrate, self.config.max_publish_bitrate
        if any(len(track.layers) > 1 for track in self.tracks.values()):
            # simulcast: every layer is wanted by someone, whatever one subscriber's link
            return hi
        estimates = [
            f.remb
            for track in self.tracks.values()
            if track.source.is_video
            for f in track.source.forwarders
            if f.remb is not None
        ]
        if not estimates:
            return hi
        return max(lo, min(hi, min(estimates)))

    # =============================================================== subscribe

    def subscribe(self, publisher: Participant, track: PublishedTrack) -> None:
        if self.closed or track.id in self.subscriptions:
            return
        forwarder = Forwarder(track.layers, self, self.id)
        self._wire_native(forwarder)
        self.subscriptions[track.id] = Subscription(publisher, track, forwarder)
        self._mark_dirty()

    def unsubscribe(self, track: PublishedTrack) -> None:
        sub = self.subscriptions.pop(track.id, None)
        if sub is None:
            return
        sub.forwarder.close()
        if sub.transceiver is not None:
            self._sub_transceivers[sub.transceiver] = None
            # what the m-line sent last, for the track that reuses it
            self._sub_previous[sub.transceiver] = sub.forwarder
            for ssrc in adapter.sender_ssrcs(sub.transceiver.sender):
                self._by_out_ssrc.pop(ssrc, None)
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._sub_dirty = True
        if not self.closed:
            self.listener.subscriptions_changed()

    async def create_subscribe_offer(self) -> tuple[str, dict[str, dict[str, str]]] | None:
        """Offer the current subscriptions; None when nothing changed or an offer is in flight."""
        if self.closed or self._sub_offer_pending or not self._sub_dirty:
            return None
        self._sub_dirty = False
        if self._sub_pc is None:
            if not self.subscriptions:
                return None
            self._sub_pc = adapter.create_peer_connection(self.config.ice)
            self._watch(self._sub_pc)
        pc = self._sub_pc
        for transceiver, sub in self._sub_transceivers.items():
            if sub is None and transceiver.direction != "inactive":
                transceiver.direction = "inactive"
        for sub in self.subscriptions.values():
            if sub.transceiver is None:
                self._assign_transceiver(pc, sub)
        self._sub_offer_pending = True
        self._sub_offer_at = self._loop.time()
        try:
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
        except Exception:
            self._sub_offer_pending = False
            raise
        if self._sub_port is None:
            transceivers = pc.getTransceivers()
            self._sub_port = adapter.MediaPort(
                transceivers[0].sender.transport, self._on_subscriber_rtp, self._on_subscriber_rtcp
            )
        mapping: dict[str, dict[str, str]] = {}
        for transceiver, sub in self._sub_transceivers.items():
            if sub is not None and transceiver.mid is not None:
                mapping[transceiver.mid] = {
                    "participant": sub.publisher.id,
                    "track": sub.track.id,
                    "kind": sub.track.kind,
                }
        return pc.localDescription.sdp, mapping

    def _assign_transceiver(self, pc: RTCPeerConnection, sub: Subscription) -> None:
        kind = sub.track.kind
        transceiver = next(
            (
                t
                for t, s in self._sub_transceivers.items()
                if s is None and t.kind == kind and t.mid is not None
            ),
            None,
        )
        if transceiver is None:
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            capabilities = RTCRtpSender.getCapabilities(kind)
            wanted = f"{kind}/{sub.track.source.params.codec}".lower()
            transceiver.setCodecPreferences(
                [c for c in capabilities.codecs if c.mimeType.lower() in (wanted, f"{kind}/rtx")]
            )
            adapter.hook_sender(transceiver.sender, self._sender_negotiated(transceiver))
        else:
            transceiver.direction = "sendonly"
            previous = self._sub_previous.pop(transceiver, None)
            if previous is not None:
                sub.forwarder.continue_from(previous)
        adapter.set_sender_msid(transceiver.sender, sub.publisher.id, sub.track.id)
        self._sub_transceivers[transceiver] = sub
        sub.transceiver = transceiver
        for ssrc in adapter.sender_ssrcs(transceiver.sender):
            self._by_out_ssrc[ssrc] = sub.forwarder

    def _sender_negotiated(
        self, transceiver: RTCRtpTransceiver
    ) -> Callable[[adapter.NegotiatedRtp], None]:
        def on_parameters(params: adapter.NegotiatedRtp) -> None:
            sub = self._sub_transceivers.get(transceiver)
            if sub is None or self.closed:
                return
            ssrc, rtx_ssrc = adapter.sender_ssrcs(transceiver.sender)
            primary = params.primary_codec
            assert primary.payloadType is not None  # negotiated codecs always have one
            sub.forwarder.configure(
                EgressParams(
                    mid=params.mid,
                    payload_type=primary.payloadType,
                    ssrc=ssrc,
                    rtx_payload_type=params.rtx_payload_type(primary.payloadType),
                    rtx_ssrc=rtx_ssrc,
                    extensions=params.extensions,
                )
            )
            if not sub.negotiated:
                sub.negotiated = True
                now = self._loop.time()
                self.update_layers(now)
                sub.forwarder.start(now)

        return on_parameters

    async def apply_subscribe_answer(self, answer_sdp: str) -> None:
        if self._sub_pc is None or not self._sub_offer_pending:
            raise NegotiationError("wrong_state", "no subscribe offer is outstanding")
        try:
            adapter.describe_remote_media(answer_sdp)
            check_transport(answer_sdp)
            await self._sub_pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer_sdp, type="answer")
            )
        except Exception as exc:
            raise NegotiationError("bad_sdp", f"cannot apply answer: {exc}") from exc
        finally:
            self._sub_offer_pending = False
        if self._sub_dirty and not self.closed:
            self.listener.subscriptions_changed()

    @property
    def remote_address(self) -> str | None:
        """Where this participant's subscribe connection sends to (its ICE peer)."""
        port = self._sub_port
        return port.remote_address if port is not None else None

    # PacketSink
    def send_rtp(self, data: bytes) -> bool:
        port = self._sub_port
        return port is not None and port.send_rtp(data)

    def send_rtp_twice(self, data: bytes) -> bool:
        port = self._sub_port
        return port is not None and port.send_rtp_twice(data)

    def send_video(self, data: bytes, now: float) -> bool:
        port = self._sub_port
        if port is None:
            return False
        pacer = self.pacer
        if not pacer.active:
            return port.send_rtp(data)  # nothing limits the link: no queue
        if not pacer.offer(data, now):  # queued behind the pacer
            if self._pacer_timer is None:
                self._pacer_timer = self._loop.call_later(pacer.settings.tick, self._pace)
            return True
        if port.send_rtp(data):
            return True
        self._send_failed(now)
        return False

    def _wire_native(self, forwarder: Forwarder) -> None:
        """Give ``forwarder`` what the native path needs: this subscriber's egress (once
        its transport is up) and its pacer (``sfu/native.py``)."""
        forwarder.pacer = self.pacer
        port = self._sub_port
        forwarder.egress = port.egress if port is not None else None

    def room_for_frame(self) -> bool:
        return self.pacer.has_room()

    def frame_dropped(self, forwarder: Forwarder, now: float) -> None:
        """The pacer's queue is over budget (the frame was dropped whole)."""
        self.counters["frames_dropped"] += 1
        self._overflow(now)

    def _rtx_budget(self, now: float) -> float:
        """Bytes retransmissions may use now: RTX_SHARE of the cap, or without one of
        what is sent (at least RTX_FLOOR bit/s): NACKs from a link that loses most of
        what it gets must not multiply the load."""
        cap = self.bwe.estimate(now)
        base = cap if cap is not None else max(self.bwe.sent, RTX_FLOOR)
        rate = base * RTX_SHARE / 8
        return max(0.0, self._rtx_bucket.refill(rate, rate * 0.2, now))

    def _send_failed(self, now: float) -> None:
        """The socket refused a paced packet (its buffer is full): as a queue overflow, at
        once. ``_measure`` counts it, with every other refused packet."""
        self._overflow(now)

    def _overflow(self, now: float) -> None:
        """The link takes less than is sent: lower the estimate so a lower layer is
        chosen."""
        if self.bwe.on_overflow(now):
            self.update_layers(now)

    def _pace(self) -> None:
        """Send what the pacer lets out now; re-arm while it holds packets."""
        self._pacer_timer = None
        port = self._sub_port
        if self.closed or port is None:
            self.pacer.clear()
            return
        now = self._loop.time()
        for packet in self.pacer.due(now):
            if not port.send_rtp(packet):
                self._send_failed(now)
        if self.pacer.queue:
            self._pacer_timer = self._loop.call_later(self.pacer.settings.tick, self._pace)

    def layer_changed(self, forwarder: Forwarder) -> None:
        if self.closed:
            return
        for sub in self.subscriptions.values():
            if sub.forwarder is forwarder:
                self.listener.layer_changed(sub)
                return

    # ------------------------------------------------------------ layer selection

    def set_layer_request(
        self,
        track_id: str,
        *,
        max_width: int | None = None,
        max_height: int | None = None,
        paused: bool | None = None,
    ) -> None:
        """Update what this subscriber wants of one track; absent values are kept.

        Raises KeyError when not subscribed to ``track_id``.
        """
        forwarder = self.subscriptions[track_id].forwarder
        old = forwarder.request
        forwarder.request = LayerRequest(
            max_width=old.max_width if max_width is None else max_width,
            max_height=old.max_height if max_height is None else max_height,
            paused=old.paused if paused is None else paused,
        )
        self.update_layers(self._loop.time())

    def layer_budget(self) -> float | None:
        """The bit/s this subscriber's video may use, or None when nothing limits it
        (``sfu/bwe.py``: REMB drops and receiver-report loss cap it; calm lifts it)."""
        return self.bwe.estimate(self._loop.time())

    def update_layers(self, now: float) -> None:
        """Choose the layer of every subscribed track: request, activity, bandwidth."""
        if self.closed:
            return
        plans = []
        for sub in self.subscriptions.values():
            forwarder = sub.forwarder
            if not sub.negotiated and sub.transceiver is None:
                continue
            if forwarder.request.paused:
                forwarder.set_target(None, now)
                continue
            if not forwarder.is_video:
                forwarder.set_target(forwarder.layers[0], now)  # audio is never held back
                continue
            infos = forwarder.layer_infos(now, ACTIVE_TIMEOUT)
            choices = allowed(infos, forwarder.request)
            if not choices:
                # nothing is being sent yet: wait on the first layer
                if forwarder.target is None:
                    forwarder.set_target(forwarder.layers[0], now)
                continue
            plans.append((forwarder, infos, choices, sub.publisher.id))
        if not plans:
            self._wants_more = False
            return
        if self.bwe.ok_streak >= self.bwe.settings.probe_streak:
            for forwarder, _, _, _ in plans:
                forwarder.selector.relax()
        current_levels: list[int | None] = []
        for forwarder, _, choices, _ in plans:
            index = forwarder.target_index
            level = next((i for i, c in enumerate(choices) if c.index == index), None)
            current_levels.append(level)
        speaker = self.room.active_speaker
        budget = self.layer_budget()
        self.pacer.set_rate(budget, now)
        demands = [
            [expected_bitrate(c, i) for i, c in enumerate(choices)] for _, _, choices, _ in plans
        ]
        levels = allocate(
            budget,
            demands,
            current_levels,
            priorities=[
                priority(f.request, speaker is not None and publisher == speaker.id)
                for f, _, _, publisher in plans
            ],
            floor=not self.bwe.may_pause(now),
        )
        # probe while a track could have more, and on until the cap leaves headroom over
        # what is sent: a cap just above the top layer turns its every keyframe into a
        # switch down (and a probe and a switch back up)
        allocated = sum(d[level] for d, level in zip(demands, levels, strict=True) if level >= 0)
        self._wants_more = budget is not None and (
            any(
                level < len(choices) - 1
                for (_, _, choices, _), level in zip(plans, levels, strict=True)
            )
            or allocated * PROBE_HEADROOM > budget
        )
        for (forwarder, infos, choices, _), level in zip(plans, levels, strict=True):
            proposed = choices[level].index if level >= 0 else None
            rank = {info.index: pos for pos, info in enumerate(ordered(infos))}
            # what is decided already: the target (a switch may be waiting for a keyframe)
            current = forwarder.target_index
            chosen = forwarder.selector.decide(proposed, choices[-1].index, current, rank, now)
            forwarder.set_target(forwarder.layers[chosen] if chosen is not None else None, now)

    def _lossy(self, now: float) -> None:
        """The subscriber's receiver reports loss. Unless the link is congested (more
        packets would feed the loss), send what receivers cannot repair twice: audio
        packets (receivers do not NACK audio) and video retransmissions (they NACK a
        packet once); 5 % random loss becomes 0.25 %."""
        if self.bwe.congested(now):
            return
        self._lossy_at = now
        for sub in self.subscriptions.values():
            sub.forwarder.redundant = True

    @staticmethod
    def _loss_counts(forwarder: Forwarder, now: float) -> bool:
        """A report's loss says something about the link now: not in the first seconds
        after a switch or a resume, when it still counts packets the link dropped before
        (the tail of the stream that was left)."""
        started = forwarder.switched_at
        return started is not None and now - started >= LOSS_SETTLE

    # ------------------------------------------------------------ probing

    def _maybe_probe(self) -> None:
        """Start a bandwidth probe when the estimator wants one (``sfu/bwe.py``)."""
        if self.closed or self._probe_timer is not None:
            return
        now = self._loop.time()
        self.update_layers(now)  # a probe that just ended may have raised the estimate
        rate = self.bwe.start_probe(now, wanted=self._wants_more)
        if rate is None:
            return
        self.counters["probes"] += 1
        self._probe_tick()

    def _probe_tick(self) -> None:
        """Send one slice of the probe's padding; re-arm until the probe is over."""
        self._probe_timer = None
        if self.closed:
            return
        now = self._loop.time()
        rate = self.bwe.probe_rate(now)
        probe = self.bwe.probe
        if rate <= 0:
            if probe is not None:  # sent: look at the result once it has settled
                s = self.bwe.settings
                at = probe.start + s.probe_duration + s.settle + 0.01
                self._probe_timer = self._loop.call_at(at, self._probe_result)
            return
        carrier = next(
            (
                sub.forwarder
                for sub in self.subscriptions.values()
                if sub.forwarder.is_video and sub.forwarder.params is not None
            ),
            None,
        )
        if carrier is not None:
            budget = rate * PROBE_TICK / 8
            while budget > 0:
                packet = carrier.padding(255, now)
                if packet is None or not self.send_rtp(packet):
                    break
                self.counters["padding_packets"] += 1
                self._padding_bytes += len(packet)
                budget -= len(packet)
        self._probe_timer = self._loop.call_later(PROBE_TICK, self._probe_tick)

    def _probe_result(self) -> None:
        self._probe_timer = None
        self._maybe_probe()

    def _measure(self, now: float) -> None:
        """Once a second: layer bitrates of published tracks, video sent to this subscriber."""
        lossy = self._lossy_at
        if lossy is not None and (now - lossy > REDUNDANCY_HOLD or self.bwe.congested(now)):
            self._lossy_at = None
            for sub in self.subscriptions.values():
                sub.forwarder.redundant = False
        for track in self.tracks.values():
            for source in track.layers:
                source.tick(now)
        sent = self._padding_bytes + sum(
            sub.forwarder.bytes_sent
            for sub in self.subscriptions.values()
            if sub.forwarder.is_video
        )
        mark = self._egress_mark
        if mark is not None and now > mark[0]:
            rate = max(0, sent - mark[1]) * 8 / (now - mark[0])
            self.egress_bitrate = (
                0.5 * (self.egress_bitrate + rate) if self.egress_bitrate else rate
            )
            self.bwe.on_sent(rate, now)
        self._egress_mark = (now, sent)
        # Packets the subscribe transport could not send, on any path (the C loop, the
        # pacer, RTX, probes): counted, and an overflow, with a cap or without one.
        port = self._sub_port
        if port is not None:
            errors = port.tx_errors
            refused = errors - self._tx_errors_mark
            self._tx_errors_mark = errors
            if refused > 0:
                self.counters["send_failures"] += refused
                self._overflow(now)

    def _on_subscriber_rtp(self, data: bytes, now: float) -> None:
        pass  # a subscribe connection carries no media towards the SFU

    def _on_subscriber_rtcp(self, data: bytes, now: float) -> None:
        self.counters["rtcp_in"] += 1
        for packet in self._parse_rtcp(data, now):
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    forwarder = self._by_out_ssrc.get(report.ssrc)
                    if forwarder is not None:
                        forwarder.on_receiver_report(
                            report.fraction_lost, report.lsr, report.dlsr, now
                        )
                        params = forwarder.params
                        media = params is not None and report.ssrc == params.ssrc
                        if not media:
                            # the RTX stream: a probe's padding travels there, so its
                            # loss during a probe (paused video has no other) fails it
                            probing = self.bwe.probe is not None
                            if (
                                probing
                                and report.fraction_lost / 256 >= self.bwe.settings.loss_high
                            ):
                                self.bwe.hold(now)
                            continue
                        # what the subscriber's own link lost: packets lost upstream
                        # (publisher to SFU) are gaps in what the SFU forwards, too
                        lost = forwarder.link_loss(report.highest_sequence, report.packets_lost)
                        if lost is None:  # the first report: upstream loss as the SFU saw it
                            source = forwarder.current
                            upstream = source.upstream_loss if source is not None else 0.0
                            lost = max(0.0, report.fraction_lost / 256.0 - upstream)
                        if forwarder.is_video:
                            # what the receiver acknowledges receiving bounds what its
                            # REMB may do (``sfu/delivery_rate.py``)
                            self.bwe.on_report(
                                report.ssrc,
                                now,
                                highest=report.highest_sequence,
                                cumulative_lost=report.packets_lost,
                                packets_sent=forwarder.packets_sent,
                                bytes_sent=forwarder.bytes_sent,
                                not_sent=forwarder.rewriter.skipped,
                            )
                            # (the media stream only: an RTX stream's few packets make
                            # its fraction lost too noisy to act on)
                            if self._loss_counts(forwarder, now):
                                self.bwe.on_loss(lost, now)
                            elif lost >= self.bwe.settings.loss_low:
                                self.bwe.hold(now)  # no probing into a lossy link
                        if lost > LOSS_REDUNDANT / 256.0:
                            self._lossy(now)
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                forwarder = self._by_out_ssrc.get(packet.media_ssrc)
                if forwarder is not None:
                    self.counters["nacks_in"] += 1
                    budget = self._rtx_budget(now)
                    sent, spent = forwarder.on_nack(normalize_lost(packet.lost), now, budget)
                    self.counters["rtx_sent"] += sent
                    self._rtx_bucket.spend(spent)
                    if spent >= budget:
                        self.counters["rtx_limited"] += 1
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    targets = [packet.media_ssrc]
                    if packet.fmt == RTCP_PSFB_FIR and len(packet.fci) >= 4:
                        targets = [
                            int.from_bytes(packet.fci[i : i + 4], "big")
                            for i in range(0, len(packet.fci) - 3, 8)
                        ]
                    for ssrc in targets:
                        forwarder = self._by_out_ssrc.get(ssrc)
                        if forwarder is not None:
                            forwarder.on_keyframe_request(now)
                elif packet.fmt == RTCP_PSFB_APP:
                    try:
                        bitrate, ssrcs = unpack_remb_fci(packet.fci)
                    except ValueError:
                        continue
                    self.remb_bitrate = bitrate
                    # a REMB far below what the receiver acknowledged without loss is
                    # not believed: it lowers neither the cap nor the publisher's rate
                    believed = self.bwe.on_remb(bitrate, now)
                    for ssrc in ssrcs:
                        forwarder = self._by_out_ssrc.get(ssrc)
                        if forwarder is not None and believed:
                            forwarder.remb = bitrate
                    self.update_layers(now)

    def _send_sender_reports(self, now: float) -> None:
        port = self._sub_port
        if port is None:
            return
        for sub in self.subscriptions.values():
            report = sub.forwarder.sender_report(now)
            if report is None or sub.forwarder.params is None:
                continue
            ntp, rtp_ts, packets, octets = report
            ssrc = sub.forwarder.params.ssrc
            sr = RtcpSrPacket(
                ssrc=ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=rtp_ts,
                    packet_count=packets,
                    octet_count=octets,
                ),
            )
            sdes = RtcpSdesPacket(
                chunks=[
                    RtcpSourceInfo(ssrc=ssrc, items=[(1, f"parley-{sub.publisher.id}".encode())])
                ]
            )
            port.send(bytes(sr) + bytes(sdes))

    # =============================================================== lifecycle

    def _watch(self, pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                for port in (self._pub_port, self._sub_port):
                    if port is not None:
                        port.install_fast_path()
                for sub in self.subscriptions.values():
                    self._wire_native(sub.forwarder)
            elif state in ("failed", "closed") and not self.closed:
                logger.info("participant %s: peer connection %s", self.id, state)
                self.close_soon(f"peer connection {state}")

    async def _run(self) -> None:
        """Periodic RTCP, about once a second: RR and REMB upstream, SR downstream."""
        try:
            while not self.closed:
                await asyncio.sleep(1.0)
                now = self._loop.time()
                self._measure(now)
                self.update_layers(now)
                self._maybe_probe()
                self._send_receiver_reports(now)
                self._send_sender_reports(now)
                self._check_subscribe_answer(now)
                self.malformed.flush(now)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("participant %s: periodic task failed", self.id)

    def _check_subscribe_answer(self, now: float) -> None:
        timeout = self.config.subscribe_answer_timeout
        if self._sub_offer_pending and now - self._sub_offer_at > timeout:
            self.close_soon(f"no subscribe_answer within {timeout:g} s")

    def close_soon(self, reason: str) -> None:
        if self._close_task is None and not self.closed:
            self._close_task = asyncio.ensure_future(self.close(reason))
            self._close_task.add_done_callback(self._close_done)

    def _close_done(self, task: asyncio.Task[None]) -> None:
        """Retrieve the outcome of a ``close_soon`` task: nobody awaits it."""
        if not task.cancelled() and task.exception() is not None:
            logger.error("participant %s: closing failed: %r", self.id, task.exception())

    async def close(self, reason: str = "left") -> None:
        """Leave the room: unpublish, unsubscribe, close both peer connections. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.malformed.flush(self._loop.time(), force=True)
        for track in list(self.tracks.values()):
            self._remove_track(track)
        for sub in list(self.subscriptions.values()):
            sub.forwarder.close()
        self.subscriptions.clear()
        self._by_out_ssrc.clear()
        self._sub_previous.clear()

        self.room.participant_closed(self)
        for port in (self._pub_port, self._sub_port):
            if port is not None:
                port.close()
        if self._nack_timer is not None:
            self._nack_timer.cancel()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        if self._pacer_timer is not None:
            self._pacer_timer.cancel()
        self.pacer.clear()
        for timer in self._timers:
            timer.cancel()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        for pc in (self._pub_pc, self._sub_pc):
            if pc is not None:
                try:
                    await pc.close()
                except Exception:
                    logger.exception("participant %s: closing a peer connection failed", self.id)
        self.listener.closed(reason)
