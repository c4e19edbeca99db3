"""Running totals of what the SFU received and forwarded, for metrics (``/metrics``).

The packet path already counts what it does, per object: a ``Source`` its packets and
bytes in and its keyframe requests upstream, a ``Forwarder`` its packets and bytes out
(``native_packets`` of them sent by the C loop) and the keyframe requests its
subscriber sent. Fields: ``packets_in``, ``bytes_in``, ``plis_sent``, ``plis_throttled``
(of sources), ``packets_out``, ``bytes_out``, ``native_packets``, ``plis_in`` (of
forwarders). Those objects go away with their track or subscriber;
:class:`StreamTotals` keeps what they counted, so a total summed over the objects alive
plus the retired ones never goes backwards. Nothing here runs per packet: a forwarder
is added once, when it closes, and a scrape reads the live objects' counters.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class CountingSource(Protocol):
    """What a ``sfu.source.Source`` counts."""

    kind: str
    packets: int
    bytes: int
    keyframe_requests_sent: int
    keyframe_requests_throttled: int


class CountingForwarder(Protocol):
    """What a ``sfu.forwarder.Forwarder`` counts."""

    kind: str
    packets_sent: int
    bytes_sent: int
    native_packets: int
    keyframes_requested: int


class StreamTotals:
    """Counts by (field, kind), e.g. ``("packets_in", "video")``; only ever grows."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def add_source(self, source: CountingSource) -> None:
        kind, counts = source.kind, self.counts
        counts["packets_in", kind] += source.packets
        counts["bytes_in", kind] += source.bytes
        counts["plis_sent", kind] += source.keyframe_requests_sent
        counts["plis_throttled", kind] += source.keyframe_requests_throttled

    def add_forwarder(self, forwarder: CountingForwarder) -> None:
        kind, counts = forwarder.kind, self.counts
        counts["packets_out", kind] += forwarder.packets_sent
        counts["bytes_out", kind] += forwarder.bytes_sent
        counts["native_packets", kind] += forwarder.native_packets
        counts["plis_in", kind] += forwarder.keyframes_requested

    def add(self, other: StreamTotals) -> None:
        self.counts.update(other.counts)

    def get(self, field: str, kind: str) -> int:
        return self.counts.get((field, kind), 0)
