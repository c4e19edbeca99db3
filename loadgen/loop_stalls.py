"""When the SFU's own process did not run: event-loop stalls and whether it had the CPU.

A harness that runs the SFU in its own process beside its clients (two Chromium pages
and a publisher bot on a 2-core machine, ``loadgen/browser_congestion.py``) cannot
tell a freeze the SFU caused from one the machine caused by looking at the pages
alone. ``StallMonitor`` ticks on the SFU's event loop every ``tick`` seconds and keeps
each tick that came more than ``min_lag`` late, with the CPU time the process used
meanwhile (all its threads). A late tick with the CPU busy is the SFU's own work (a
blocking call, a long loop): the SFU's fault. A late tick with the CPU nearly idle
(``held_off``) means the kernel did not run the process (measured on this project's
machine: 100-425 ms with 0-6 ms of CPU, while processes beside it slept and woke on
time): nothing the SFU does can forward a packet then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

#: A late tick used less than this share of its lateness as CPU: the process was held off.
HELD_OFF_CPU_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Stall:
    """One late tick: from ``start`` (wall clock, s) for ``length`` s, ``cpu`` s used."""

    start: float
    length: float
    cpu: float

    @property
    def end(self) -> float:
        return self.start + self.length

    @property
    def held_off(self) -> bool:
        """The process barely ran meanwhile: the kernel did not schedule it."""
        return self.cpu < HELD_OFF_CPU_SHARE * self.length


def late_tick(
    started: float, cpu_started: float, woke: float, cpu_woke: float, wall_woke: float,
    tick: float, min_lag: float,
) -> Stall | None:  # fmt: skip
    """The stall of a tick that slept from ``started`` (monotonic s, ``cpu_started`` of
    process CPU) to ``woke`` (``wall_woke`` on the wall clock), None if it was on time."""
    lag = woke - started - tick
    if lag <= min_lag:
        return None
    return Stall(start=wall_woke - lag, length=lag, cpu=max(0.0, cpu_woke - cpu_started))


def held_off_within(stalls: Sequence[Stall], start: float, end: float, min_length: float) -> bool:
    """Whether a held-off stall of at least ``min_length`` s overlaps ``[start, end]``."""
    return any(
        s.held_off and s.length >= min_length and s.start <= end and s.end >= start for s in stalls
    )


class StallMonitor:
    """Ticks on the running event loop and keeps the late ticks (``stalls``)."""

    def __init__(self, tick: float = 0.01, min_lag: float = 0.05) -> None:
        self.tick = tick
        self.min_lag = min_lag
        self.stalls: list[Stall] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            started, cpu_started = time.perf_counter(), time.process_time()
            await asyncio.sleep(self.tick)
            stall = late_tick(
                started, cpu_started, time.perf_counter(), time.process_time(), time.time(),
                self.tick, self.min_lag,
            )  # fmt: skip
            if stall is not None:
                self.stalls.append(stall)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
