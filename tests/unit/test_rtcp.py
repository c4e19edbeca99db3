"""Parley's own RTCP builders, checked against aiortc's parser."""

from __future__ import annotations

from aiortc.rtp import RtcpPacket, RtcpRtpfbPacket
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.rtcp import build_nack, normalize_lost, parse_rtcp


def _parse_nack(data: bytes) -> RtcpRtpfbPacket:
    (packet,) = RtcpPacket.parse(data)
    assert isinstance(packet, RtcpRtpfbPacket) and packet.fmt == 1
    return packet


def test_nack_across_wraparound() -> None:
    packet = _parse_nack(build_nack(1, 2, [65534, 65535, 0, 1]))
    assert packet.ssrc == 1 and packet.media_ssrc == 2
    assert normalize_lost(packet.lost) == [65534, 65535, 0, 1]


def test_nack_spanning_several_items() -> None:
    seqs = [10, 11, 30, 100, 116, 117]
    packet = _parse_nack(build_nack(7, 8, seqs))
    assert normalize_lost(packet.lost) == seqs


@given(st.integers(0, 65535), st.lists(st.integers(0, 300), min_size=1, max_size=40, unique=True))
def test_nack_round_trip(base: int, offsets: list[int]) -> None:
    seqs = [(base + o) & 0xFFFF for o in sorted(offsets)]
    packet = _parse_nack(build_nack(3, 4, seqs))
    assert sorted(normalize_lost(packet.lost)) == sorted(seqs)


@given(st.binary(max_size=200))
def test_parse_rtcp_never_raises(data: bytes) -> None:
    assert isinstance(parse_rtcp(data), list)


def test_parse_rtcp_on_truncated_packets() -> None:
    good = build_nack(1, 2, [5, 6])
    assert len(parse_rtcp(good)) == 1
    for cut in range(1, len(good)):
        assert isinstance(parse_rtcp(good[:cut]), list)
