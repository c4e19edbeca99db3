"""Delay-based rate control (sfu/gcc/aimd.py)."""

from __future__ import annotations

import pytest

from sfu.gcc.aimd import AimdRateControl
from sfu.gcc.trendline import NORMAL, OVERUSING, UNDERUSING


def test_no_rate_until_the_first_overuse_then_beta_times_acknowledged() -> None:
    aimd = AimdRateControl()
    assert not aimd.update(NORMAL, 1_000_000.0, 1_000_000.0, 0.0, 0.1)
    assert aimd.value is None
    assert aimd.update(OVERUSING, 300_000.0, 1_700_000.0, 0.1, 0.1)
    assert aimd.value == pytest.approx(0.9 * 300_000)


def test_decreases_wait_a_round_trip_unless_far_above_acknowledged() -> None:
    aimd = AimdRateControl()
    aimd.set(1_000_000.0, 0.0)
    assert aimd.update(OVERUSING, 900_000.0, None, 1.0, 0.1)
    assert not aimd.update(OVERUSING, 800_000.0, None, 1.05, 0.1)  # too soon
    assert aimd.update(OVERUSING, 300_000.0, None, 1.1, 0.1)  # under half: at once
    assert aimd.value == pytest.approx(0.9 * 300_000)
    assert aimd.update(OVERUSING, 200_000.0, None, 1.4, 0.1)
    assert aimd.value == pytest.approx(0.9 * 200_000)


def test_increase_is_multiplicative_far_from_capacity_and_bounded_by_acked() -> None:
    aimd = AimdRateControl()
    aimd.set(1_000_000.0, 0.0)
    aimd.update(UNDERUSING, 1_000_000.0, None, 0.0, 0.1)  # hold
    for i in range(1, 11):
        aimd.update(NORMAL, 1_000_000.0, None, i * 0.1, 0.1)
    assert aimd.value == pytest.approx(1_000_000 * 1.08, rel=0.01)  # 8 % in a second
    # the receiver acknowledges only 500 k: no increase above 1.5 x that + 10 k ...
    aimd.set(700_000.0, 2.0)
    for i in range(1, 31):
        aimd.update(NORMAL, 500_000.0, None, 2.0 + i * 0.1, 0.1)
    assert aimd.value == pytest.approx(760_000.0)
    # ... and a rate already above that bound is not lowered by it
    aimd.set(900_000.0, 6.0)
    aimd.update(NORMAL, 500_000.0, None, 6.5, 0.1)
    assert aimd.value == 900_000.0


def test_increase_is_additive_near_the_known_capacity() -> None:
    aimd = AimdRateControl()
    aimd.update(OVERUSING, 300_000.0, None, 0.0, 0.1)  # capacity ~300 k known now
    aimd.update(NORMAL, 300_000.0, None, 0.5, 0.1)
    start = aimd.value
    assert start is not None
    for i in range(1, 11):
        aimd.update(NORMAL, 300_000.0, None, 0.5 + i * 0.1, 0.1)
    grown = aimd.value - start
    # about a packet per response time (rtt + 100 ms) each second: at ~280-300 k a
    # 30 fps frame is one or two packets, 4.8-9.6 kbit each, over 0.2 s: 24-48 kbit/s
    assert 24_000 <= grown <= 48_000, grown
    assert aimd.capacity.estimate == pytest.approx(300.0)


def test_underuse_holds() -> None:
    aimd = AimdRateControl()
    aimd.set(500_000.0, 0.0)
    for i in range(1, 20):
        aimd.update(UNDERUSING, 500_000.0, None, i * 0.1, 0.1)
    assert aimd.value == 500_000.0
