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

import re
from collections.abc import Mapping

from aiortc import RTCRtpCodecCapability, RTCRtpSender, RTCRtpTransceiver

from .forwarder import Forwarder
from .sdp import split_sections
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


_RTPMAP_H264 = re.compile(r"^a=rtpmap:(\d+) H264/", re.IGNORECASE)
_FMTP = re.compile(r"^a=fmtp:(\d+) (.*)$")


def _h264_fmtp(lines: list[str]) -> dict[str, str]:
    """pt -> fmtp value of each H.264 payload type of one m-section."""
    pts = {m.group(1) for line in lines if (m := _RTPMAP_H264.match(line))}
    return {
        m.group(1): m.group(2) for line in lines if (m := _FMTP.match(line)) and m.group(1) in pts
    }


def complete_h264_answer(answer_sdp: str, offer_sdp: str) -> str:
    """The subscriber's answer with ``profile-level-id`` filled in where an H.264 fmtp
    omits it (GStreamer webrtcbin 1.22 answers ``packetization-mode=1;
    level-asymmetry-allowed=1`` only).

    RFC 6184 §8.1: without profile-level-id a receiver takes the Baseline profile,
    which decodes the Baseline and Constrained Baseline streams Parley offers; aiortc
    would read the absence as Constrained Baseline and refuse the answer to a Baseline
    (42001f) offer. The offer's value for that payload type is written in. Line
    endings kept; answers without such an fmtp are returned unchanged."""
    _, _, offer_sections = split_sections(offer_sdp)
    offered: dict[str, dict[str, str]] = {}
    for lines in offer_sections:
        mid = next((line[6:].strip() for line in lines if line.startswith("a=mid:")), "")
        offered[mid] = _h264_fmtp(lines)
    newline, session, sections = split_sections(answer_sdp)
    out = list(session)
    for lines in sections:
        mid = next((line[6:].strip() for line in lines if line.startswith("a=mid:")), "")
        ours = offered.get(mid, {})
        answered = _h264_fmtp(lines)
        for line in lines:
            m = _FMTP.match(line)
            if m and m.group(1) in answered and "profile-level-id" not in m.group(2):
                theirs = dict(
                    p.split("=", 1) for p in ours.get(m.group(1), "").split(";") if "=" in p
                )
                if "profile-level-id" in theirs:
                    line = f"{line};profile-level-id={theirs['profile-level-id']}"
            out.append(line)
    return newline.join(out)
