"""One subscriber's packet sink: its subscribe transport's media port, the pacer in
front of it and the pacer's timer, and the count of sends the transport refused.

Forwarders send through it (it is their ``PacketSink``): audio, retransmissions and
probe padding go out at once; video goes out at once too while nothing limits the
link, and through the pacer (``sfu/pacer.py``) while the estimate has a cap. What the
link cannot take is reported upward (``on_overflow``): the subscriber's congestion
control lowers its estimate.
"""

from __future__ import annotations

from collections.abc import Callable

from .aiortc_adapter import MediaPort
from .forwarder import Forwarder
from .pacer import Pacer
from .ports import Clock, Timer


class Egress:
    def __init__(
        self,
        clock: Clock,
        on_overflow: Callable[[float], None],
        on_layer_changed: Callable[[Forwarder], None],
        counters: dict[str, int],
    ) -> None:
        self._clock = clock
        self._on_overflow = on_overflow
        self._on_layer_changed = on_layer_changed
        self._counters = counters
        #: the subscribe transport (None until the first subscribe offer)
        self.port: MediaPort | None = None
        #: paces video while the estimate has a cap (``sfu/pacer.py``)
        self.pacer = Pacer()
        self._pacer_timer: Timer | None = None
        #: the transport-wide sequence number extension's id (0: not negotiated): the
        #: transport's native egress stamps every packet that carries it
        self.transport_cc_id = 0
        self.closed = False

    # PacketSink
    def send_rtp(self, data: bytes) -> bool:
        port = self.port
        return port is not None and port.send_rtp(data)

    def send_rtp_twice(self, data: bytes) -> bool:
        port = self.port
        return port is not None and port.send_rtp_twice(data)

    def send_video(self, data: bytes, now: float) -> bool:
        port = self.port
        if port is None:
            return False
        pacer = self.pacer
        if not pacer.active:
            return port.send_rtp(data)  # nothing limits the link: no queue
        if not pacer.offer(data, now):  # queued behind the pacer
            if self._pacer_timer is None:
                self._pacer_timer = self._clock.call_later(pacer.settings.tick, self._pace)
            return True
        if port.send_rtp(data):
            return True
        self._send_failed(now)
        return False

    def room_for_frame(self) -> bool:
        return self.pacer.has_room()

    def frame_dropped(self, forwarder: Forwarder, now: float) -> None:
        """The pacer's queue is over budget (the frame was dropped whole)."""
        self._counters["frames_dropped"] += 1
        self._on_overflow(now)

    def layer_changed(self, forwarder: Forwarder) -> None:
        """The forwarder switched layer (or paused): what the pacer holds of its old
        layer is dropped, so the new layer's keyframe goes out first."""
        if self.closed:
            return
        params = forwarder.params
        if params is not None and self.pacer.queue:
            self._counters["paced_dropped"] += self.pacer.drop_stream(params.ssrc)
        self._on_layer_changed(forwarder)

    # ------------------------------------------------------------ the rest

    def wire(self, forwarder: Forwarder) -> None:
        """Give ``forwarder`` what the native path needs: this subscriber's egress (once
        its transport is up) and its pacer (``sfu/native.py``)."""
        forwarder.pacer = self.pacer
        port = self.port
        forwarder.egress = port.egress if port is not None else None
        if forwarder.egress is not None:
            forwarder.egress.twcc_id = self.transport_cc_id

    def sent_packet(self, seq: int) -> tuple[int, float, int] | None:
        """(unwrapped transport-wide seq, send time, size) of the packet stamped ``seq``
        (16 bits), from the native egress's send history; None when it is not there."""
        port = self.port
        egress = port.egress if port is not None else None
        if egress is None or not self.transport_cc_id:
            return None
        result: tuple[int, float, int] | None = egress.history(seq)
        return result

    @property
    def tx_errors(self) -> int | None:
        """Packets the transport could not send so far, on any path (None: no transport)."""
        port = self.port
        return port.tx_errors if port is not None else None

    @property
    def remote_address(self) -> str | None:
        port = self.port
        return port.remote_address if port is not None else None

    def _send_failed(self, now: float) -> None:
        """The socket refused a paced packet (its buffer is full): as a queue overflow, at
        once. The congestion measurement counts it, with every other refused packet."""
        self._on_overflow(now)

    def _pace(self) -> None:
        """Send what the pacer lets out now; re-arm while it holds packets."""
        self._pacer_timer = None
        port = self.port
        if self.closed or port is None:
            self.pacer.clear()
            return
        now = self._clock.time()
        for packet in self.pacer.due(now):
            if not port.send_rtp(packet):
                self._send_failed(now)
        if self.pacer.queue:
            self._pacer_timer = self._clock.call_later(self.pacer.settings.tick, self._pace)

    def close(self) -> None:
        """Stop pacing and close the transport's port. Idempotent."""
        self.closed = True
        if self.port is not None:
            self.port.close()
        if self._pacer_timer is not None:
            self._pacer_timer.cancel()
        self.pacer.clear()
