"""The delay trend and overuse detector (sfu/gcc/trendline.py)."""

from __future__ import annotations

import random

from sfu.gcc.trendline import NORMAL, OVERUSING, UNDERUSING, TrendlineDetector


def run(detector: TrendlineDetector, extra: list[float], start: float = 0.0) -> list[str]:
    """Groups 10 ms apart in send time; ``extra[i]``: how much more (s) than that the
    i-th arrival delta is."""
    states = []
    arrival = start
    for e in extra:
        arrival += 0.010 + e
        states.append(detector.update(0.010, 0.010 + e, arrival))
    return states


def test_steady_path_is_normal() -> None:
    assert set(run(TrendlineDetector(), [0.0] * 200)) == {NORMAL}


def test_a_growing_queue_is_overuse_within_a_few_groups() -> None:
    detector = TrendlineDetector()
    run(detector, [0.0] * 100)
    # each group 1 ms later than the one before: the queue grows by 10 % of the rate
    states = run(detector, [0.001] * 30, start=1.0)
    assert OVERUSING in states
    assert states.index(OVERUSING) < 20
    assert detector.trend > 0


def test_a_draining_queue_is_underuse() -> None:
    detector = TrendlineDetector()
    run(detector, [0.0] * 100)
    states = run(detector, [-0.001] * 30, start=1.0)
    assert UNDERUSING in states and OVERUSING not in states


def test_jitter_is_not_overuse_and_a_queue_still_is() -> None:
    rng = random.Random(7)
    detector = TrendlineDetector()
    # arrivals jitter by up to 15 ms each way around a steady path (the deltas sum to
    # zero over time: nothing queues)
    offsets = [rng.uniform(0, 0.015) for _ in range(1500)]
    extra = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
    states = run(detector, extra)
    assert states[-500:].count(OVERUSING) == 0
    queue = [e + 0.002 for e in extra[:40]]  # the same jitter on a queue growing 20 %
    assert OVERUSING in run(detector, queue, start=20.0)


def test_a_lone_spike_does_not_move_the_threshold() -> None:
    detector = TrendlineDetector()
    run(detector, [0.0] * 100)
    before = detector.threshold
    run(detector, [0.2, -0.2], start=1.0)  # (far outside: ignored by the adaptation)
    assert detector.threshold <= before
