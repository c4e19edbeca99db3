"""A Participant: one client in a room, with a publish and a subscribe peer connection.

A thin composite of its two sides and their lifecycle:

* ``sfu/publish_side.py``: the client's offers, the Sources of what it publishes,
  ingress, and the RTCP the SFU sends upstream;
* ``sfu/subscribe_side.py``: what it receives (a Forwarder per subscribed track),
  the SFU's offers, downstream RTCP (``sfu/subscribe_rtcp.py``), its egress and pacer
  (``sfu/egress.py``) and its congestion control (``sfu/congestion.py``);
* here: both peer connections' states, one periodic tick (about once a second),
  and ``close()``.

The client offers on its *publish* connection; the SFU offers on the client's
*subscribe* connection and renegotiates it as remote tracks come and go. Neither
side ever offers on the other's connection, so there is no glare.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiortc import RTCPeerConnection

from . import aiortc_adapter as adapter
from .config import SfuConfig
from .congestion import (
    LOSS_REDUNDANT,
    LOSS_SETTLE,
    PROBE_HEADROOM,
    PROBE_TICK,
    REDUNDANCY_HOLD,
    RTX_FLOOR,
    RTX_SHARE,
)
from .counters import StreamTotals
from .data_side import DataSide
from .pacer import Pacer
from .ports import Clock, Estimator, NegotiationError, ParticipantListener, RoomEvents
from .publish_side import NACK_BATCH_DELAY, NACK_INTERVAL, SUPPORTED_CODECS, PublishSide
from .rtp.malformed import MalformedLog
from .subscribe_side import SubscribeSide
from .tracks import PublishedTrack, Subscription

__all__ = [
    "LOSS_REDUNDANT",
    "LOSS_SETTLE",
    "NACK_BATCH_DELAY",
    "NACK_INTERVAL",
    "PROBE_HEADROOM",
    "PROBE_TICK",
    "REDUNDANCY_HOLD",
    "RTX_FLOOR",
    "RTX_SHARE",
    "SUPPORTED_CODECS",
    "NegotiationError",
    "Participant",
    "ParticipantListener",
    "PublishedTrack",
    "Subscription",
]

logger = logging.getLogger(__name__)

#: How long (s) closing waits for each of aiortc's peer connections to close: an
#: aiortc close that raised half-way once left every later close waiting for good.
PC_CLOSE_TIMEOUT = 2.0

Listener = ParticipantListener["Participant", PublishedTrack, Subscription]
Room = RoomEvents["Participant", "Participant", PublishedTrack]


class Participant:
    def __init__(
        self,
        room: Room,
        participant_id: str,
        name: str,
        listener: Listener,
        config: SfuConfig,
        clock: Clock | None = None,
        *,
        reuse_mlines: bool = True,
        identity: str | None = None,
        decodes: frozenset[str] | None = None,
    ) -> None:
        self.room = room
        self.id = participant_id
        self.name = name
        #: who this is for the application (a join token's identity; None without one)
        self.identity = identity
        self.listener = listener
        self.config = config
        self.closed = False
        self.close_reason: str | None = None
        #: False: subscribed to nothing (a token without ``can_subscribe``)
        self.can_subscribe = True
        #: why the last DTLS handshake failed, if one did (``_dtls_failed``)
        self._dtls_failure: str | None = None
        self._loop = asyncio.get_running_loop()
        self._clock: Clock = clock if clock is not None else self._loop
        #: how long closing waits for each peer connection (``PC_CLOSE_TIMEOUT``)
        self.pc_close_timeout = PC_CLOSE_TIMEOUT
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
            "twcc_feedback": 0,
            "paced_dropped": 0,
            "frames_dropped": 0,
            "send_failures": 0,
            "rtx_limited": 0,
        }
        #: what the forwarders of tracks it no longer receives counted (``sfu/counters.py``)
        self.forwarded = StreamTotals()
        #: malformed RTP/RTCP from this client's peer connections: dropped, counted by
        #: reason, logged at most once per interval (``sfu/rtp/malformed.py``)
        self.malformed = MalformedLog(
            f"participant {participant_id} ({name!r})", config.malformed_log_interval, logger
        )
        self.publish_side = PublishSide(
            participant_id,
            config,
            self._clock,
            self.counters,
            self.malformed,
            on_published=lambda track, now: self.room.track_published(self, track, now),
            on_unpublished=lambda track: self.room.track_unpublished(self, track),
        )
        self.subscribe_side = SubscribeSide(
            participant_id,
            config,
            self._clock,
            self.counters,
            self.malformed,
            on_changed=self._subscriptions_changed,
            on_layer_changed=self._layer_changed,
            active_speaker=self._active_speaker_id,
        )
        self.subscribe_side.reuse_mlines = reuse_mlines
        self.subscribe_side.refusals.decodes = decodes
        self.data_side = DataSide(
            participant_id,
            config.data_limits,
            self._clock,
            self.counters,
            peers=lambda: {p.id: p.data_side for p in self.room.participants.values()},
            on_refused=self._data_refused,
        )
        self._task = asyncio.ensure_future(self._run())
        self._close_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ views

    @property
    def tracks(self) -> dict[str, PublishedTrack]:
        """What this participant publishes, by publish mid."""
        return self.publish_side.tracks

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """What it receives, by publisher track id."""
        return self.subscribe_side.subscriptions

    @property
    def bwe(self) -> Estimator:
        """What its subscribe link takes (``sfu/bwe.py``, or ``sfu/gcc/`` with
        transport-cc)."""
        return self.subscribe_side.congestion.bwe

    @property
    def pacer(self) -> Pacer:
        return self.subscribe_side.egress.pacer

    @property
    def remb_bitrate(self) -> int | None:
        return self.subscribe_side.congestion.remb_bitrate

    @property
    def egress_bitrate(self) -> float:
        """bit/s of video the SFU sends this subscriber, measured each second."""
        return self.subscribe_side.congestion.egress_bitrate

    @property
    def _sub_port(self) -> adapter.MediaPort | None:
        return self.subscribe_side.egress.port

    @property
    def remote_address(self) -> str | None:
        """Where this participant's subscribe connection sends to (its ICE peer)."""
        return self.subscribe_side.egress.remote_address

    # ------------------------------------------------------------ publish

    async def publish(self, offer_sdp: str) -> tuple[str, list[PublishedTrack]]:
        """Apply the client's publish offer; returns the answer and the tracks now published."""
        if self.closed:
            raise NegotiationError("wrong_state", "participant is closed")
        return await self.publish_side.publish(offer_sdp, self._create_publish_pc)

    # ------------------------------------------------------------ subscribe

    def subscribe(self, publisher: Participant, track: PublishedTrack) -> None:
        if not self.closed and self.can_subscribe:
            self.subscribe_side.subscribe(publisher, track)

    def unsubscribe(self, track: PublishedTrack) -> None:
        sub = self.subscriptions.get(track.id)
        if sub is not None:
            self.forwarded.add_forwarder(sub.forwarder)
        self.subscribe_side.unsubscribe(track)

    async def create_subscribe_offer(self) -> tuple[str, dict[str, dict[str, str]]] | None:
        """Offer the current subscriptions; None when nothing changed or an offer is in flight."""
        return await self.subscribe_side.create_offer(self._create_pc)

    async def apply_subscribe_answer(self, answer_sdp: str) -> None:
        await self.subscribe_side.apply_answer(answer_sdp)

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
        self.subscribe_side.set_layer_request(
            track_id, max_width=max_width, max_height=max_height, paused=paused
        )

    def layer_budget(self) -> float | None:
        """The bit/s this subscriber's video may use, or None when nothing limits it."""
        return self.subscribe_side.congestion.budget(self._clock.time())

    def update_layers(self, now: float) -> None:
        """Choose the layer of every subscribed track: request, activity, bandwidth."""
        self.subscribe_side.update_layers(now)

    def _subscriptions_changed(self) -> None:
        if not self.closed:
            self.listener.subscriptions_changed()

    def _layer_changed(self, subscription: Subscription) -> None:
        if not self.closed:
            self.listener.layer_changed(subscription)

    def _active_speaker_id(self) -> str | None:
        speaker = self.room.active_speaker
        return speaker.id if speaker is not None else None

    # ------------------------------------------------------------ lifecycle

    def _create_pc(self) -> RTCPeerConnection:
        # the SFU's own connections allocate no TURN relay: the TURN servers are the clients'
        pc = adapter.create_peer_connection(self.config.ice, self._dtls_failed, relay=False)
        self._watch(pc)
        return pc

    def _create_publish_pc(self) -> RTCPeerConnection:
        """The publish connection also carries the client's data channel."""
        pc = self._create_pc()
        pc.on("datachannel", self.data_side.attach)
        return pc

    def _data_refused(self, code: str, text: str) -> None:
        if not self.closed:
            self.listener.data_refused(code, text)

    def _dtls_failed(self, reason: str) -> None:
        """A DTLS handshake failed: say why (OpenSSL's reason or the peer's alert)."""
        logger.warning(
            "dtls_failed room=%s participant=%s name=%s reason=%r",
            self.room.id,
            self.id,
            self.name,
            reason,
            extra={"parley_fields": self._log_fields("dtls_failed", reason=reason)},
        )
        self._dtls_failure = reason

    def _log_fields(self, event: str, **more: object) -> dict[str, object]:
        """Structured fields of an operator log line (``signaling/oplog.py``'s JSON)."""
        return {
            "event": event,
            "room": self.room.id,
            "participant": self.id,
            "name": self.name,
            **more,
        }

    def _watch(self, pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                for port in (self.publish_side.port, self.subscribe_side.egress.port):
                    if port is not None:
                        # one batch for all the server's ports: the batch readers open it,
                        # the subscribers' egresses queue in it (sfu.native.new_send_batch)
                        # (a test's stand-in room has no Sfu: no batch)
                        port.send_batch = getattr(
                            getattr(self.room, "sfu", None), "send_batch", None
                        )
                        port.install_fast_path()
                self.subscribe_side.rewire()
            elif state in ("failed", "closed") and not self.closed:
                why = f" (DTLS: {self._dtls_failure})" if self._dtls_failure else ""
                logger.info(
                    "peer_connection_%s room=%s participant=%s name=%s%s",
                    state,
                    self.room.id,
                    self.id,
                    self.name,
                    why,
                    extra={"parley_fields": self._log_fields(f"peer_connection_{state}")},
                )
                self.close_soon(f"peer connection {state}{why}")

    def tick(self, now: float) -> None:
        """The periodic work, about once a second: measure, allocate, probe, RTCP
        (RR and REMB upstream, SR downstream), the subscribe answer's deadline."""
        publish, subscribe = self.publish_side, self.subscribe_side
        subscribe.measure(now)
        publish.tick(now)
        subscribe.update_layers(now)
        subscribe.maybe_probe()
        publish.send_receiver_reports(now)
        subscribe.send_sender_reports(now)
        if subscribe.answer_overdue(now):
            timeout = self.config.subscribe_answer_timeout
            self.close_soon(f"no subscribe_answer within {timeout:g} s")
        self.malformed.flush(now)

    async def _run(self) -> None:
        try:
            while not self.closed:
                await asyncio.sleep(1.0)
                self.tick(self._clock.time())
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("participant %s: periodic task failed", self.id)

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
        self.malformed.flush(self._clock.time(), force=True)
        self.subscribe_side.egress.closed = True
        self.data_side.close()
        self.publish_side.close()
        for sub in self.subscriptions.values():
            self.forwarded.add_forwarder(sub.forwarder)
        self.subscribe_side.close()
        self.room.participant_closed(self)
        self.publish_side.stop()
        self.subscribe_side.stop()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        for pc in (self.publish_side.pc, self.subscribe_side.pc):
            if pc is not None:
                await self._close_pc(pc)
        self.listener.closed(reason)

    async def _close_pc(self, pc: Any) -> None:
        """Close one of aiortc's peer connections, waiting at most ``pc_close_timeout``."""
        try:
            await asyncio.wait_for(pc.close(), self.pc_close_timeout)
        except TimeoutError:
            logger.warning(
                "participant %s: a peer connection did not close within %g s",
                self.id,
                self.pc_close_timeout,
            )
        except Exception:
            logger.exception("participant %s: closing a peer connection failed", self.id)
