"""The interfaces the parts of the SFU talk through (a leaf: imports no other sfu module).

Ownership goes down (a room owns participants, a participant its sources and
forwarders); events go up through these small protocols, so no module imports the
module that owns it:

* ``SourceOwner``: what a ``Source`` asks of its publisher side (keyframes, NACKs).
* ``SourceSubscriber``: what a ``Source`` knows of the forwarders attached to it.
* ``PacketSink``: where a ``Forwarder``'s packets go (the subscriber's egress).
* ``ParticipantListener``: what a participant tells its owner (the signaling session).
* ``RoomEvents``: what a participant tells its room.
* ``Clock``: the event loop's time and timers, as the participant's parts use them.
* ``Estimator``: a subscriber's bandwidth estimator, as its congestion controller
  drives it (REMB/receiver reports, or transport-cc).

The protocols that name the SFU's own classes are generic in them (``SourceOwner[S]``
with S the Source class, ...), so this module needs none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

S_contra = TypeVar("S_contra", contravariant=True)
F_contra = TypeVar("F_contra", contravariant=True)
P_contra = TypeVar("P_contra", contravariant=True)
T_contra = TypeVar("T_contra", contravariant=True)
U_contra = TypeVar("U_contra", contravariant=True)
P_co = TypeVar("P_co", covariant=True)


class NegotiationError(Exception):
    """An offer or answer that cannot be applied. ``code`` is a signaling error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SourceOwner(Protocol[S_contra]):
    """What a Source needs from the publisher side (its transport)."""

    def request_keyframe(self, source: S_contra) -> None: ...

    def source_has_missing(self, source: S_contra) -> None: ...

    def keyframe_deferred(self, source: S_contra, at: float) -> None:
        """A throttled keyframe request is pending: call ``source.poll(now)`` at ``at``."""
        ...


class SourceSubscriber(Protocol):
    """What a Source knows of a forwarder attached to it (``Source.forwarders``)."""

    @property
    def current(self) -> object:
        """The layer (Source) the forwarder sends now, or None."""
        ...

    @property
    def remb(self) -> int | None:
        """The subscriber's last believed REMB for this stream (bit/s)."""
        ...

    def skip(self, pkt: Any) -> None:
        """A padding-only packet of the source: close the gap it leaves downstream."""
        ...

    def forward(self, source: Any, pkt: Any, vp8: Any, now: float) -> None:
        """A packet of the source (the Python path; a replayed cached keyframe)."""
        ...

    def source_closed(self, source: Any) -> None: ...


class PacketSink(Protocol[F_contra]):
    """Where a forwarder's packets go (the subscriber's transport)."""

    def send_rtp(self, data: bytes) -> bool: ...

    def send_rtp_twice(self, data: bytes) -> bool:
        """Send one packet twice (redundancy against random loss)."""
        ...

    def layer_changed(self, forwarder: F_contra) -> None:
        """What the forwarder sends changed layer, or paused / resumed."""
        ...

    def send_video(self, data: bytes, now: float) -> bool:
        """Send a video packet, or queue it behind the pacer (``sfu/pacer.py``)."""
        ...

    def room_for_frame(self) -> bool:
        """Whether a new video frame may start: the pacer's queue is within budget."""
        ...

    def frame_dropped(self, forwarder: F_contra, now: float) -> None:
        """A frame found no room and was dropped whole: the link is short."""
        ...


class ParticipantListener(Protocol[P_contra, T_contra, U_contra]):
    """How a participant tells its owner (the signaling session) what happened.

    P is the participant class, T the published track, U the subscription.
    """

    def participant_joined(self, other: P_contra) -> None: ...

    def participant_left(self, other: P_contra) -> None: ...

    def track_published(self, other: P_contra, track: T_contra) -> None: ...

    def track_unpublished(self, other: P_contra, track: T_contra) -> None: ...

    def layer_changed(self, subscription: U_contra) -> None:
        """What is forwarded of a subscribed track changed layer, paused or resumed."""
        ...

    def active_speaker_changed(self, speaker: P_contra | None) -> None:
        """The room's active speaker changed (None: the last one left)."""
        ...

    def subscriptions_changed(self) -> None: ...

    def data_refused(self, code: str, message: str) -> None:
        """A message of its data channel was refused (``sfu/datachannel.py`` codes)."""
        ...

    def closed(self, reason: str) -> None: ...


class RoomEvents(Protocol[P_co, P_contra, T_contra]):
    """What a participant tells its room, and reads of it.

    P_co/P_contra are the participant class (read / told), T the published track.
    """

    @property
    def id(self) -> str: ...

    @property
    def participants(self) -> Mapping[str, P_co]: ...

    @property
    def active_speaker(self) -> P_co | None: ...

    def track_published(self, publisher: P_contra, track: T_contra, now: float) -> None: ...

    def track_unpublished(self, publisher: P_contra, track: T_contra) -> None: ...

    def participant_closed(self, participant: P_contra) -> None: ...


class Peer(Protocol):
    """A participant as a subscription names its publisher."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


class Timer(Protocol):
    """A scheduled call (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...

    def cancelled(self) -> bool: ...

    def when(self) -> float: ...


class Clock(Protocol):
    """The event loop's clock and timers (``asyncio.AbstractEventLoop``)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object], /) -> Timer: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer: ...


class EstimatorSettings(Protocol):
    """The settings a ``CongestionController`` reads of its estimator's."""

    @property
    def loss_low(self) -> float: ...

    @property
    def loss_high(self) -> float: ...

    @property
    def probe_streak(self) -> int: ...

    @property
    def probe_duration(self) -> float: ...

    @property
    def settle(self) -> float: ...


class Acknowledged(Protocol):
    """What a receiver acknowledged receiving lately (``sfu/delivery_rate.Delivery``)."""

    @property
    def rate(self) -> float: ...

    @property
    def loss(self) -> float: ...

    @property
    def acked_share(self) -> float | None: ...


class ProbeCluster(Protocol):
    """A probe being sent or judged (only its start time is read from outside)."""

    @property
    def start(self) -> float: ...


class Estimator(Protocol):
    """One subscriber's bandwidth estimator, as ``CongestionController`` drives it:
    ``sfu/bwe.BandwidthEstimator`` (REMB and receiver reports) and
    ``sfu/gcc/estimator.SendSideEstimator`` (transport-cc) both are one. All times are
    ``now`` passed in; bit/s throughout."""

    @property
    def settings(self) -> EstimatorSettings: ...

    @property
    def cap(self) -> float | None:
        """The estimate (None: nothing limits)."""
        ...

    @property
    def probe(self) -> ProbeCluster | None: ...

    @property
    def ok_streak(self) -> int: ...

    @property
    def failed_probes(self) -> int: ...

    @property
    def probes_ok(self) -> int: ...

    #: what the SFU sent (as of the last ``on_sent``)
    sent: float
    #: (time, what, cap) of each change of the estimate, newest last
    events: list[tuple[float, str, float | None]]
    last_signal: float | None

    def estimate(self, now: float) -> float | None: ...

    def acked(self, now: float) -> Acknowledged | None: ...

    def on_sent(self, bitrate: float, now: float) -> None: ...

    def on_report(
        self,
        stream: int,
        now: float,
        *,
        highest: int,
        cumulative_lost: int,
        packets_sent: int,
        bytes_sent: int,
        not_sent: int = 0,
    ) -> None: ...

    def on_rtx_report(
        self, stream: int, now: float, *, highest: int, cumulative_lost: int
    ) -> None: ...

    def on_loss(self, fraction: float, now: float) -> None: ...

    def on_remb(self, bitrate: float, now: float) -> bool:
        """Returns whether the REMB is plausible (may be passed on to publishers)."""
        ...

    def on_overflow(self, now: float) -> bool:
        """The SFU's own queue overflowed; returns whether the estimate dropped."""
        ...

    def on_padding(self, size: int) -> None: ...

    def hold(self, now: float) -> None:
        """Loss that may not lower the estimate: no probing for a while."""
        ...

    def start_probe(self, now: float, wanted: bool, aim: float | None = None) -> float | None:
        """Start a probe if one is due; returns its padding bit/s."""
        ...

    def probe_rate(self, now: float) -> float: ...

    def cut_hold(self, now: float) -> float:
        """Seconds without video after a layer that overflowed the link is cut
        (``Pacer.hold``): what the bottleneck's queue must drain to take the new
        layer's keyframe whole (0: nothing to wait for)."""
        ...

    def congested(self, now: float, within: float = 5.0) -> bool: ...

    def may_pause(self, now: float, lowest: float | None = None) -> bool:
        """Whether the estimate may pause video altogether (evidence of loss)."""
        ...


class NullListener:
    """A ParticipantListener that ignores everything (tests, tools)."""

    def participant_joined(self, other: object) -> None:
        pass

    def participant_left(self, other: object) -> None:
        pass

    def track_published(self, other: object, track: object) -> None:
        pass

    def track_unpublished(self, other: object, track: object) -> None:
        pass

    def layer_changed(self, subscription: object) -> None:
        pass

    def active_speaker_changed(self, speaker: object | None) -> None:
        pass

    def subscriptions_changed(self) -> None:
        pass

    def data_refused(self, code: str, message: str) -> None:
        pass

    def closed(self, reason: str) -> None:
        pass


class NullSourceOwner:
    """A SourceOwner that asks nothing of anyone (a Source in a test or a benchmark)."""

    def request_keyframe(self, source: object) -> None:
        pass

    def source_has_missing(self, source: object) -> None:
        pass

    def keyframe_deferred(self, source: object, at: float) -> None:
        pass
