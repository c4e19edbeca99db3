"""sfu/rtp/twcc.py: transport-cc feedback read from known bytes, written and read back,
found in compounds, and malformed input refused with TwccError (never another error)."""

from __future__ import annotations

import random

import pytest

from sfu.rtp.twcc import (
    DELTA_UNIT,
    REFERENCE_UNIT,
    TransportFeedback,
    TwccError,
    build_feedback_prefix,
    build_transport_feedback,
    find_transport_feedback,
    parse_transport_feedback,
)

# A Chrome packet as Wireshark dissects it (P bit set, 1 byte of RTCP padding): base 1,
# 9 packets in one run-length chunk (small deltas 7, 3, 11, 14, 0, 1, 0, 2, 6 ms),
# reference time 6197520, feedback count 0.
WIRESHARK = bytes.fromhex("afcd000700000001dd586eb6000100095e91100020091c0c2c38000400081801")
# pion/rtcp's (and webrtc-rs's) unmarshal examples
PION_1 = bytes.fromhex("afcd0005fa17fa17430 32fa0009900013de802172001940 1".replace(" ", ""))
PION_3 = bytes.fromhex("afcd0007fa17fa17193dd8bb0174000645b15a40400220041ffe1f9ad000d000")
PION_4 = bytes.fromhex(
    "afcd0007fa17fa17193dd8bb00040007 10636e01 20074c242410 0c0c1000 0003".replace(" ", "")
)
PION_5 = bytes.fromhex("afcd0006fa17fa17193dd8bb0001000e10636d00ba00100c0c100003")
# pion's example 2 uses status symbol 3, which the draft reserves (libwebrtc refuses it)
PION_2 = bytes.fromhex("afcd0006fa17fa17193dd8bb0174000e45b15a40d800f0ffd0000003")


def times(fb: TransportFeedback) -> list[float | None]:
    """Arrivals relative to the reference time, in ms (None kept)."""
    return [None if a is None else round((a - fb.reference_time) * 1000, 3) for a in fb.arrivals]


def test_wireshark_dissected_chrome_packet() -> None:
    fb = parse_transport_feedback(WIRESHARK)
    assert (fb.sender_ssrc, fb.media_ssrc) == (1, 0xDD586EB6)
    assert (fb.base_seq, fb.fb_count, fb.reference_ticks) == (1, 0, 6197520)
    assert fb.reference_time == pytest.approx(6197520 * 0.064)
    steps = [7, 3, 11, 14, 0, 1, 0, 2, 6]
    assert times(fb) == [float(sum(steps[: i + 1])) for i in range(9)]
    assert fb.received == 9


def test_pion_examples() -> None:
    fb = parse_transport_feedback(PION_1)
    assert (fb.sender_ssrc, fb.media_ssrc) == (4195875351, 1124282272)
    assert (fb.base_seq, fb.reference_ticks, fb.fb_count) == (153, 4057090, 23)
    assert times(fb) == [37.0]

    fb = parse_transport_feedback(PION_3)  # run of 2 large deltas then 4 small
    assert (fb.base_seq, fb.reference_ticks, fb.fb_count) == (372, 4567386, 64)
    assert times(fb) == [2047.5, 2047.5 + 2022.5, 4122.0, 4122.0, 4174.0, 4174.0]

    fb = parse_transport_feedback(PION_4)  # 3 bytes of RTCP padding, count 3
    assert (fb.base_seq, fb.reference_ticks, fb.fb_count) == (4, 1074030, 1)
    assert times(fb) == [19.0, 28.0, 37.0, 41.0, 44.0, 47.0, 51.0]

    fb = parse_transport_feedback(PION_5)  # one-bit status vector 1,1,1,0,1,0...
    assert (fb.base_seq, fb.reference_ticks, fb.fb_count) == (1, 1074029, 0)
    assert times(fb) == [4.0, 7.0, 10.0, None, 14.0] + [None] * 9

    with pytest.raises(TwccError, match="reserved"):
        parse_transport_feedback(PION_2)


def test_negative_reference_time_is_signed_24_bits() -> None:
    data = build_transport_feedback(10, [0.0], fb_count=3, reference_ticks=0xFFFFFF)
    fb = parse_transport_feedback(data)
    assert fb.reference_ticks == 0xFFFFFF
    assert fb.reference_time == pytest.approx(-REFERENCE_UNIT)
    assert fb.arrivals == (pytest.approx(0.0),)


def test_round_trip_mixed_statuses_and_chunk_kinds() -> None:
    rng = random.Random(7)
    for trial in range(200):
        n = rng.randrange(1, 400)
        t = rng.uniform(0, 1000)
        arrivals: list[float | None] = []
        mode = trial % 4
        for i in range(n):
            if mode == 0 and rng.random() < 0.3:
                arrivals.append(None)
                continue
            if mode == 1 and 50 <= i < 120:  # a long loss run: run-length chunks
                arrivals.append(None)
                continue
            step = rng.choice([0.0, 0.001, 0.02, 0.06375, 0.2, -0.005])
            t += step
            arrivals.append(round(t / DELTA_UNIT) * DELTA_UNIT)
        if all(a is None for a in arrivals):
            arrivals[0] = 1.0
        base = rng.randrange(0, 0x10000)
        data = build_transport_feedback(base, arrivals, fb_count=trial & 0xFF)
        assert len(data) % 4 == 0
        fb = parse_transport_feedback(data)
        assert fb.base_seq == base and fb.fb_count == trial & 0xFF
        assert len(fb.arrivals) == n
        for got, want in zip(fb.arrivals, arrivals, strict=True):
            if want is None:
                assert got is None
            else:
                assert got == pytest.approx(want, abs=1e-6)


def test_encoder_uses_each_chunk_kind() -> None:
    def chunk_bytes(arrivals: list[float | None]) -> bytes:
        return build_transport_feedback(0, arrivals, 0, reference_ticks=0)[20:22]

    run = chunk_bytes([0.001 * i for i in range(20)])  # 20 small deltas
    assert run == bytes((0x20, 20))
    one_bit = chunk_bytes([0.0, None, 0.001, None, None, 0.002, 0.003, None, 0.004])
    assert one_bit[0] >> 6 == 0b10
    two_bit = chunk_bytes([0.0, 0.5, None, 0.6])  # a large delta
    assert two_bit[0] >> 6 == 0b11


def _chunk_words(statuses: list[int]) -> list[int]:
    """The packet chunks the builder writes for these statuses (0 lost, 1 small delta,
    2 large delta), after checking that the SFU's parser reads them back."""
    arrivals: list[float | None] = []
    t = 0.0
    for status in statuses:
        if status == 0:
            arrivals.append(None)
            continue
        t += 0.001 if status == 1 else 0.5
        arrivals.append(t)
    data = build_transport_feedback(0, arrivals, 0, reference_ticks=0)
    fb = parse_transport_feedback(data)
    assert [a is not None for a in fb.arrivals] == [s != 0 for s in statuses]
    assert fb.arrivals == tuple(None if a is None else pytest.approx(a) for a in arrivals)
    words: list[int] = []
    pos = 20
    seen = 0
    while seen < len(statuses):
        word = int.from_bytes(data[pos : pos + 2], "big")
        words.append(word)
        pos += 2
        seen += word & 0x1FFF if not word & 0x8000 else (7 if word & 0x4000 else 14)
    return words


def test_chunks_are_chosen_as_libwebrtc_does() -> None:
    """libwebrtc's LastChunk: a chunk grows while one kind can hold it; the last one is a
    run length when all equal, a two-bit vector up to 7 symbols, else a one-bit vector."""
    # 10 lost then a received one: one one-bit vector (not a run of 10, then another)
    (word,) = _chunk_words([0] * 10 + [1])
    assert word >> 14 == 0b10 and word & 0x3FFF == 0b00000000001000
    # a short mixed tail: a two-bit vector
    (word,) = _chunk_words([1, 0, 1])
    assert word == 0xC000 | (1 << 12) | (1 << 8)
    # 7 small deltas then a large one: a run of 7, then a run of 1 large
    assert _chunk_words([1] * 7 + [2]) == [(1 << 13) | 7, (2 << 13) | 1]
    # 14 mixed small/lost fill a one-bit vector; the large after it is a run of 1
    words = _chunk_words([1, 0] * 7 + [2])
    assert words[0] == 0x8000 | 0b10101010101010 and words[1] == (2 << 13) | 1
    # a large delta among 7: a two-bit vector of 7, the rest carried on
    words = _chunk_words([0, 1, 2, 0, 0, 0, 0, 0, 0])
    assert words == [0xC000 | (1 << 10) | (2 << 8), 2]
    # long runs: run-length chunks of at most 8191
    assert _chunk_words([0] * 9000 + [1]) == [8191, 809, (1 << 13) | 1]
    words = _chunk_words([1] * 9000)
    assert words == [(1 << 13) | 8191, (1 << 13) | 809]


def test_prefix_ends_before_a_delta_too_large() -> None:
    arrivals: list[float | None] = [1.0, None, 1.01, 20.0, 20.001]
    packet, reported = build_feedback_prefix(7, arrivals, 4)
    assert reported == 3
    fb = parse_transport_feedback(packet)
    assert fb.base_seq == 7 and fb.arrivals == (pytest.approx(1.0), None, pytest.approx(1.01))
    rest, reported = build_feedback_prefix(10, arrivals[3:], 5)
    assert reported == 2 and parse_transport_feedback(rest).arrivals[1] == pytest.approx(20.001)
    with pytest.raises(ValueError):
        build_transport_feedback(7, arrivals, 4)
    with pytest.raises(ValueError):  # not even the first fits the given reference time
        build_feedback_prefix(0, [20.0], 0, reference_ticks=0)


def test_rtcp_padding_as_libwebrtc_sends_it() -> None:
    plain = build_transport_feedback(1, [0.065], 0, 0x01020304, 0x0A0B0C0D)
    padded = build_transport_feedback(1, [0.065], 0, 0x01020304, 0x0A0B0C0D, rtcp_padding=True)
    assert padded == bytes.fromhex("afcd0005010203040a0b0c0d000100010000010020010401")
    assert plain == bytes((0x8F,)) + padded[1:-1] + b"\x00"
    assert parse_transport_feedback(plain) == parse_transport_feedback(padded)
    aligned = build_transport_feedback(1, [0.065, 0.066], 0, rtcp_padding=True)
    assert not aligned[0] & 0x20 and len(aligned) == 24  # nothing to pad: no P bit


def test_a_clock_past_2_to_the_23_reference_ticks() -> None:
    """A receiver whose monotonic clock passed 6.2 days: the reference time is written
    modulo 2^24 and the deltas stay small."""
    now = 600_000.0
    fb = parse_transport_feedback(build_transport_feedback(0, [now, now + 0.004], 0))
    assert fb.reference_ticks == int(now // REFERENCE_UNIT) & 0xFFFFFF
    first, second = fb.arrivals
    assert first is not None and second is not None and second - first == pytest.approx(0.004)
    assert (first - now) % ((1 << 24) * REFERENCE_UNIT) == pytest.approx(0.0, abs=1e-6)


def test_large_and_negative_deltas() -> None:
    arrivals: list[float | None] = [10.0, 18.19175, 10.0, 10.06375]  # +8191.75 ms, -8191.75
    fb = parse_transport_feedback(build_transport_feedback(0, arrivals, 0))
    assert fb.arrivals == tuple(pytest.approx(a) for a in arrivals)
    with pytest.raises(ValueError):
        build_transport_feedback(0, [10.0, 19.0], 0)  # 9 s: more than 16 bits


def compound(*packets: bytes) -> bytes:
    return b"".join(packets)


RR = bytes.fromhex("81c90007") + bytes(28)  # a receiver report with one block
REMB = bytes.fromhex("8fce0005000000010000000052454d42010f4240deadbeef")


def test_find_in_compound() -> None:
    a = build_transport_feedback(100, [1.0, None, 1.01], fb_count=5)
    b = build_transport_feedback(103, [1.02], fb_count=6)
    found = find_transport_feedback(compound(RR, a, REMB, b))
    assert [(f.base_seq, f.fb_count, len(f.arrivals)) for f in found] == [
        (100, 5, 3),
        (103, 6, 1),
    ]
    assert find_transport_feedback(compound(RR, REMB)) == []
    nack = bytes.fromhex("81cd0003000000010000000a00050000")  # a generic NACK (FMT 1)
    assert find_transport_feedback(nack + WIRESHARK)[0].base_seq == 1


def test_truncated_feedback_in_compound_raises() -> None:
    a = build_transport_feedback(100, [1.0, None, 1.01, 1.02], fb_count=5)
    with pytest.raises(TwccError):
        find_transport_feedback(RR + a[:-4])


def test_malformed_packets_raise_twcc_error() -> None:
    good = build_transport_feedback(5, [1.0, 1.001, None, 1.5], fb_count=1)
    bad_cases = [
        good[:19],  # shorter than the fixed part
        good[:20],  # chunks missing
        bytes((good[0],)) + bytes((206,)) + good[2:],  # not RTPFB
        good[:14] + b"\x00\x00" + good[16:],  # status count 0
        good[:20] + b"\x00\x00" + good[22:],  # run-length chunk of length 0
        good[:2] + b"\x00\x08" + good[4:],  # longer than the data
        # 8 bytes past the deltas (counted in the length): not padding
        good[:2] + (len(good) // 4 + 1).to_bytes(2, "big") + good[4:] + bytes(8),
    ]
    for case in bad_cases:
        with pytest.raises(TwccError):
            parse_transport_feedback(case)


def test_fuzz_never_raises_anything_but_twcc_error() -> None:
    rng = random.Random(1234)
    seeds = [WIRESHARK, PION_1, PION_3, PION_4, PION_5]
    seeds += [
        build_transport_feedback(
            rng.randrange(65536), [rng.choice([None, 0.01 * i]) for i in range(k)], k
        )
        for k in range(1, 40, 3)
    ]
    parsed = errors = 0
    for i in range(6000):
        seed = rng.choice(seeds)
        data = bytearray(seed)
        kind = i % 4
        if kind == 0:
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == 1:
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:
            data = bytearray(seed[:2]) + bytearray(rng.randbytes(rng.randrange(0, 80)))
        else:
            data = bytearray(RR) + data[: rng.randrange(len(data) + 1)] + bytearray(REMB)
        try:
            if kind == 3:
                find_transport_feedback(bytes(data))
            else:
                parse_transport_feedback(bytes(data))
            parsed += 1
        except TwccError:
            errors += 1
    assert parsed > 100 and errors > 100  # both outcomes were exercised
