"""loadgen.loop_stalls.StallMonitor on a real event loop: a loop blocked in a sleeping
call (the process not running anything) is held off; one blocked by CPU work is not."""

from __future__ import annotations

import asyncio
import time

from loadgen.loop_stalls import StallMonitor


async def test_the_monitor_tells_a_sleeping_stall_from_a_busy_one() -> None:
    monitor = StallMonitor(tick=0.01, min_lag=0.05)
    monitor.start()
    await asyncio.sleep(0.05)
    before = time.time()
    time.sleep(0.2)  # the loop is blocked and the process uses no CPU: as if held off
    await asyncio.sleep(0.05)
    busy_from = time.time()
    until = time.perf_counter() + 0.2
    while time.perf_counter() < until:  # blocked by its own work: CPU busy
        pass
    await asyncio.sleep(0.05)
    await monitor.close()
    # (a busy machine may add late ticks of its own: find the two blocked ones)
    sleeping = next(s for s in monitor.stalls if abs(s.start - before) < 0.05)
    busy = next(s for s in monitor.stalls if abs(s.start - busy_from) < 0.05)
    assert 0.15 <= sleeping.length and sleeping.held_off, monitor.stalls
    assert 0.15 <= busy.length and not busy.held_off, monitor.stalls
    await monitor.close()  # idempotent
