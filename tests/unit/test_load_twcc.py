"""Transport-cc feedback of the lean load subscribers (loadgen.load.twcc), checked by a
small independent decoder written from draft-holmer-rmcat-transport-wide-cc-extensions-01
section 3.1, and against hand-computed bytes."""

from __future__ import annotations

import struct

import pytest

from loadgen.load.twcc import (
    TransportFeedback,
    answer_transport_cc,
    encode_chunks,
    offered_transport_cc,
    transport_sequence,
)
from sfu.rtp.extensions import TRANSPORT_CC_URI


def decode(packet: bytes) -> tuple[int, int, int, int, list[tuple[int, int | None]]]:
    """(sender SSRC, media SSRC, reference time, fb count, [(seq, arrival in 250 us
    units or None)]) of one transport-cc feedback packet."""
    first, pt, words = struct.unpack_from("!BBH", packet)
    assert first >> 6 == 2 and first & 0x1F == 15 and pt == 205
    assert len(packet) == 4 * (words + 1)
    end = len(packet) - (packet[-1] if first & 0x20 else 0)
    sender, media, base, count, ref_fb = struct.unpack_from("!IIHHI", packet, 4)
    ref, fb_count = ref_fb >> 8, ref_fb & 0xFF
    if ref & 0x800000:
        ref -= 1 << 24
    pos = 20
    symbols: list[int] = []
    while len(symbols) < count:
        (chunk,) = struct.unpack_from("!H", packet, pos)
        pos += 2
        if not chunk & 0x8000:  # run length
            symbols += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif not chunk & 0x4000:  # fourteen 1-bit symbols
            symbols += [(chunk >> (13 - k)) & 1 for k in range(14)]
        else:  # seven 2-bit symbols
            symbols += [(chunk >> (2 * (6 - k))) & 3 for k in range(7)]
    symbols = symbols[:count]
    time = ref * 256
    out: list[tuple[int, int | None]] = []
    for i, symbol in enumerate(symbols):
        seq = (base + i) & 0xFFFF
        if symbol == 0:
            out.append((seq, None))
            continue
        if symbol == 1:
            delta = packet[pos]
            pos += 1
        else:
            assert symbol == 2
            (delta,) = struct.unpack_from("!h", packet, pos)
            pos += 2
        time += delta
        out.append((seq, time))
    assert pos <= end and not any(packet[pos:end])  # nothing after the deltas but padding
    return sender, media, ref, fb_count, out


def test_one_packet_by_hand() -> None:
    fb = TransportFeedback(own_ssrc=0x01020304)
    fb.on_packet(1, 0x0A0B0C0D, 0.065)  # 260 units of 250 us: reference 1 (64 ms), delta 4
    (packet,) = fb.feedback()
    assert packet == bytes.fromhex(
        "af cd 0005"  # V=2, P (1 byte of padding), FMT 15; PT 205; 6 words
        "01020304 0a0b0c0d"  # sender, media source
        "0001 0001"  # base sequence number, status count
        "000001 00"  # reference time 1, feedback packet count 0
        "2001"  # run length chunk: 1 x "received, small delta"
        "04"  # the delta
        "01"  # padding: its count
    )
    assert fb.feedback() == []  # nothing new


def test_arrivals_losses_large_and_negative_deltas_round_trip() -> None:
    fb = TransportFeedback(own_ssrc=7)
    arrivals = {100: 10.0, 101: 10.0012, 102: 10.0101, 103: 10.2, 105: 10.1995, 106: 10.21}
    for seq, at in arrivals.items():  # 104 lost; 105 arrived before 103 (reordered)
        fb.on_packet(seq, 99, at)
    (packet,) = fb.feedback()
    sender, media, ref, count, statuses = decode(packet)
    assert (sender, media, count) == (7, 99, 0)
    assert [s for s, _ in statuses] == list(range(100, 107))
    got = dict(statuses)
    assert got[104] is None
    for seq, at in arrivals.items():
        units = got[seq]
        assert units is not None and abs(units * 0.00025 - at) <= 0.000125 + 1e-9
    # the next feedback starts after what this one reported, and counts on
    fb.on_packet(107, 99, 10.3)
    fb.on_packet(103, 99, 10.31)  # already reported: not again
    (packet,) = fb.feedback()
    _, _, _, count, statuses = decode(packet)
    assert count == 1 and [s for s, _ in statuses] == [107]


def test_sequence_numbers_wrap_and_long_losses_use_run_lengths() -> None:
    fb = TransportFeedback(own_ssrc=7)
    for i, seq in enumerate([65534, 65535, 0, 1]):
        fb.on_packet(seq, 1, 1.0 + i * 0.001)
    fb.on_packet(40, 1, 1.01)  # 2..39 lost: 38 in a row
    (packet,) = fb.feedback()
    _, _, _, _, statuses = decode(packet)
    assert [s for s, _ in statuses] == [65534, 65535, *range(0, 41)]
    assert [s for s, t in statuses if t is None] == list(range(2, 40))
    assert len(packet) < 40  # the 38 losses took one run length chunk


def test_a_gap_longer_than_a_two_byte_delta_starts_a_new_packet() -> None:
    fb = TransportFeedback(own_ssrc=7)
    fb.on_packet(1, 1, 1.0)
    fb.on_packet(2, 1, 20.0)  # 19 s later: more than 8.19 s of 250 us units
    first, second = fb.feedback()
    assert [s for s, _ in decode(first)[4]] == [1]
    _, _, _, count, statuses = decode(second)
    assert count == 1 and statuses[0][0] == 2
    assert statuses[0][1] is not None and abs(statuses[0][1] * 0.00025 - 20.0) < 0.001


@pytest.mark.parametrize(
    "symbols",
    [
        [1] * 14,
        [1, 0] * 7,
        [2, 1, 0, 2, 1, 1, 1],
        [1, 2],
        [0] * 9000,
        [1, 1, 2, 0, 0, 0, 0, 0, 0, 0],
    ],
)
def test_chunks_decode_to_the_symbols(symbols: list[int]) -> None:
    data = encode_chunks(symbols)
    decoded: list[int] = []
    for (chunk,) in struct.iter_unpack("!H", data):
        if not chunk & 0x8000:
            decoded += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif not chunk & 0x4000:
            decoded += [(chunk >> (13 - k)) & 1 for k in range(14)]
        else:
            decoded += [(chunk >> (2 * (6 - k))) & 3 for k in range(7)]
    assert decoded[: len(symbols)] == symbols
    assert all(s == 0 for s in decoded[len(symbols) :])


def _rtp(ext: bytes, profile: int = 0xBEDE) -> bytes:
    header = struct.pack("!BBHII", 0x90, 96, 1, 0, 1234)
    ext += bytes(-len(ext) % 4)
    return header + struct.pack("!HH", profile, len(ext) // 4) + ext + b"payload"


def test_transport_sequence_from_one_and_two_byte_extensions() -> None:
    # one-byte form: mid (id 1, "0"), then transport-cc (id 3, 2 bytes: 0x1234)
    assert transport_sequence(_rtp(b"\x10\x30" + b"\x31\x12\x34"), 3) == 0x1234
    assert transport_sequence(_rtp(b"\x10\x30"), 3) is None
    # two-byte form
    assert transport_sequence(_rtp(b"\x03\x02\xab\xcd", 0x1000), 3) == 0xABCD
    assert transport_sequence(struct.pack("!BBHII", 0x80, 96, 1, 0, 1), 3) is None


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
    f"a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:5 {TRANSPORT_CC_URI}\r\n"
    "a=rtcp-fb:111 transport-cc\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
    "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
    f"a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:5 {TRANSPORT_CC_URI}\r\n"
    "a=rtcp-fb:96 nack\r\na=rtcp-fb:96 transport-cc\r\n"
)
ANSWER = (
    "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
    "a=rtpmap:97 rtx/90000\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=rtcp-fb:96 nack\r\n"
)


def test_the_answer_keeps_the_offered_extension_and_feedback() -> None:
    offered = offered_transport_cc(OFFER)
    assert offered == {"0": (5, [111]), "1": (5, [96])}
    answer = answer_transport_cc(ANSWER, offered)
    audio, video = answer.split("m=")[1:]
    assert f"a=extmap:5 {TRANSPORT_CC_URI}\r\n" in audio and "a=rtcp-fb:111 transport-cc" in audio
    assert f"a=extmap:5 {TRANSPORT_CC_URI}\r\n" in video and "a=rtcp-fb:96 transport-cc" in video
    assert "97 transport-cc" not in video
    assert answer.endswith("\r\n") and "\r\n\r\n" not in answer
    assert answer_transport_cc(answer, offered) == answer  # idempotent


def test_without_the_extension_in_the_offer_the_answer_is_unchanged() -> None:
    plain = OFFER.replace(f"a=extmap:5 {TRANSPORT_CC_URI}\r\n", "")
    offered = offered_transport_cc(plain)
    assert offered == {}
    assert answer_transport_cc(ANSWER, offered) == ANSWER
