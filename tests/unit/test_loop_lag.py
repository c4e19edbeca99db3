"""signaling/loop_lag.py: how late a periodic timer fires."""

from __future__ import annotations

import asyncio
import time

import pytest

from signaling.loop_lag import LagMeter, LoopLagMonitor


def test_the_meter_measures_lateness_against_a_fake_clock() -> None:
    meter = LagMeter(0.25)
    assert meter.start(10.0) == 10.25
    assert meter.fired(10.25) == 0.0
    assert meter.due == 10.5
    assert meter.fired(10.6) == pytest.approx(0.1)
    # the next measurement is due an interval after the late one, not before
    assert meter.due == pytest.approx(10.85)
    assert meter.fired(10.8) == 0.0  # early (a coarse clock): no negative lag
    assert meter.max_lag == pytest.approx(0.1)
    assert meter.count == 3


def test_the_meter_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        LagMeter(0.0)
    with pytest.raises(RuntimeError):
        LagMeter().fired(1.0)


async def test_the_monitor_sees_a_blocked_loop_and_stops_when_closed() -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(asyncio.get_running_loop(), lags.append, interval=0.01)
    await asyncio.sleep(0.05)
    time.sleep(0.15)  # block the loop: the timer due meanwhile fires late
    await asyncio.sleep(0.05)
    assert max(lags) >= 0.1
    monitor.close()
    seen = len(lags)
    await asyncio.sleep(0.05)
    assert len(lags) == seen
    monitor.close()  # idempotent
