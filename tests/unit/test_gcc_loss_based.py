"""Loss from transport-cc feedback (sfu/gcc/loss_based.py)."""

from __future__ import annotations

import pytest

from sfu.gcc.loss_based import DECREASE, HOLD, INCREASE, LossBased
from sfu.gcc.packet import PacketResult


def second(start: int, t0: float, lost_every: int | None) -> list[PacketResult]:
    """A second of 100 packets of 1250 bytes (1 Mbit/s), every ``lost_every``-th lost."""
    return [
        PacketResult(
            start + i,
            t0 + i * 0.01,
            1250,
            None if lost_every and i % lost_every == 0 else 9.0 + t0 + i * 0.01,
        )
        for i in range(100)
    ]


def run(loss: LossBased, lost_every: list[int | None]) -> list:
    verdicts = []
    for k, every in enumerate(lost_every):
        # fed back in 10 batches a second
        batch = second(k * 100, float(k), every)
        for j in range(10):
            v = loss.update(batch[j * 10 : (j + 1) * 10], k + (j + 1) * 0.1)
            if v is not None:
                verdicts.append(v)
    return verdicts


def test_judged_once_a_second() -> None:
    verdicts = run(LossBased(), [None] * 5)
    assert 4 <= len(verdicts) <= 5
    assert {v.action for v in verdicts} == {INCREASE}


def test_five_percent_holds() -> None:
    verdicts = run(LossBased(), [20] * 6)
    assert {v.action for v in verdicts} == {HOLD}
    assert verdicts[-1].loss == pytest.approx(0.05, abs=0.01)


def test_twelve_percent_twice_decreases_to_sent_times_one_minus_half_loss() -> None:
    verdicts = run(LossBased(), [8] * 4)  # 13 of 100
    assert verdicts[0].action == HOLD  # once: could be chance
    decrease = verdicts[1]
    assert decrease.action == DECREASE and decrease.rate is not None
    assert decrease.rate == pytest.approx(1_000_000 * (1 - decrease.loss / 2), rel=0.05)


def test_heavy_loss_decreases_at_once() -> None:
    verdicts = run(LossBased(), [None, 2, 2])  # 50 %
    assert verdicts[1].action == DECREASE and verdicts[1].loss == pytest.approx(0.5, abs=0.02)
    assert verdicts[1].since == pytest.approx(1.0, abs=0.15)
