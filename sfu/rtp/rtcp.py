"""RTCP packets Parley builds itself (aiortc's builders assume no sequence wraparound)."""

from __future__ import annotations

import struct
from struct import pack

from aiortc.rtp import AnyRtcpPacket, RtcpPacket

from ..nack import pack_nack_items
from .malformed import MalformedLog

RTCP_RTPFB = 205
RTCP_RTPFB_NACK = 1


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """A generic NACK (RFC 4585 §6.2.1) for ``seqs``, correct across 65535 → 0."""
    fci = b"".join(pack("!HH", pid, blp) for pid, blp in pack_nack_items(seqs))
    payload = pack("!LL", sender_ssrc, media_ssrc) + fci
    return pack("!BBH", 0x80 | RTCP_RTPFB_NACK, RTCP_RTPFB, len(payload) // 4) + payload


def normalize_lost(lost: list[int]) -> list[int]:
    """aiortc's NACK parser can return values above 65535 (pid + offset): wrap them."""
    return [seq & 0xFFFF for seq in lost]


def parse_rtcp(data: bytes) -> list[AnyRtcpPacket]:
    """A compound RTCP packet parsed with aiortc's parser; [] when it is malformed."""
    return parse_rtcp_checked(data)[0]


RTCP_RTPFB_TRANSPORT_CC = 15


def without_transport_feedback(data: bytes) -> bytes:
    """``data`` less its transport-cc feedback packets (RTPFB FMT 15), which aiortc's
    parser reads as a malformed NACK (their padding makes it refuse the whole compound):
    ``sfu/rtp/twcc.py`` parses them. A compound whose length fields do not add up is
    returned as it is (the parser says why it is malformed)."""
    pos = 0
    kept: list[bytes] = []
    dropped = False
    while pos + 4 <= len(data):
        end = pos + 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data):
            return data
        if data[pos + 1] == RTCP_RTPFB and data[pos] & 0x1F == RTCP_RTPFB_TRANSPORT_CC:
            dropped = True
        else:
            kept.append(data[pos:end])
        pos = end
    if not dropped or pos != len(data):
        return data
    return b"".join(kept)


def parse_rtcp_checked(data: bytes) -> tuple[list[AnyRtcpPacket], str | None]:
    """A compound RTCP packet parsed with aiortc's parser, and None; or ``[]`` and why
    it is malformed (the whole compound is dropped, as RFC 3550 §6.1 wants). Its
    transport-cc feedback is left out (``without_transport_feedback``)."""
    data = without_transport_feedback(data)
    if not data:
        return [], None
    try:
        return RtcpPacket.parse(data), None
    except (ValueError, IndexError, struct.error) as exc:
        return [], str(exc)[:80] or type(exc).__name__


def parse_rtcp_counted(
    data: bytes, now: float, counters: dict[str, int], log: MalformedLog
) -> list[AnyRtcpPacket]:
    """A compound RTCP packet's parts; a malformed one is dropped, counted in
    ``counters["rtcp_malformed"]`` and ``log``."""
    packets, reason = parse_rtcp_checked(data)
    if reason is not None:
        counters["rtcp_malformed"] += 1
        log.add("rtcp", reason, now)
    return packets
