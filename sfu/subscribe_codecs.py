"""Which codec a subscriber m-line offers for a track: the codec its publisher sends.

Parley forwards what a publisher sends without transcoding, so each subscriber m-line
offers exactly the track's codec (and RTX): a room may mix codecs per track (a VP8
camera beside an H.264 one), each subscriber's offer carrying the codec of each track.
For H.264 the offer keeps the format parameters the publisher negotiated
(profile-level-id and packetization-mode=1; aiortc's list has constrained baseline
42e01f and baseline 42001f); a subscriber that cannot take them rejects that m-line and
gets nothing of that track.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiortc import RTCRtpCodecCapability, RTCRtpSender, RTCRtpTransceiver

from .forwarder import Forwarder
from .source import SourceParams
from .tracks import PublishedTrack


def codec_preferences(kind: str, params: SourceParams) -> list[RTCRtpCodecCapability]:
    """The capabilities (for ``setCodecPreferences``) of a new m-line sending a track
    published with ``params``: its codec with its format parameters, then RTX."""
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    wanted = f"{kind}/{params.codec}".lower()
    same = [c for c in capabilities if c.mimeType.lower() == wanted]
    fmtp = dict(params.fmtp)
    exact = [c for c in same if {k: str(v) for k, v in c.parameters.items()} == fmtp]
    rtx = [c for c in capabilities if c.mimeType.lower() == f"{kind}/rtx"]
    return (exact or same) + rtx


def same_codec(a: SourceParams, b: SourceParams) -> bool:
    """Whether an m-line negotiated for a track published with ``a`` can carry one
    published with ``b`` (m-line reuse): the same codec and format parameters."""
    return (a.codec, a.fmtp) == (b.codec, b.fmtp)


def reusable(
    transceiver: RTCRtpTransceiver,
    kind: str,
    previous: Mapping[RTCRtpTransceiver, Forwarder],
    track: PublishedTrack,
) -> bool:
    """Whether an inactive m-line (its last forwarder in ``previous``) may carry
    ``track``: negotiated (it has a mid), of the track's kind, for the track's codec."""
    last = previous.get(transceiver)
    if transceiver.kind != kind or transceiver.mid is None or last is None:
        return False
    return same_codec(last.source.params, track.source.params)
