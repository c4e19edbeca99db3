"""The layers and the server's RTCP (:class:`SimulcastSender`, pure), and the loss-based
uplink control a browser has (:class:`UplinkControl`)."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc.rtp import (
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from loadgen.media.simulcast.layers import PSFB_FIR, PSFB_PLI, PSFB_REMB, RTPFB_NACK, LayerSpec
from loadgen.media.simulcast.sdp import SimulcastExtensions
from loadgen.media.simulcast.stream import LayerStream
from sfu.rtp.rtcp import normalize_lost, parse_rtcp

# ------------------------------------------------------------------- sender


@dataclass(slots=True)
class RtcpCounters:
    plis: int = 0
    firs: int = 0
    nacks: int = 0
    rembs: int = 0
    last_remb_bps: int | None = None
    unknown_ssrc: int = 0


@dataclass(slots=True)
class UplinkControl:
    """Loss-based layer control of a publisher, like a browser's (pure, time passed in).

    Receiver reports from the server give each layer's fraction lost. Above ``high``
    (10 %) in two reports in a row, the top layer still sent is dropped (at most one per
    ``settle`` seconds; reports in the ``settle`` seconds after a change still describe
    what was sent before it and are ignored). After ``calm`` seconds under ``low``
    (2 %) the next layer comes back; a layer that is dropped again within ``settle`` x 3
    of coming back doubles the calm needed next time (up to ``max_calm``).
    """

    layers: int
    high: float = 0.10
    low: float = 0.02
    settle: float = 3.0
    calm: float = 6.0
    max_calm: float = 60.0
    active: int = 0
    last_change: float = -1e9
    last_raise: float = -1e9
    calm_since: float | None = None
    previous_loss: float = 0.0
    changes: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.active = self.active or self.layers

    def on_loss(self, fraction: float, now: float) -> int | None:
        """Feed the worst loss of one report; returns the index of a layer turned back on."""
        if now - self.last_change < self.settle:
            return None
        previous, self.previous_loss = self.previous_loss, fraction
        if fraction > self.high:
            self.calm_since = None
            if self.active > 1 and (previous > self.high or fraction > 2 * self.high):
                if now - self.last_raise < 3 * self.settle:
                    self.calm = min(self.max_calm, self.calm * 2)  # that step failed
                self.active -= 1
                self.last_change = now
                self.previous_loss = 0.0
                self.changes.append((now, self.active))
            return None
        if fraction >= self.low:
            self.calm_since = None
            return None
        if self.calm_since is None:
            self.calm_since = now
        if self.active < self.layers and now - self.calm_since >= self.calm:
            self.active += 1
            self.last_change = self.last_raise = now
            self.calm_since = None
            self.changes.append((now, self.active))
            return self.active - 1
        return None


@dataclass(slots=True)
class SimulcastSender:
    """The layers of one simulcast video track, and the RTCP that steers them. Pure."""

    layers: list[LayerStream]
    counters: RtcpCounters = field(default_factory=RtcpCounters)
    uplink: UplinkControl | None = None

    def __post_init__(self) -> None:
        if self.uplink is None:
            self.uplink = UplinkControl(len(self.layers))

    def sends(self, index: int) -> bool:
        """Whether layer ``index`` is sent now (the uplink control may hold top ones back)."""
        return self.uplink is None or index < self.uplink.active

    @classmethod
    def create(
        cls,
        specs: Sequence[LayerSpec],
        mid: str,
        extensions: SimulcastExtensions,
        rng: random.Random,
    ) -> SimulcastSender:
        """Layers with random SSRCs (all distinct), sequence numbers, offsets, picture ids."""
        ssrcs: set[int] = set()

        def new_ssrc() -> int:
            while True:
                ssrc = rng.randint(1, 0xFFFFFFFF)
                if ssrc not in ssrcs:
                    ssrcs.add(ssrc)
                    return ssrc

        layers = [
            LayerStream(
                spec,
                mid,
                extensions,
                ssrc=new_ssrc(),
                rtx_ssrc=new_ssrc(),
                first_seq=rng.randint(0, 0xFFFF),
                first_rtx_seq=rng.randint(0, 0xFFFF),
                timestamp_offset=rng.randint(0, 0xFFFFFFFF),
                picture_id=rng.randint(0, 0x7FFF),
            )
            for spec in specs
        ]
        return cls(layers)

    def layer_for_ssrc(self, ssrc: int) -> LayerStream | None:
        for layer in self.layers:
            if ssrc in (layer.ssrc, layer.rtx_ssrc):
                return layer
        return None

    def configure(
        self, payload_type: int, rtx_payload_type: int | None, extensions: SimulcastExtensions
    ) -> None:
        for layer in self.layers:
            layer.configure(payload_type, rtx_payload_type, extensions)

    def handle_rtcp(
        self, data: bytes, send_time: bytes | None = None, now: float | None = None
    ) -> list[bytes]:
        """Act on one compound RTCP packet from the server; returns RTX packets to send.

        PLI (and FIR entries) request a keyframe on the named layer only; generic NACKs
        are answered from that layer's cache; REMB is counted and its bitrate kept;
        receiver reports' loss drives the uplink control (with ``now``).
        """
        out: list[bytes] = []
        for packet in parse_rtcp(data):
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)) and now is not None:
                sent = {layer.ssrc for i, layer in enumerate(self.layers) if self.sends(i)}
                worst = max(
                    (r.fraction_lost / 256 for r in packet.reports if r.ssrc in sent),
                    default=None,
                )
                if worst is not None and self.uplink is not None:
                    back = self.uplink.on_loss(worst, now)
                    if back is not None:
                        self.layers[back].keyframe_requested = True
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt == PSFB_PLI:
                    self.counters.plis += 1
                    self._request_keyframe(packet.media_ssrc, fir=False)
                elif packet.fmt == PSFB_FIR:
                    self.counters.firs += 1
                    fci = packet.fci
                    for pos in range(0, len(fci) - 7, 8):
                        self._request_keyframe(int.from_bytes(fci[pos : pos + 4]), fir=True)
                elif packet.fmt == PSFB_REMB:
                    self.counters.rembs += 1
                    try:
                        self.counters.last_remb_bps = unpack_remb_fci(packet.fci)[0]
                    except (ValueError, struct.error):
                        pass
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTPFB_NACK:
                self.counters.nacks += 1
                layer = self.layer_for_ssrc(packet.media_ssrc)
                if layer is None or packet.media_ssrc != layer.ssrc:
                    self.counters.unknown_ssrc += 1
                    continue
                for seq in normalize_lost(packet.lost):
                    rtx = layer.retransmission(seq, send_time)
                    if rtx is not None:
                        out.append(rtx)
        return out

    def _request_keyframe(self, ssrc: int, *, fir: bool) -> None:
        layer = self.layer_for_ssrc(ssrc)
        if layer is None:
            self.counters.unknown_ssrc += 1
            return
        layer.keyframe_requested = True
        if fir:
            layer.stats.firs += 1
        else:
            layer.stats.plis += 1

    def summary(self) -> dict[str, Any]:
        c = self.counters
        return {
            "layers": [
                {
                    "rid": layer.rid,
                    "width": layer.spec.width,
                    "height": layer.spec.height,
                    "ssrc": layer.ssrc,
                    "rtx_ssrc": layer.rtx_ssrc,
                    "frames": layer.stats.frames,
                    "keyframes": layer.stats.keyframes,
                    "packets": layer.stats.packets,
                    "bytes": layer.stats.octets,
                    "plis": layer.stats.plis,
                    "firs": layer.stats.firs,
                    "nacked": layer.stats.nacked,
                    "rtx_sent": layer.stats.rtx_sent,
                }
                for layer in self.layers
            ],
            "uplink": None
            if self.uplink is None
            else {
                "active_layers": self.uplink.active,
                "changes": [[round(t, 3), n] for t, n in self.uplink.changes],
            },
            "rtcp": {
                "plis": c.plis,
                "firs": c.firs,
                "nacks": c.nacks,
                "rembs": c.rembs,
                "last_remb_bps": c.last_remb_bps,
                "unknown_ssrc": c.unknown_ssrc,
            },
        }
