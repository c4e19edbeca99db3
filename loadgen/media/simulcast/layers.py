"""The simulcast layers (:class:`LayerSpec`, Chromium's three by default) and the header
extension URIs and RTCP constants the other modules share."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sfu.rtp.extensions import ABS_SEND_TIME_URI as URI_ABS_SEND_TIME
from sfu.rtp.extensions import MID_URI as URI_MID
from sfu.rtp.extensions import REPAIRED_RID_URI as URI_REPAIRED_RID
from sfu.rtp.extensions import RID_URI as URI_RID

__all__ = ["URI_ABS_SEND_TIME", "URI_MID", "URI_REPAIRED_RID", "URI_RID"]

#: Largest VP8 payload (descriptor included) per RTP packet.
MAX_PAYLOAD = 1200
#: Packets kept per layer for NACK answers (about 2 s of the 720p layer at 15 fps).
CACHE_PACKETS = 512
#: libvpx ``cpu-used`` for the realtime deadline: 16 is its fastest setting.
VP8_CPU_USED = 16

#: Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
NTP_EPOCH_OFFSET = 2_208_988_800

EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\S+)? (\S+)")
PSFB_PLI = 1
PSFB_FIR = 4
PSFB_REMB = 15
RTPFB_NACK = 1


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One simulcast encoding: its RID, size and target bitrate (bits per second)."""

    rid: str
    width: int
    height: int
    bitrate: int


#: Chromium's three-layer shape for a 720p camera (scale 4, 2, 1).
DEFAULT_LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec("q", 320, 180, 150_000),
    LayerSpec("h", 640, 360, 500_000),
    LayerSpec("f", 1280, 720, 1_500_000),
)
