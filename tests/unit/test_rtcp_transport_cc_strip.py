"""Transport-cc feedback in a compound must not make the rest of it unreadable."""

from __future__ import annotations

from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket

from sfu.rtp.rtcp import build_nack, parse_rtcp_checked, without_transport_feedback
from sfu.rtp.twcc import build_transport_feedback


def _rr() -> bytes:
    info = RtcpReceiverInfo(
        ssrc=7, fraction_lost=0, packets_lost=0, highest_sequence=10, jitter=0, lsr=0, dlsr=0
    )
    return bytes(RtcpRrPacket(ssrc=1, reports=[info]))


def test_a_compound_with_transport_feedback_keeps_its_receiver_report_and_nack() -> None:
    feedback = build_transport_feedback(100, [0.0, None, 0.01], 3)
    compound = _rr() + feedback + build_nack(1, 7, [5])
    packets, reason = parse_rtcp_checked(compound)
    assert reason is None
    assert isinstance(packets[0], RtcpRrPacket) and packets[0].reports[0].ssrc == 7
    assert isinstance(packets[1], RtcpRtpfbPacket) and packets[1].lost == [5]
    assert len(packets) == 2


def test_feedback_alone_parses_to_nothing_and_is_not_malformed() -> None:
    feedback = build_transport_feedback(100, [0.0, 0.005], 0)
    assert parse_rtcp_checked(feedback) == ([], None)


def test_a_compound_whose_lengths_do_not_add_up_is_left_to_the_parser() -> None:
    broken = _rr()[:-4]
    assert without_transport_feedback(broken) == broken
    assert parse_rtcp_checked(broken)[1] is not None


def _padded(feedback: bytes) -> bytes:
    """The feedback with 4 bytes of RTCP padding, as Chromium sends it."""
    words = int.from_bytes(feedback[2:4], "big") + 1
    return (
        bytes((feedback[0] | 0x20, feedback[1]))
        + words.to_bytes(2, "big")
        + feedback[4:]
        + b"\x00\x00\x00\x04"
    )


def test_padded_feedback_as_chromium_sends_it_does_not_drop_the_compound() -> None:
    compound = _rr() + _padded(build_transport_feedback(100, [0.0, None, 0.01], 3))
    packets, reason = parse_rtcp_checked(compound)
    assert reason is None
    assert len(packets) == 1 and isinstance(packets[0], RtcpRrPacket)
