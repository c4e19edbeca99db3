"""A participant's subscribe side: what it receives of the others' tracks.

The SFU offers on the client's *subscribe* connection, again as tracks come and go.
Each subscription is a ``Forwarder`` on a ``sendonly`` m-line; a track that goes away
leaves its m-line ``inactive`` for the next of its kind (unless ``reuse_mlines`` is
false). Here too: its congestion control (``sfu/congestion.py``), layers, probes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription

from . import aiortc_adapter as adapter
from .config import SfuConfig
from .congestion import CongestionController, Demand
from .egress import Egress
from .forwarder import EgressParams, Forwarder
from .layers import (
    ACTIVE_TIMEOUT,
    LayerRequest,
    Level,
    allowed,
    floor_level,
    key_layer,
    levels,
    ordered,
    past_last_resort,
    priority,
)
from .ports import Clock, NegotiationError, Peer
from .probe_sender import ProbeSender
from .red_sdp import answer_extras, subscribe_offer
from .rtp.extensions import TRANSPORT_CC_URI
from .rtp.malformed import MalformedLog
from .rtp.twcc import TransportFeedback
from .sdp import check_transport
from .subscribe_codecs import codec_preferences, reusable
from .subscribe_refusals import CodecRefusals, refused_tracks
from .subscribe_rtcp import SubscriberRtcp, sender_report
from .tracks import PublishedTrack, Subscription
from .twcc_feedback import TransportFeedbackAdapter

logger = logging.getLogger(__name__)


class SubscribeSide:
    def __init__(
        self,
        participant_id: str,
        config: SfuConfig,
        clock: Clock,
        counters: dict[str, int],
        malformed: MalformedLog,
        on_changed: Callable[[], None],
        on_layer_changed: Callable[[Subscription], None],
        active_speaker: Callable[[], str | None],
    ) -> None:
        self.id = participant_id
        #: whether a new track may take an inactive m-line of its kind (else a new one:
        #: ``join``'s ``reuse_mlines``, for webrtcbin, which cannot change its direction)
        self.reuse_mlines = True
        self.config = config
        self._clock = clock
        self.counters = counters
        self._on_changed = on_changed
        self._on_layer_changed = on_layer_changed
        self._active_speaker = active_speaker
        self.subscriptions: dict[str, Subscription] = {}  # by publisher track id
        self.pc: RTCPeerConnection | None = None
        self._by_out_ssrc: dict[int, Forwarder] = {}
        self._offer_pending = False
        self._offer_at = 0.0
        self._dirty = False
        self._transceivers: dict[RTCRtpTransceiver, Subscription | None] = {}
        #: the last forwarder of each inactive m-line (its stream continues on reuse)
        self._previous: dict[RTCRtpTransceiver, Forwarder] = {}
        self.congestion = CongestionController()
        self.egress = Egress(clock, self._overflow, self._layer_changed, counters)
        self.rtcp = SubscriberRtcp(
            self.congestion,
            self._by_out_ssrc,
            counters,
            malformed,
            self._lossy,
            self.update_layers,
            self._transport_feedback,
        )
        self.refusals = CodecRefusals(participant_id)  # codecs it refused
        #: {mid: RED payload type} of the audio m-lines whose answer accepted RED
        self._red_pts: dict[str, int] = {}
        #: the transport-wide sequence number extension's id, once the answer accepted
        #: transport-cc (0: not negotiated)
        self._twcc_id = 0
        self._twcc = TransportFeedbackAdapter()
        self.probes = ProbeSender(
            clock, self.congestion, self.egress, counters, self._probe_carrier, self.update_layers
        )
        self.closed = False

    # ------------------------------------------------------------ subscriptions

    def subscribe(self, publisher: Peer, track: PublishedTrack) -> None:
        if self.closed or track.id in self.subscriptions or self.refusals.refuses(track):
            return  # (a codec it refused: it gets the room's other tracks)
        forwarder = Forwarder(track.layers, self.egress, self.id)
        self.egress.wire(forwarder)
        self.subscriptions[track.id] = Subscription(publisher, track, forwarder)
        if track.kind == "video" and len(track.layers) == 1:  # (the forwarder starts on it:
            track.layers[0].request_keyframe(self._clock.time())  # Source.recent_keyframe)
        self._mark_dirty()

    def unsubscribe(self, track: PublishedTrack) -> None:
        sub = self.subscriptions.pop(track.id, None)
        if sub is None:
            return
        sub.forwarder.close()
        if sub.transceiver is not None:
            self._transceivers[sub.transceiver] = None
            if self.reuse_mlines:
                # what the m-line sent last, for the track that reuses it
                self._previous[sub.transceiver] = sub.forwarder
            for ssrc in adapter.sender_ssrcs(sub.transceiver.sender):
                self._by_out_ssrc.pop(ssrc, None)
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._dirty = True
        if not self.closed:
            self._on_changed()

    def rewire(self) -> None:
        """The transport is up: every forwarder may use the native path."""
        self.egress.transport_cc_id = self._twcc_id
        for sub in self.subscriptions.values():
            self.egress.wire(sub.forwarder)

    def _layer_changed(self, forwarder: Forwarder) -> None:
        for sub in self.subscriptions.values():
            if sub.forwarder is forwarder:
                self._on_layer_changed(sub)
                return

    # ------------------------------------------------------------ negotiation

    async def create_offer(
        self, create_pc: Callable[[], RTCPeerConnection]
    ) -> tuple[str, dict[str, dict[str, str]]] | None:
        """Offer the current subscriptions; None when nothing changed or an offer is in flight."""
        if self.closed or self._offer_pending or not self._dirty:
            return None
        self._dirty = False
        if self.pc is None and not self.subscriptions:
            return None
        pc = self.pc = self.pc or create_pc()
        if pc.signalingState == "closed":  # the peer hung up: its leave follows
            return None
        for transceiver, sub in self._transceivers.items():
            if sub is None and transceiver.direction != "inactive":
                transceiver.direction = "inactive"
        for sub in self.subscriptions.values():
            if sub.transceiver is None:
                self._assign_transceiver(pc, sub)
        self._offer_pending = True
        self._offer_at = self._clock.time()
        try:
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
        except Exception:
            self._offer_pending = False
            if pc.signalingState == "closed":  # closed while the offer was made
                return None
            raise
        if self.egress.port is None:
            dtls = pc.getTransceivers()[0].sender.transport
            self.egress.port = adapter.MediaPort(dtls, self._on_rtp, self.rtcp.on_rtcp)
        mapping: dict[str, dict[str, str]] = {}
        for transceiver, sub in self._transceivers.items():
            if sub is not None and transceiver.mid not in (None, *self.refusals.dead):
                mapping[str(transceiver.mid)] = {
                    "participant": sub.publisher.id,
                    "track": sub.track.id,
                    "kind": sub.track.kind,
                }
        # transport-wide congestion control: offered to every subscriber (aiortc does not
        # know it; the SFU stamps and reads it itself)
        # and Opus RED (RFC 2198) beside Opus: aiortc knows neither (sfu/red_sdp.py)
        sent = subscribe_offer(pc.localDescription.sdp, self._twcc_id or None)
        return self.refusals.offer(sent), mapping

    def _assign_transceiver(self, pc: RTCPeerConnection, sub: Subscription) -> None:
        kind = sub.track.kind
        free = (t for t, s in self._transceivers.items() if s is None and self.reuse_mlines)
        transceiver = next((t for t in free if reusable(t, kind, self._previous, sub.track)), None)
        if transceiver is None:
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences(kind, sub.track.source.params))
            adapter.hook_sender(transceiver.sender, self._sender_negotiated(transceiver))
            adapter.release_receiver_state(transceiver.receiver)
        else:
            transceiver.direction = "sendonly"
            previous = self._previous.pop(transceiver, None)
            if previous is not None:
                sub.forwarder.continue_from(previous)
        adapter.set_sender_msid(transceiver.sender, sub.publisher.id, sub.track.id)
        self._transceivers[transceiver] = sub
        sub.transceiver = transceiver
        for ssrc in adapter.sender_ssrcs(transceiver.sender):
            self._by_out_ssrc[ssrc] = sub.forwarder

    def _sender_negotiated(
        self, transceiver: RTCRtpTransceiver
    ) -> Callable[[adapter.NegotiatedRtp], None]:
        def on_parameters(params: adapter.NegotiatedRtp) -> None:
            sub = self._transceivers.get(transceiver)
            if sub is None or self.closed:
                return
            ssrc, rtx_ssrc = adapter.sender_ssrcs(transceiver.sender)
            primary = params.primary_codec
            assert primary.payloadType is not None  # negotiated codecs always have one
            extensions = dict(params.extensions)
            if self._twcc_id:
                extensions[TRANSPORT_CC_URI] = self._twcc_id
            sub.forwarder.configure(
                EgressParams(
                    mid=params.mid,
                    payload_type=primary.payloadType,
                    ssrc=ssrc,
                    rtx_payload_type=params.rtx_payload_type(primary.payloadType),
                    rtx_ssrc=rtx_ssrc,
                    extensions=extensions,
                    red_payload_type=self._red_pts.get(params.mid),
                )
            )
            if not sub.negotiated:
                sub.negotiated = True
                now = self._clock.time()
                self.update_layers(now)
                sub.forwarder.start(now)

        return on_parameters

    async def apply_answer(self, answer_sdp: str) -> None:
        if self.pc is None or not self._offer_pending:
            raise NegotiationError("wrong_state", "no subscribe offer is outstanding")
        try:
            adapter.describe_remote_media(answer_sdp)
            check_transport(answer_sdp)
            twcc_id, self._red_pts = answer_extras(answer_sdp)  # transport-cc, RED
            if twcc_id is not None and not self._twcc_id:
                # (once: the extension's id cannot change on a live transport)
                self._twcc_id = twcc_id
                self.congestion.use_transport_cc()
                self.rtcp.transport_cc = True
            local = self.pc.localDescription.sdp  # m-lines refused for their codec: dead
            answer_sdp, refused = self.refusals.answer(answer_sdp, local)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
            for track in refused_tracks(self.subscriptions.values(), refused):
                self.unsubscribe(track)  # (logged by CodecRefusals.answer)
        except Exception as exc:
            raise NegotiationError("bad_sdp", f"cannot apply answer: {exc}") from exc
        finally:
            self._offer_pending = False
        if self._dirty and not self.closed:
            self._on_changed()

    def answer_overdue(self, now: float) -> bool:
        """An offer has waited longer than ``subscribe_answer_timeout`` for its answer."""
        return self._offer_pending and now - self._offer_at > self.config.subscribe_answer_timeout

    def _on_rtp(self, data: bytes, now: float) -> None:
        pass  # a subscribe connection carries no media towards the SFU

    def _transport_feedback(self, feedback: TransportFeedback, now: float) -> None:
        """Transport-cc feedback: what arrived of what was sent, to the estimator."""
        if self.closed:
            return
        results = self._twcc.on_feedback(feedback, self.egress.sent_packet)
        self.counters["twcc_feedback"] += 1
        if self.congestion.on_transport_feedback(results, now):
            self.update_layers(now)
        if self.congestion.feedback_shows_random_loss(now):
            self._lossy()

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
        self.update_layers(self._clock.time())

    def update_layers(self, now: float) -> None:
        """Choose the layer of every subscribed track: request, activity, bandwidth."""
        if self.closed:
            return
        plans = []
        for sub in self.subscriptions.values():
            forwarder = sub.forwarder
            if not sub.negotiated and sub.transceiver is None:
                continue
            if forwarder.request.paused or sub.track.muted:
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
            self.congestion.nothing_to_allocate()
            return
        speaker = self._active_speaker()
        demands = []
        steps = []  # per track: its (spatial, temporal) steps by bitrate, sfu/layers.py
        for forwarder, _, choices, publisher in plans:
            track_steps = levels(choices, [forwarder.layers[c.index].temporal for c in choices])
            current = _current_key(forwarder)
            level = next((i for i, s in enumerate(track_steps) if s.key == current), None)
            steps.append(track_steps)
            demands.append(
                Demand(
                    bitrates=[s.bitrate for s in track_steps],
                    current=level,
                    priority=priority(forwarder.request, publisher == speaker),
                )
            )
        allocation = self.congestion.allocate(demands, now)
        if allocation.relax:
            for forwarder, _, _, _ in plans:
                forwarder.selector.relax()
        self.egress.pacer.set_rate(allocation.budget, now)
        keep = not self.congestion.bwe.may_pause(now)  # no evidence: no last resort either
        allocated = sum(
            track_steps[level].bitrate
            for track_steps, level in zip(steps, allocation.levels, strict=True)
            if level >= 0
        )
        for (forwarder, infos, _, _), track_steps, level in zip(
            plans, steps, allocation.levels, strict=True
        ):
            level = floor_level(track_steps, level) if keep else level
            if level >= 0:
                others = allocated - track_steps[level].bitrate
                level = past_last_resort(track_steps, level, allocation.budget, others)
            proposed = track_steps[level].key if level >= 0 else None
            active = ordered(infos)
            every = levels(active, [forwarder.layers[i.index].temporal for i in active])
            rank = {step.key: pos for pos, step in enumerate(every)}
            # what is decided already: the target (a switch may be waiting for a keyframe)
            current = _current_key(forwarder)
            chosen = forwarder.selector.decide(proposed, track_steps[-1].key, current, rank, now)
            if chosen is None:
                forwarder.set_target(None, now)
                continue
            index, tid = key_layer(chosen)
            target = forwarder.layers[index]
            budget, now_on = allocation.budget, forwarder.current  # larger than all: cut
            cut = budget is not None and now_on is not None and now_on.bitrate > budget
            if cut and target is not forwarder.target:
                self.egress.pacer.hold(self.congestion.bwe.cut_hold(now), now)
            forwarder.set_target(target, now, cut=cut)
            forwarder.set_temporal(tid)

    # ------------------------------------------------------------ congestion glue

    def _lossy(self, on: bool = True) -> None:
        """Random loss (``on``) or no more (``Forwarder.set_redundant``)."""
        for sub in self.subscriptions.values():
            sub.forwarder.set_redundant(on)

    def _overflow(self, now: float) -> None:
        """The link takes less than is sent: lower the estimate (a lower layer follows)."""
        if self.congestion.on_overflow(now):
            self.update_layers(now)

    def measure(self, now: float) -> None:
        """Once a second: the video sent to this subscriber, and what its transport refused."""
        forwarders = [sub.forwarder for sub in self.subscriptions.values()]
        sent = sum(f.bytes_sent for f in forwarders if f.is_video)
        audio = sum(f.bytes_sent for f in forwarders if not f.is_video)
        result = self.congestion.measure(now, sent, self.egress.tx_errors, audio)
        if result.redundancy_off:
            self._lossy(False)
        if result.refused > 0:
            self.counters["send_failures"] += result.refused
        if result.reallocate:
            self.update_layers(now)

    def maybe_probe(self) -> None:
        """Start a bandwidth probe when the estimator wants one (``sfu/probe_sender.py``)."""
        self.probes.maybe_probe()

    def _probe_carrier(self) -> Forwarder | None:
        """The forwarder whose RTX stream carries probe padding."""
        for sub in self.subscriptions.values():
            if sub.forwarder.is_video and sub.forwarder.params is not None:
                return sub.forwarder
        return None

    def send_sender_reports(self, now: float) -> None:
        port = self.egress.port
        if port is None:
            return
        for sub in self.subscriptions.values():
            packet = sender_report(sub.forwarder, sub.publisher.id, now)
            if packet is not None:
                port.send(packet)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close every forwarder (the transport stays up until ``stop``)."""
        self.closed = True
        self.egress.closed = True
        for sub in list(self.subscriptions.values()):
            sub.forwarder.close()
        self.subscriptions.clear()
        self._by_out_ssrc.clear()
        self._previous.clear()
        # the forwarders go now, not when the collector finds this participant's cycles
        self._transceivers.clear()

    def stop(self) -> None:
        """Close the transport's port, cancel the timers."""
        self.egress.close()
        self.probes.close()


def _current_key(forwarder: Forwarder) -> int | None:
    """The step ``forwarder`` aims at now (``Level.key``), None when paused."""
    index = forwarder.target_index
    return None if index is None else Level(index, forwarder.tid_target, 0.0).key
