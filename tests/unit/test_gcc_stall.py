"""A receiver's stall in transport-cc feedback (sfu/gcc/stall.py), and the estimator not
reading it as a queue on the path."""

from __future__ import annotations

from sfu.gcc.estimator import SendSideEstimator
from sfu.gcc.packet import PacketResult
from sfu.gcc.stall import StallDetector

CLOCK = 700.0


def stream(start: int, send0: float, count: int, interval: float) -> list[tuple[int, float]]:
    return [(start + i, send0 + i * interval) for i in range(count)]


def stalled_feedback(seq0: float = 0.0) -> tuple[list[PacketResult], list[PacketResult]]:
    """20 ms packets; the receiver stops for 300 ms at 1.0 s and then stamps the 15
    packets sent meanwhile within 3 ms. The gap and the bunch come in two feedbacks."""
    before = [PacketResult(seq, t, 1000, CLOCK + t + 0.01) for seq, t in stream(0, 0.0, 50, 0.02)]
    bunch = [
        PacketResult(seq, t, 1000, CLOCK + 1.31 + 0.0002 * i)
        for i, (seq, t) in enumerate(stream(50, 1.0, 15, 0.02))
    ]
    return before, bunch


def test_a_gap_then_a_bunch_is_a_stall_even_across_feedbacks() -> None:
    detector = StallDetector()
    before, bunch = stalled_feedback()
    assert not detector.update(before, 1.0)
    # the gap ends with a packet sent 300 ms before it arrived: held, a stall already
    assert detector.update(bunch[:1], 1.32)
    assert not detector.update(bunch[1:], 1.33)  # (the same stall)
    assert detector.holding(2.31) and not detector.holding(2.33)
    assert detector.stalls == 1


def test_a_backlog_read_no_faster_than_it_was_sent_is_a_stall_too() -> None:
    """A receiver on a busy core stops 300 ms, then reads its backlog at about the rate
    it was sent (no bunch): the first packet after the gap was sent during it."""
    detector = StallDetector()
    before = [PacketResult(i, 0.02 * i, 1000, CLOCK + 0.02 * i + 0.01) for i in range(50)]
    after = [PacketResult(50 + i, 1.0 + 0.02 * i, 1000, CLOCK + 1.3 + 0.018 * i) for i in range(20)]
    assert not detector.update(before, 1.0)
    assert detector.update(after, 1.7) and detector.holding(2.6)


def test_a_gap_judged_no_stall_does_not_end_an_earlier_stalls_hold() -> None:
    detector = StallDetector()
    before, bunch = stalled_feedback()
    detector.update(before, 1.0)
    assert detector.update(bunch, 1.32)  # a stall: held until 2.32
    # a further gap of 100 ms; what follows arrives spread out as it was sent: no stall
    after = [PacketResult(65 + i, 1.4 + 0.02 * i, 1000, CLOCK + 1.5 + 0.02 * i) for i in range(6)]
    assert not detector.update(after[:1], 1.5)
    assert detector.suspect and detector.holding(1.5)
    assert not detector.update(after[1:], 1.62)
    assert not detector.suspect
    assert detector.holding(2.3) and not detector.holding(2.33)  # the stall's hold stands
    assert detector.stalls == 1


def test_a_gap_is_judged_for_at_most_the_judging_time() -> None:
    detector = StallDetector()
    steady = [PacketResult(i, 0.02 * i, 1000, CLOCK + 0.02 * i) for i in range(20)]
    detector.update(steady, 0.4)
    assert not detector.holding(0.4)
    # a gap of 170 ms; the packet after it was sent late in it (its delay grew less
    # than half the gap): judged with what follows
    late = [PacketResult(20, 0.5, 1000, CLOCK + 0.55)]
    detector.update(late, 0.56)
    assert detector.suspect and detector.holding(0.85) and not detector.holding(0.87)
    spread = [
        PacketResult(21 + i, 0.52 + 0.02 * i, 1000, CLOCK + 0.57 + 0.02 * i) for i in range(4)
    ]
    detector.update(spread, 0.7)
    assert not detector.suspect and not detector.holding(0.7)  # judged: no stall


def test_a_bottleneck_spreading_arrivals_is_no_stall() -> None:
    """After a pause in sending, a frame's burst crosses a narrow link: arrivals spread
    30 ms apart, slower than they were sent."""
    detector = StallDetector()
    quiet = [PacketResult(0, 0.0, 1000, CLOCK + 0.01)]
    burst = [
        PacketResult(1 + i, 0.2 + 0.0001 * i, 1200, CLOCK + 0.21 + 0.03 * i) for i in range(10)
    ]
    assert not detector.update(quiet + burst, 0.6)
    # packets sent over 100 ms arriving over 100 ms after a gap: not compressed either
    paced = [PacketResult(20 + i, 1.0 + 0.01 * i, 1000, CLOCK + 1.2 + 0.01 * i) for i in range(10)]
    assert not detector.update(paced, 1.4)


def test_a_stalling_receiver_on_a_clean_path_is_not_capped() -> None:
    """A receiver stopped 300 ms of every second on a path that carries everything (400
    kbit/s): when it runs again it works off its backlog at 3x real time, so the packets
    it stamps meanwhile look 300 ms to 0 ms late, like a queue that drains. No
    delay-based decrease."""
    bwe = SendSideEstimator()
    pending: list[PacketResult] = []
    feedback_due = 0.1
    for k in range(20 * 50):  # 20 s of 20 ms packets
        send = k * 0.02
        second = int(send)
        offset = send - second
        # stopped from .5 to .8 of each second, then catching up until .95
        stamped = second + 0.8 + (offset - 0.5) / 3 if 0.5 <= offset < 0.95 else send
        pending.append(PacketResult(k, send, 1000, CLOCK + stamped + 0.005))
        if stamped >= feedback_due:  # feedback every 100 ms of the receiver's time
            bwe.on_feedback(pending, stamped + 0.01)
            pending = []
            feedback_due = stamped + 0.1
    decreases = [e for e in bwe.events if e[1] == "delay"]
    assert decreases == [], bwe.events
    assert bwe.estimate(20.0) is None
