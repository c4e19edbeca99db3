"""What a subscriber's m-line negotiated, as its forwarder writes packets for it."""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from .rtp.extensions import ABS_SEND_TIME_URI, MID_URI, TRANSPORT_CC_URI

_EXT_HDR = Struct("!HH")


def element(ext_id: int, value_len: int) -> int:
    """The one-byte header of a one-byte-header extension element (RFC 8285)."""
    return (ext_id << 4) | (value_len - 1)


@dataclass(frozen=True, slots=True)
class EgressParams:
    """What the subscriber's m-line negotiated."""

    mid: str
    payload_type: int
    ssrc: int
    rtx_payload_type: int | None
    rtx_ssrc: int | None
    extensions: dict[str, int]
    #: the RED payload type the subscriber accepted (RFC 2198, Opus inside), or None:
    #: RED from the publisher is then stripped to its primary block (sfu/rtp/red.py)
    red_payload_type: int | None = None

    def extension_layout(self, with_level: bool) -> tuple[bytes, bytes]:
        """The fixed part of the subscriber leg's extension block (its header, the
        transport-cc placeholder, MID) and its padding, for packets with or without the
        audio level element (2 bytes) that comes after them, then abs-send-time (4 bytes).

        transport-cc comes first in every packet's block: a placeholder the subscriber's
        egress fills with the transport-wide sequence number at send time."""
        mid = self.mid.encode()
        mid_id = self.extensions.get(MID_URI, 0)
        twcc_id = self.extensions.get(TRANSPORT_CC_URI, 0)
        fixed = bytes((element(twcc_id, 2), 0, 0)) if twcc_id else b""
        if mid_id and mid:
            fixed += bytes((element(mid_id, len(mid)),)) + mid
        ast = 4 if self.extensions.get(ABS_SEND_TIME_URI, 0) else 0
        size = len(fixed) + (2 if with_level else 0) + ast
        pad = -size % 4
        return _EXT_HDR.pack(0xBEDE, (size + pad) >> 2) + fixed, b"\x00" * pad
