"""sfu.rtp.rewrite.StreamRewriter: one continuous output from successive inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtp.rewrite import StreamRewriter

A, B, C = 0xAAAA0001, 0xBBBB0002, 0xCCCC0003
CLOCK = 90000


def send(rw: StreamRewriter, in_seq: int, in_ts: int, now: float, pid: int = -1, tl0: int = -1):
    """Forward one accepted packet the way the Forwarder does; returns the output fields."""
    out_seq = rw.seq(in_seq)
    out_ts = rw.timestamp(in_ts)
    out_pid = rw.picture_id(pid) if pid >= 0 else -1
    out_tl0 = rw.tl0picidx(tl0) if tl0 >= 0 else -1
    rw.sent(out_seq, out_ts, now, out_pid, out_tl0)
    return out_seq, out_ts, out_pid, out_tl0


def u16(x: int) -> int:
    return x & 0xFFFF


def u32(x: int) -> int:
    return x & 0xFFFFFFFF


# ------------------------------------------------------------------ first mapping


def test_first_switch_starts_at_the_chosen_output_values():
    rw = StreamRewriter(CLOCK, first_seq=1000, first_ts=123456, first_pid=77, first_tl0=9)
    assert not rw.started
    rw.switch(A, 5000, 900000, now=10.0, in_pid=300, in_tl0=40)
    assert rw.started and rw.in_ssrc == A
    assert send(rw, 5000, 900000, 10.0, pid=300, tl0=40) == (1000, 123456, 77, 9)
    assert send(rw, 5001, 903000, 10.03, pid=301, tl0=41) == (1001, 126456, 78, 10)


def test_first_values_at_the_edges():
    rw = StreamRewriter(CLOCK, first_seq=0, first_ts=0, first_pid=0, first_tl0=0)
    rw.switch(A, 10, 10, 0.0, in_pid=10, in_tl0=10)
    assert send(rw, 10, 10, 0.0, pid=10, tl0=10) == (0, 0, 0, 0)


# ------------------------------------------------------------------ wraparound


def test_input_sequence_wraparound():
    rw = StreamRewriter(CLOCK, first_seq=100, first_ts=0)
    rw.switch(A, 65530, 0, 0.0)
    outs = [send(rw, u16(65530 + i), 0, 0.0)[0] for i in range(12)]
    assert outs == list(range(100, 112))
    assert all(rw.accepts(u16(65530 + i)) for i in range(12))


def test_output_sequence_wraparound():
    rw = StreamRewriter(CLOCK, first_seq=65533, first_ts=0)
    rw.switch(A, 100, 0, 0.0)
    outs = [send(rw, 100 + i, 0, 0.0)[0] for i in range(6)]
    assert outs == [65533, 65534, 65535, 0, 1, 2]
    assert rw.out_seq == 2


def test_input_timestamp_wraparound():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=5000)
    start = 0xFFFFFFFF - 2 * 3000 + 1
    rw.switch(A, 1, start, 0.0)
    outs = [send(rw, 1 + i, u32(start + 3000 * i), 0.0)[1] for i in range(5)]
    assert outs == [5000 + 3000 * i for i in range(5)]


def test_output_timestamp_wraparound():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0xFFFFFFFF - 999)
    rw.switch(A, 1, 0, 0.0)
    outs = [send(rw, 1 + i, 960 * i, 0.0)[1] for i in range(3)]
    assert outs == [0xFFFFFFFF - 999, u32(0xFFFFFFFF - 999 + 960), u32(0xFFFFFFFF - 999 + 1920)]
    assert outs[2] == 920


# ------------------------------------------------------------------ switching


def test_switch_continues_sequence_and_advances_timestamp_by_elapsed_time():
    rw = StreamRewriter(CLOCK, first_seq=40000, first_ts=1_000_000)
    rw.switch(A, 10, 500, 1.0)
    for i in range(5):
        last_seq, last_ts, _, _ = send(rw, 10 + i, 500 + 3000 * i, 1.0 + i / 30)
    sent_at = 1.0 + 4 / 30
    rw.switch(B, 60000, 3_000_000_000, sent_at + 0.25)
    assert rw.in_ssrc == B
    seq, ts, _, _ = send(rw, 60000, 3_000_000_000, sent_at + 0.25)
    assert seq == u16(last_seq + 1)
    assert ts == u32(last_ts + round(0.25 * CLOCK))
    # and the new input's own spacing is kept afterwards
    seq2, ts2, _, _ = send(rw, 60001, 3_000_003_000, sent_at + 0.28)
    assert (seq2, ts2) == (u16(seq + 1), u32(ts + 3000))


def test_switch_advances_timestamp_at_least_one_tick():
    rw = StreamRewriter(48000, first_seq=1, first_ts=100)
    rw.switch(A, 1, 0, 5.0)
    send(rw, 1, 0, 5.0)
    rw.switch(B, 999, 777, 5.0)  # no time elapsed
    assert send(rw, 999, 777, 5.0)[:2] == (2, 101)


def test_switch_back_to_an_earlier_input():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0)
    rw.switch(A, 100, 0, 0.0)
    send(rw, 100, 0, 0.0)
    rw.switch(B, 5, 0, 1.0)
    send(rw, 5, 0, 1.0)
    rw.switch(A, 200, 9000, 2.0)
    assert send(rw, 200, 9000, 2.0)[0] == 3
    assert rw.original(1) == (A, 100)
    assert rw.original(2) == (B, 5)
    assert rw.original(3) == (A, 200)


def test_picture_id_continuity_across_switches_7_and_15_bit():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0, first_pid=32760)
    out = []
    now = 0.0
    seq = 0
    # 15-bit input wrapping 32767 -> 0
    rw.switch(A, 1, 0, now, in_pid=32765, pid_bits=15)
    for pid in [32765, 32766, 32767, 0, 1]:
        seq += 1
        now += 0.03
        out.append(send(rw, seq, seq * 3000, now, pid=pid)[2])
    # 7-bit input wrapping 127 -> 0
    rw.switch(B, 500, 0, now + 0.03, in_pid=125, pid_bits=7)
    for i, pid in enumerate([125, 126, 127, 0, 1]):
        now += 0.03
        out.append(send(rw, 500 + i, i * 3000, now, pid=pid)[2])
    # back to a 15-bit input
    rw.switch(C, 9, 0, now + 0.03, in_pid=12000, pid_bits=15)
    for i in range(3):
        now += 0.03
        out.append(send(rw, 9 + i, i * 3000, now, pid=12000 + i)[2])
    expected = [(32760 + i) & 0x7FFF for i in range(13)]
    assert out == expected


def test_picture_id_same_frame_and_reordered():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0, first_pid=1000)
    rw.switch(A, 1, 0, 0.0, in_pid=126, pid_bits=7)
    assert rw.picture_id(126) == 1000
    assert rw.picture_id(126) == 1000  # second packet of the same frame
    assert rw.picture_id(127) == 1001
    assert rw.picture_id(1) == 1003  # frame 0 lost or late
    assert rw.picture_id(0) == 1002  # the late one maps back, across the 7-bit wrap
    assert rw.picture_id(2) == 1004


def test_tl0picidx_continuity_across_switch_and_wrap():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0, first_tl0=253)
    rw.switch(A, 1, 0, 0.0, in_tl0=17)
    outs = [send(rw, i + 1, 0, 0.0, tl0=17 + i // 2)[3] for i in range(4)]
    assert outs == [253, 253, 254, 254]
    rw.switch(B, 77, 0, 0.1, in_tl0=250)
    outs = [send(rw, 77 + i, 0, 0.1, tl0=(250 + i) & 0xFF)[3] for i in range(8)]
    assert outs == [255, 0, 1, 2, 3, 4, 5, 6]


def test_switch_without_picture_id_keeps_pid_state():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0, first_pid=50)
    rw.switch(A, 1, 0, 0.0, in_pid=7)
    send(rw, 1, 0, 0.0, pid=7)
    rw.switch(B, 1, 0, 0.1)  # audio-like input: no picture id
    send(rw, 1, 0, 0.1)
    rw.switch(C, 1, 0, 0.2, in_pid=900)
    assert send(rw, 1, 0, 0.2, pid=900)[2] == 51


# ------------------------------------------------------------------ accepts


def test_reordered_packets_older_than_the_switch_are_rejected():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0)
    rw.switch(A, 1000, 0, 0.0)
    assert rw.accepts(1000) and rw.accepts(1001) and rw.accepts(1500)
    assert not rw.accepts(999)
    assert not rw.accepts(500)


def test_reordered_rejection_across_input_wrap():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0)
    rw.switch(A, 2, 0, 0.0)
    assert not rw.accepts(65535) and not rw.accepts(1)
    assert rw.accepts(2) and rw.accepts(3)


def test_accepts_a_long_running_input():
    # Regression: the switch point stayed fixed, so 32768 packets after it every
    # packet looked older than the switch and the forwarder went silent.
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0)
    rw.switch(A, 100, 0, 0.0)
    outs = []
    for i in range(140_000):
        in_seq = u16(100 + i)
        assert rw.accepts(in_seq), i
        if i % 997 == 0 or i > 139_990:
            outs.append((i, send(rw, in_seq, 0, i / 50)[0]))
        else:
            rw.sent(rw.seq(in_seq), 0, i / 50)
    assert all(out == u16(1 + i) for i, out in outs)
    # still: a packet from before the switch point is not accepted right after a switch
    rw.switch(B, 7, 0, 3000.0)
    assert not rw.accepts(6) and rw.accepts(7)


def test_accepts_slightly_late_packets_long_after_the_switch():
    rw = StreamRewriter(CLOCK, first_seq=1, first_ts=0)
    rw.switch(A, 0, 0, 0.0)
    for i in range(50_000):
        rw.accepts(u16(i))
        rw.sent(rw.seq(u16(i)), 0, 0.0)
    newest = u16(49_999)
    assert rw.accepts(u16(newest - 10))
    assert rw.accepts(u16(newest - 1000))
    assert rw.seq(u16(newest - 10)) == u16(rw.out_seq - 10)


# ------------------------------------------------------------------ drop / padding


def test_drop_closes_the_gap_of_an_in_order_padding_packet():
    rw = StreamRewriter(CLOCK, first_seq=500, first_ts=0)
    rw.switch(A, 10, 0, 0.0)
    assert send(rw, 10, 0, 0.0)[0] == 500
    rw.drop(11)
    rw.drop(12)
    assert send(rw, 13, 0, 0.0)[0] == 501
    rw.drop(14)
    assert send(rw, 15, 0, 0.0)[0] == 502


def test_drop_out_of_order_does_not_shift_the_mapping():
    rw = StreamRewriter(CLOCK, first_seq=500, first_ts=0)
    rw.switch(A, 10, 0, 0.0)
    send(rw, 10, 0, 0.0)
    rw.drop(12)  # 11 not seen yet: a loss before the padding stays a gap
    assert send(rw, 13, 0, 0.0)[0] == 503
    rw.drop(9)  # before the switch / already passed
    rw.drop(13)  # a duplicate
    assert send(rw, 14, 0, 0.0)[0] == 504


def test_drop_before_start_does_nothing():
    rw = StreamRewriter(CLOCK, first_seq=500, first_ts=0)
    rw.drop(0)
    rw.switch(A, 1, 0, 0.0)
    assert send(rw, 1, 0, 0.0)[0] == 500
    assert rw.history == [(500, rw.seq_offset, A)]


def test_late_packet_after_a_drop_keeps_its_own_number():
    # Regression: a packet lost, then padding dropped (shifting the mapping), then the
    # lost one retransmitted: it was given the number of the packet before it.
    rw = StreamRewriter(CLOCK, first_seq=100, first_ts=0)
    rw.switch(A, 10, 0, 0.0)
    assert send(rw, 10, 0, 0.0)[0] == 100
    assert send(rw, 12, 0, 0.0)[0] == 102  # 11 lost
    rw.drop(13)
    rw.drop(14)
    assert rw.accepts(11)
    assert send(rw, 11, 0, 0.0)[0] == 101
    assert send(rw, 15, 0, 0.0)[0] == 103
    rw.drop(16)
    assert rw.seq(12) == 102 and rw.seq(15) == 103 and rw.seq(17) == 104
    assert rw.out_seq == 103  # the late one did not move the continuation point


# ------------------------------------------------------------------ original()


def test_original_maps_output_back_across_drops_and_switches():
    rw = StreamRewriter(CLOCK, first_seq=65534, first_ts=0)
    rw.switch(A, 65535, 0, 0.0)
    sent = {}
    sent[send(rw, 65535, 0, 0.0)[0]] = (A, 65535)
    sent[send(rw, 0, 0, 0.0)[0]] = (A, 0)
    rw.drop(1)
    sent[send(rw, 2, 0, 0.0)[0]] = (A, 2)
    rw.drop(3)
    rw.drop(4)
    sent[send(rw, 5, 0, 0.0)[0]] = (A, 5)
    rw.switch(B, 9000, 0, 0.1)
    sent[send(rw, 9000, 0, 0.1)[0]] = (B, 9000)
    rw.drop(9001)
    sent[send(rw, 9002, 0, 0.1)[0]] = (B, 9002)
    assert sorted(sent) == [0, 1, 2, 3, 65534, 65535]
    for out_seq, original in sent.items():
        assert rw.original(out_seq) == original
    # not sent yet, or from before the first mapping
    assert rw.original(4) is None
    assert rw.original(100) is None
    assert rw.original(65533) is None


def test_original_before_anything_is_none():
    rw = StreamRewriter(CLOCK, first_seq=10, first_ts=0)
    assert rw.original(10) is None and rw.original(9) is None
    rw.switch(A, 1, 0, 0.0)
    assert rw.original(10) is None  # switched but nothing sent yet


def test_original_for_a_long_running_input():
    # Regression: 32768 outputs after the last switch NACKs were no longer mapped.
    rw = StreamRewriter(CLOCK, first_seq=10, first_ts=0)
    rw.switch(A, 50000, 0, 0.0)
    for i in range(70_000):
        rw.sent(rw.seq(u16(50000 + i)), 0, 0.0)
        if i == 40_000:  # between 32768 and 65536 outputs after the switch
            assert rw.original(rw.out_seq) == (A, u16(50000 + i))
            assert rw.original(u16(rw.out_seq - 100)) == (A, u16(50000 + i - 100))
    newest = rw.out_seq
    assert rw.original(newest) == (A, u16(50000 + 69_999))
    assert rw.original(u16(newest - 500)) == (A, u16(50000 + 69_499))
    rw.drop(u16(50000 + 70_000))
    assert rw.original(u16(newest - 3)) == (A, u16(50000 + 69_996))


def test_sent_only_newest_moves_the_continuation_point():
    rw = StreamRewriter(CLOCK, first_seq=100, first_ts=0, first_pid=5, first_tl0=5)
    rw.switch(A, 1, 0, 0.0, in_pid=1, in_tl0=1)
    send(rw, 1, 0, 0.0, pid=1, tl0=1)
    send(rw, 3, 6000, 0.1, pid=3, tl0=3)
    send(rw, 2, 3000, 0.2, pid=2, tl0=2)  # late
    assert (rw.out_seq, rw.out_ts, rw.out_time, rw.out_pid, rw.out_tl0) == (102, 6000, 0.1, 7, 7)


# ------------------------------------------------------------------ properties


segment = st.tuples(
    st.integers(0, 0xFFFF),  # first input seq
    st.integers(0, 0xFFFFFFFF),  # first input timestamp
    st.lists(st.booleans(), min_size=1, max_size=60),  # per packet: padding?
    st.floats(0.0, 5.0),  # pause before the segment
)


@settings(max_examples=200, deadline=None)
@given(
    first_seq=st.integers(0, 0xFFFF),
    first_ts=st.integers(0, 0xFFFFFFFF),
    segments=st.lists(segment, min_size=1, max_size=8),
)
def test_output_is_consecutive_for_in_order_input_with_random_switches(
    first_seq, first_ts, segments
):
    rw = StreamRewriter(CLOCK, first_seq=first_seq, first_ts=first_ts)
    now = 0.0
    outputs: list[tuple[int, int, int, int]] = []  # out seq, out ts, ssrc, in seq
    prev_i, prev_now = 0, 0.0  # input index and time of the last output
    for index, (seq0, ts0, padding, pause) in enumerate(segments):
        ssrc = 1000 + index % 3  # never the same input twice in a row
        now += pause
        media = [i for i, pad in enumerate(padding) if not pad]
        if not media:
            continue
        start = media[0]  # a segment starts on a media packet (the keyframe)
        switched_at = now
        rw.switch(ssrc, u16(seq0 + start), u32(ts0 + 3000 * start), now)
        for i in range(start, len(padding)):
            in_seq, in_ts = u16(seq0 + i), u32(ts0 + 3000 * i)
            assert rw.accepts(in_seq)
            now += 0.001
            if padding[i]:
                rw.drop(in_seq)
                continue
            out_seq, out_ts = rw.seq(in_seq), rw.timestamp(in_ts)
            if outputs:
                prev_seq, prev_ts, _, _ = outputs[-1]
                assert out_seq == u16(prev_seq + 1)
                if i == start:  # a switch: time goes on by what elapsed, at least 1 tick
                    gap = max(1, round((switched_at - prev_now) * CLOCK))
                    assert out_ts == u32(prev_ts + gap)
                else:
                    assert out_ts == u32(prev_ts + 3000 * (i - prev_i))
            else:
                assert (out_seq, out_ts) == (first_seq, first_ts)
            rw.sent(out_seq, out_ts, now)
            outputs.append((out_seq, out_ts, ssrc, in_seq))
            prev_i, prev_now = i, now
    # every output still maps back to its input for NACKs (few drops: history is enough)
    if len(rw.history) < 64:
        for out_seq, _, ssrc, in_seq in outputs:
            assert rw.original(out_seq) == (ssrc, in_seq)


@settings(max_examples=200, deadline=None)
@given(
    first_pid=st.integers(0, 0x7FFF),
    segments=st.lists(
        st.tuples(st.sampled_from([7, 15]), st.integers(0, 0x7FFF), st.integers(1, 300)),
        min_size=1,
        max_size=6,
    ),
)
def test_picture_ids_are_consecutive_across_random_switches(first_pid, segments):
    rw = StreamRewriter(CLOCK, first_seq=0, first_ts=0, first_pid=first_pid)
    expected = first_pid
    seq = 0
    for index, (bits, pid0, frames) in enumerate(segments):
        mask = (1 << bits) - 1
        pid0 &= mask
        rw.switch(index + 1, seq, 0, index, in_pid=pid0, pid_bits=bits)
        for f in range(frames):
            for _ in range(2):  # two packets per frame
                out = send(rw, seq, 0, index, pid=(pid0 + f) & mask)[2]
                assert out == expected
                seq = u16(seq + 1)
            expected = (expected + 1) & 0x7FFF


def test_continue_from_carries_the_output_stream_on():
    """An m-line reused for another track: its SSRC's stream goes on without a jump."""
    old = StreamRewriter(
        90000, first_seq=65530, first_ts=0xFFFFFF00, first_pid=None, first_tl0=None
    )
    old.switch(1, 100, 5000, 0.0, in_pid=300, in_tl0=7)
    for i in range(10):
        old.sent(
            (100 + i + old.seq_offset) & 0xFFFF,
            (5000 + 3000 * i + old.ts_offset) & 0xFFFFFFFF,
            i / 30,
            300 + i,
            7 + i,
        )
    new = StreamRewriter(90000, first_seq=12, first_ts=777, first_pid=None, first_tl0=None)
    new.continue_from(old)
    new.switch(9, 40000, 123, 1.0, in_pid=5, in_tl0=200)
    assert (40000 + new.seq_offset) & 0xFFFF == (old.out_seq + 1) & 0xFFFF
    gap = round((1.0 - 9 / 30) * 90000)
    assert new.timestamp(123) == (old.out_ts + gap) & 0xFFFFFFFF
    assert new.picture_id(5) == (old.out_pid + 1) & 0x7FFF
    assert new.tl0picidx(200) == (old.out_tl0 + 1) & 0xFF


def test_continue_from_after_a_switch_is_refused():
    a = StreamRewriter(48000, first_seq=1, first_ts=1)
    b = StreamRewriter(48000, first_seq=1, first_ts=1)
    b.switch(1, 1, 1, 0.0)
    with pytest.raises(RuntimeError):
        b.continue_from(a)
