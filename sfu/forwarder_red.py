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

A plain-Opus source's audio to a subscriber that negotiated RED is **made** RED while
the forwarder is ``redundant`` (``set_redundant``): each packet carries the previous two
packets' payloads as redundant blocks (``RED_DEPTH``; LiveKit does the same for its
subscribers), so a frame is lost only when three packets in a row are (p³: 5 % random
loss leaves 0.0125 %), where sending each packet twice leaves p² (0.25 %) and loses
both copies together in a burst. Those forwarders take the Python path meanwhile.
"""

from __future__ import annotations

from .egress_params import EgressParams
from .forwarder_temporal import TID_ALL
from .rtp.packet import RtpView
from .rtp.red import build_red, red_payload
from .source import Source

#: Redundant blocks a RED packet made from plain Opus carries (the previous packets').
RED_DEPTH = 2
#: A redundant block's timestamp offset must fit RED's 14 bits, its length 10 bits.
_MAX_OFFSET = (1 << 14) - 1
_MAX_LENGTH = (1 << 10) - 1


class ForwarderRed:
    # (set by Forwarder.__init__ and configure, some in its C base class)
    layers: tuple[Source, ...]
    params: EgressParams | None
    redundant: bool
    is_video: bool
    _tid_limit: int

    def init_red(self) -> None:
        #: the publisher's RED payload type (None: its source never carries RED)
        self._red_in = self.layers[0].params.red_payload_type
        if self._red_in is not None:
            self._tid_limit = TID_ALL  # the Python path for every packet
        #: plain Opus is made RED (redundant, and the subscriber negotiated RED)
        self._red_out = False
        #: (input timestamp, Opus payload) of the last packets sent, newest last
        self._red_history: list[tuple[int, bytes]] = []

    def set_redundant(self, on: bool) -> None:
        """The subscriber loses packets at random (``on``) or no longer does: audio is
        sent twice, or made RED for a subscriber that negotiated it; video
        retransmissions are sent twice."""
        self.redundant = on
        params = self.params
        red_out = (
            on
            and not self.is_video
            and self._red_in is None
            and params is not None
            and params.red_payload_type is not None
        )
        if red_out == self._red_out:
            return
        self._red_out = red_out
        self._red_history.clear()
        self._tid_limit = TID_ALL if red_out else -1  # the C loop writes no RED

    def red_render(self, pkt: RtpView, payload: bytes, pt: int) -> tuple[int, bytes]:
        """(payload type, payload) for the subscriber: ``pt`` and ``payload`` unchanged
        unless ``pkt`` is RED (checked by ``Source.on_rtp``)."""
        if pkt.payload_type != self._red_in or not payload:
            if self._red_out and payload:
                return self._red_encode(pkt.timestamp, payload, pt)
            return pt, payload
        params = self.params
        return red_payload(payload, params.red_payload_type if params else None, pt)

    def _red_encode(self, ts: int, payload: bytes, pt: int) -> tuple[int, bytes]:
        """Plain Opus as RED with the previous packets' payloads as redundant blocks
        (those 1..``_MAX_OFFSET`` samples earlier: not across a DTX gap or a restart)."""
        params = self.params
        assert params is not None and params.red_payload_type is not None
        history = self._red_history
        blocks = [
            (offset, data)
            for old_ts, data in history
            if 0 < (offset := (ts - old_ts) & 0xFFFFFFFF) <= _MAX_OFFSET
            and len(data) <= _MAX_LENGTH
        ]
        history.append((ts, payload))
        if len(history) > RED_DEPTH:
            del history[0]
        return params.red_payload_type, build_red(payload, blocks, pt)

    def send_twice(self, pkt: RtpView) -> bool:
        """Whether a ``redundant`` forwarder sends this audio packet twice: not when it
        goes out as RED."""
        if self._red_out:
            return False
        params = self.params
        return pkt.payload_type != self._red_in or params is None or params.red_payload_type is None
