"""What aiortc negotiated for an m-line, and aiortc's receivers and senders kept idle:
no decoder thread, no RTP loop, no RTCP task; Parley forwards and does RTCP itself
(part of the aiortc adapter: private API)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import RtpPacket


@dataclass(slots=True)
class NegotiatedRtp:
    """What one m-line negotiated, as Parley needs it for forwarding."""

    mid: str
    kind: str
    codecs: list[RTCRtpCodecParameters]
    #: extension URI -> id
    extensions: dict[str, int]
    #: SSRCs announced by the remote (receive side) with their RTX SSRC, if any.
    ssrcs: list[tuple[int, int | None]]
    cname: str | None = None

    @property
    def primary_codec(self) -> RTCRtpCodecParameters:
        return self.codecs[0]

    def rtx_payload_type(self, apt: int) -> int | None:
        for codec in self.codecs:
            if codec.mimeType.lower().endswith("/rtx") and codec.parameters.get("apt") == apt:
                return codec.payloadType
        return None


def _negotiated(
    kind: str, parameters: RTCRtpParameters, ssrcs: list[tuple[int, int | None]]
) -> NegotiatedRtp:
    return NegotiatedRtp(
        mid=parameters.muxId,
        kind=kind,
        codecs=list(parameters.codecs),
        extensions={ext.uri: ext.id for ext in parameters.headerExtensions},
        ssrcs=ssrcs,
        cname=getattr(getattr(parameters, "rtcp", None), "cname", None),
    )


def hook_receiver(receiver: RTCRtpReceiver, on_parameters: Callable[[NegotiatedRtp], None]) -> None:
    """Keep ``receiver`` from starting its decoder thread and RTCP task.

    ``on_parameters`` is called with what was negotiated each time aiortc would have
    started (or restarted) the receiver.
    """
    kind = receiver.track.kind if receiver.track is not None else "audio"

    async def receive(parameters: Any) -> None:
        ssrcs = [
            (e.ssrc, e.rtx.ssrc if e.rtx is not None else None)
            for e in parameters.encodings
            if e.ssrc is not None
        ]
        on_parameters(_negotiated(kind, parameters, ssrcs))

    receiver.receive = receive  # type: ignore[method-assign]
    release_receiver_state(receiver)


def release_receiver_state(receiver: RTCRtpReceiver) -> None:
    """Drop what an idle ``receiver`` (hooked, or a send-only transceiver's) never uses:
    aiortc's REMB estimator (a 1000-bucket rate counter, about 100 kB per video
    receiver) and NACK generator. Parley reads the packets itself; aiortc only looks at
    these for packets it handles, and they are ``None`` for audio receivers already."""
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__nack_generator = None  # type: ignore[attr-defined]


def observe_received_rtp(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> None:
    """Call ``on_packet`` with every RTP packet ``receiver`` is handed, before aiortc's
    jitter buffer (a receiving peer that decodes: the bot). Duplicates and
    retransmissions (still RTX-wrapped) are seen as they arrive."""
    handle = receiver._handle_rtp_packet

    async def observed(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_packet(packet)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = observed  # type: ignore[method-assign]


def hook_sender(sender: RTCRtpSender, on_parameters: Callable[[NegotiatedRtp], None]) -> None:
    """Keep a track-less ``sender`` from starting its RTP and RTCP loops."""

    async def send(parameters: Any) -> None:
        on_parameters(_negotiated(sender.kind, parameters, [(sender._ssrc, sender._rtx_ssrc)]))

    sender.send = send  # type: ignore[method-assign]


def set_opus_bitrate(sender: RTCRtpSender, bitrate: int) -> None:
    """Have an audio ``sender`` encode Opus at ``bitrate`` bit/s: aiortc's encoder is
    fixed at 96 kbit/s stereo, three times a browser's (Chromium's Opus is about 32
    kbit/s). Call before the sender starts."""
    encoder = OpusEncoder()
    encoder.codec.bit_rate = bitrate
    sender._RTCRtpSender__encoder = encoder  # type: ignore[attr-defined]


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    return sender._ssrc, sender._rtx_ssrc


def set_sender_msid(sender: RTCRtpSender, stream_id: str, track_id: str) -> None:
    """Choose the ``a=msid`` a track-less sender announces."""
    sender._stream_id = stream_id
    sender._track_id = track_id


def restrict_codecs(
    transceiver: RTCRtpTransceiver, allowed: set[str], single: bool = False
) -> bool:
    """Keep only codecs whose mime type is in ``allowed`` (and their RTX); ``single``:
    only the first of them (the offerer's preference), so that the answer names one
    codec and payload type, the one the SFU forwards.

    Call after ``setRemoteDescription`` of an offer and before ``createAnswer``.
    Returns False when nothing acceptable is left.
    """
    kept_pts: set[int] = set()
    kept: list[RTCRtpCodecParameters] = []
    for codec in transceiver._codecs:
        if codec.mimeType.lower() in allowed and not (single and kept):
            kept.append(codec)
            if codec.payloadType is not None:
                kept_pts.add(codec.payloadType)
    for codec in transceiver._codecs:
        if codec.mimeType.lower().endswith("/rtx") and codec.parameters.get("apt") in kept_pts:
            kept.append(codec)
    if not kept:
        return False
    transceiver._codecs = kept
    return True


def add_header_extensions(transceiver: RTCRtpTransceiver, extensions: dict[str, int]) -> None:
    """Negotiate header extensions aiortc does not know (``uri -> id`` from the offer).

    aiortc answers only the extensions in its global ``codecs.HEADER_EXTENSIONS``;
    simulcast needs rtp-stream-id and repaired-rtp-stream-id too. Call after
    ``setRemoteDescription`` of the offer and before ``createAnswer``; affects only
    this transceiver. Ids already used by another extension are skipped.
    """
    current = transceiver._headerExtensions
    used_ids = {ext.id for ext in current}
    used_uris = {ext.uri for ext in current}
    for uri, ext_id in extensions.items():
        if uri in used_uris or ext_id in used_ids:
            continue
        current.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))
        used_ids.add(ext_id)
        used_uris.add(uri)


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiated for ``transceiver`` (after setRemoteDescription)."""
    return list(transceiver._codecs)
