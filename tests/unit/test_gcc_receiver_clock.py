"""The receiver's clock as transport-cc feedback shows it (sfu/gcc/receiver_clock.py)."""

from __future__ import annotations

from sfu.gcc.receiver_clock import ReceiverClock


def test_newest_arrival_and_a_clock_that_starts_over() -> None:
    clock = ReceiverClock(stale=1.0, reset_gap=5.0)
    assert not clock.arrived(100.0)
    assert not clock.arrived(99.0)  # reordered: the newest stays
    assert clock.newest_arrival == 100.0
    assert not clock.arrived(95.5)  # within the gap
    assert clock.arrived(3.0)  # far before the newest: the receiver restarted
    assert clock.newest_arrival == 3.0
    assert not clock.arrived(3.1) and clock.newest_arrival == 3.1


def test_fresh_only_within_stale_of_the_last_feedback() -> None:
    clock = ReceiverClock(stale=1.0)
    assert not clock.fresh(0.0)  # nothing yet
    clock.feedback(10.0)
    assert clock.fresh(10.5) and clock.fresh(11.0)
    assert not clock.fresh(11.01)
