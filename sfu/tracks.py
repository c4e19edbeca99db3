"""What a participant publishes (``PublishedTrack``) and receives (``Subscription``)."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpTransceiver

from .forwarder import Forwarder
from .ports import Peer
from .source import Source


@dataclass(eq=False)
class PublishedTrack:
    id: str
    kind: str
    mid: str
    #: one Source, or one per simulcast layer in the publisher's order
    layers: tuple[Source, ...]
    #: muted by the operator: forwarded to nobody until unmuted
    muted: bool = False

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
    """One published track sent to one subscriber, on one m-line of its subscribe
    connection (``transceiver``, once assigned)."""

    publisher: Peer
    track: PublishedTrack
    forwarder: Forwarder
    transceiver: RTCRtpTransceiver | None = None
    negotiated: bool = False
