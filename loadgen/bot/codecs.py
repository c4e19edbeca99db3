"""The bot's video codec (``parley bot --codec``) and what each subscribe m-line decodes.

aiortc encodes VP8 (libvpx) and H.264 (PyAV's libx264, packetization-mode 1,
constrained baseline or baseline); the bot publishes the one chosen, offering only it.
"""

from __future__ import annotations

import re

from aiortc import RTCRtpCodecCapability, RTCRtpSender

#: ``--codec`` values and their mime types
VIDEO_CODECS = {"vp8": "video/vp8", "h264": "video/h264"}
_RTPMAP = re.compile(r"^a=rtpmap:\d+ ([^/\s]+)/")


def video_codecs(codec: str) -> list[RTCRtpCodecCapability]:
    """The capabilities to offer for publishing ``codec`` ("vp8" | "h264"), then RTX."""
    mime = VIDEO_CODECS[codec]
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in capabilities if c.mimeType.lower() in (mime, "video/rtx")]


def answer_codecs(sdp: str) -> dict[str, str]:
    """mid -> the first codec (lower case, "vp8", "h264", "opus") of each m-section of
    an SDP that has both."""
    out: dict[str, str] = {}
    mid = codec = None
    for line in [*sdp.splitlines(), "m="]:
        line = line.strip()
        if line.startswith("m="):
            if mid is not None and codec is not None:
                out[mid] = codec
            mid = codec = None
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif codec is None and (match := _RTPMAP.match(line)):
            codec = match.group(1).lower()
    return out
