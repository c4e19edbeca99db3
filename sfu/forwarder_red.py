"""A forwarder's Opus RED (RFC 2198): passed on to subscribers that negotiated it, with
the payload types rewritten to theirs; stripped to its primary block for the others.

``ForwarderRed`` is a part of ``sfu.forwarder.Forwarder`` (its base class). A forwarder
of a source that may carry RED (``SourceParams.red_payload_type``) keeps every packet on
the Python path: the C fast path (``sfu/_native.c``) writes one payload type and copies
the payload, so it is left out (``_tid_limit`` = ``TID_ALL``, as for a temporal limit:
nothing is dropped). Audio is about 50 packets/s per publisher and subscriber.

RED to a RED subscriber is sent once even while the forwarder is ``redundant`` (the
subscriber loses packets at random): each RED packet already carries the previous
packet(s), spread over time, which repairs random loss at least as well as a
back-to-back duplicate at the same cost (docs/audio.md).
"""

from __future__ import annotations

from .egress_params import EgressParams
from .forwarder_temporal import TID_ALL
from .rtp.packet import RtpView
from .rtp.red import red_payload
from .source import Source


class ForwarderRed:
    # (set by Forwarder.__init__ and configure, some in its C base class)
    layers: tuple[Source, ...]
    params: EgressParams | None
    redundant: bool
    _tid_limit: int

    def init_red(self) -> None:
        #: the publisher's RED payload type (None: its source never carries RED)
        self._red_in = self.layers[0].params.red_payload_type
        if self._red_in is not None:
            self._tid_limit = TID_ALL  # the Python path for every packet

    def red_render(self, pkt: RtpView, payload: bytes, pt: int) -> tuple[int, bytes]:
        """(payload type, payload) for the subscriber: ``pt`` and ``payload`` unchanged
        unless ``pkt`` is RED (checked by ``Source.on_rtp``)."""
        if pkt.payload_type != self._red_in or not payload:
            return pt, payload
        params = self.params
        return red_payload(payload, params.red_payload_type if params else None, pt)

    def send_twice(self, pkt: RtpView) -> bool:
        """Whether a ``redundant`` forwarder sends this audio packet twice: not when it
        goes out as RED."""
        params = self.params
        return pkt.payload_type != self._red_in or params is None or params.red_payload_type is None
