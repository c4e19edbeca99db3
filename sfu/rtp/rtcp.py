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


def parse_rtcp_checked(data: bytes) -> tuple[list[AnyRtcpPacket], str | None]:
    """A compound RTCP packet parsed with aiortc's parser, and None; or ``[]`` and why
    it is malformed (the whole compound is dropped, as RFC 3550 §6.1 wants)."""
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
