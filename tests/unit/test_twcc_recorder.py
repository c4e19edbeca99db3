"""The receive-side transport-cc recorder (loadgen.media.twcc) that ``parley load``'s lean
subscribers and ``parley bot`` use: its feedback checked by a small independent decoder
written from draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1, by the SFU's
own parser (sfu.rtp.twcc), and against hand-computed bytes; and sfu.sdp.keep_transport_cc,
which keeps the offered lines in an aiortc answer."""

from __future__ import annotations

import random
import struct

import pytest

from loadgen.media.twcc import MAX_STATUS, TransportCcRecorder, transport_sequence
from sfu.rtp.extensions import TRANSPORT_CC_URI
from sfu.rtp.twcc import REFERENCE_UNIT, parse_transport_feedback
from sfu.sdp import answer_transport_cc, keep_transport_cc


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
    fb = TransportCcRecorder(own_ssrc=0x01020304)
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
    fb = TransportCcRecorder(own_ssrc=7)
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
    fb = TransportCcRecorder(own_ssrc=7)
    for i, seq in enumerate([65534, 65535, 0, 1]):
        fb.on_packet(seq, 1, 1.0 + i * 0.001)
    fb.on_packet(40, 1, 1.01)  # 2..39 lost: 38 in a row
    (packet,) = fb.feedback()
    _, _, _, _, statuses = decode(packet)
    assert [s for s, _ in statuses] == [65534, 65535, *range(0, 41)]
    assert [s for s, t in statuses if t is None] == list(range(2, 40))
    assert len(packet) < 40  # the 38 losses took one run length chunk


def test_a_gap_longer_than_a_two_byte_delta_starts_a_new_packet() -> None:
    fb = TransportCcRecorder(own_ssrc=7)
    fb.on_packet(1, 1, 1.0)
    fb.on_packet(2, 1, 20.0)  # 19 s later: more than 8.19 s of 250 us units
    first, second = fb.feedback()
    assert [s for s, _ in decode(first)[4]] == [1]
    _, _, _, count, statuses = decode(second)
    assert count == 1 and statuses[0][0] == 2
    assert statuses[0][1] is not None and abs(statuses[0][1] * 0.00025 - 20.0) < 0.001


def _parsed(packets: list[bytes]) -> dict[int, float | None]:
    """seq -> arrival of feedback packets read by the SFU's parser (later ones win)."""
    out: dict[int, float | None] = {}
    for packet in packets:
        fb = parse_transport_feedback(packet)
        for i, arrival in enumerate(fb.arrivals):
            out[(fb.base_seq + i) & 0xFFFF] = arrival
    return out


def test_the_sfu_parser_reads_what_was_recorded_across_the_wrap() -> None:
    rng = random.Random(5)
    fb = TransportCcRecorder(own_ssrc=7)
    sent: dict[int, float] = {}
    packets: list[bytes] = []
    t = 100.0
    for n in range(3000):
        seq = (64000 + n) & 0xFFFF
        t += rng.choice([0.0, 0.0005, 0.003, 0.02, 0.09])
        if rng.random() < 0.1:
            continue  # lost
        sent[seq] = t
        fb.on_packet(seq, 42, t)
        packets += fb.poll(t)
    packets += fb.feedback()
    got = _parsed(packets)
    assert [parse_transport_feedback(p).fb_count for p in packets] == [
        i & 0xFF for i in range(len(packets))
    ]
    assert 20 < len(packets) < 3000 // 5  # about one per 100 ms, not one per packet
    for seq, at in sent.items():
        arrival = got[seq]
        assert arrival is not None and arrival == pytest.approx(at, abs=0.000126)
    assert all(got[seq] is None for seq in got if seq not in sent)
    assert fb.packets_reported == len(sent) and fb.feedback_sent == len(packets)
    padded = 0
    for packet in packets:  # libwebrtc's framing: 32-bit aligned, padding as RTCP padding
        assert len(packet) % 4 == 0
        if packet[0] & 0x20:
            padded += 1
            assert 1 <= packet[-1] <= 3 and not any(packet[len(packet) - packet[-1] : -1])
        assert decode(packet)[3] == parse_transport_feedback(packet).fb_count
    assert 0 < padded < len(packets)


def test_poll_sends_every_interval_and_only_what_is_new() -> None:
    fb = TransportCcRecorder(own_ssrc=7, interval=0.1)
    assert fb.poll(0.0) == []  # nothing received yet
    fb.on_packet(1, 9, 0.01)
    assert len(fb.poll(0.01)) == 1
    fb.on_packet(2, 9, 0.05)
    assert fb.poll(0.05) == [] and not fb.due(0.109)
    (packet,) = fb.poll(0.11)
    assert parse_transport_feedback(packet).base_seq == 2
    assert fb.poll(0.3) == []  # due, but nothing new


def test_reference_time_of_a_clock_past_2_to_the_23_ticks() -> None:
    """A monotonic clock of more than 6.2 days: the 24-bit reference time wraps, the
    deltas stay small (written modulo 2^24, read back by the SFU's unwrapping parser)."""
    fb = TransportCcRecorder(own_ssrc=7)
    now = 600_000.0  # s: 9.4 million 64 ms ticks
    fb.on_packet(5, 9, now)
    fb.on_packet(6, 9, now + 0.004)
    (packet,) = fb.feedback()
    parsed = parse_transport_feedback(packet)
    assert parsed.reference_ticks == int(now // REFERENCE_UNIT) & 0xFFFFFF
    period = (1 << 24) * REFERENCE_UNIT
    first, second = parsed.arrivals
    assert first is not None and second is not None
    assert (first - now) % period == pytest.approx(0.0, abs=0.001)
    assert second - first == pytest.approx(0.004)


def test_more_than_max_status_numbers_go_in_several_packets() -> None:
    fb = TransportCcRecorder(own_ssrc=7)
    for seq in range(2 * MAX_STATUS + 500):
        fb.on_packet(seq, 9, 1.0 + seq * 0.0001)
    packets = fb.feedback()
    counts = [len(parse_transport_feedback(p).arrivals) for p in packets]
    assert counts == [MAX_STATUS, MAX_STATUS, 500]
    assert [parse_transport_feedback(p).base_seq for p in packets] == [0, 1000, 2000]


def test_on_rtp_records_packets_with_the_extension_only() -> None:
    fb = TransportCcRecorder(own_ssrc=7)
    assert fb.on_rtp(_rtp(b"\x31\x12\x34"), 3, 1.0)
    assert not fb.on_rtp(_rtp(b"\x10\x30"), 3, 1.0)
    assert fb.packets_recorded == 1 and fb.media_ssrc == 1234
    (packet,) = fb.feedback()
    assert parse_transport_feedback(packet).base_seq == 0x1234


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
    answer = keep_transport_cc(ANSWER, OFFER)
    audio, video = answer.split("m=")[1:]
    assert f"a=extmap:5 {TRANSPORT_CC_URI}\r\n" in audio and "a=rtcp-fb:111 transport-cc" in audio
    assert f"a=extmap:5 {TRANSPORT_CC_URI}\r\n" in video and "a=rtcp-fb:96 transport-cc" in video
    assert "97 transport-cc" not in video
    assert answer.endswith("\r\n") and "\r\n\r\n" not in answer
    assert keep_transport_cc(answer, OFFER) == answer  # idempotent
    assert answer_transport_cc(answer) == 5  # what the SFU reads of it
    assert answer_transport_cc(ANSWER) is None


def test_only_the_payload_types_the_offer_asked_feedback_for() -> None:
    offer = OFFER.replace("a=rtcp-fb:111 transport-cc\r\n", "")
    answer = keep_transport_cc(ANSWER, offer)
    audio, video = answer.split("m=")[1:]
    assert TRANSPORT_CC_URI in audio and "transport-cc" not in audio.replace(TRANSPORT_CC_URI, "")
    assert "a=rtcp-fb:96 transport-cc" in video


def test_without_the_extension_in_the_offer_the_answer_is_unchanged() -> None:
    plain = OFFER.replace(f"a=extmap:5 {TRANSPORT_CC_URI}\r\n", "")
    assert keep_transport_cc(ANSWER, plain) == ANSWER
