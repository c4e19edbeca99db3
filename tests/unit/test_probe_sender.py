"""sfu/probe_sender.py: a probe's padding goes out at its rate even when the event loop
runs the slices late (time from a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest

from sfu.congestion import PROBE_TICK, CongestionController, Demand
from sfu.probe_sender import ProbeSender
from tests.fakes import FakeClock

LAYERS = [150_000.0, 500_000.0, 1_500_000.0]


class LateClock(FakeClock):
    """Every timer runs ``late`` s after it was due (a busy event loop)."""

    def __init__(self, late: float) -> None:
        super().__init__(10.0)
        self.late = late

    def call_at(self, when: float, callback: Any, /) -> Any:
        return super().call_at(when + self.late, callback)


class Carrier:
    def padding(self, size: int, now: float) -> bytes:
        return bytes(size)


class Egress:
    def __init__(self) -> None:
        self.sent = 0

    def send_rtp(self, packet: bytes) -> bool:
        self.sent += len(packet)
        return True


@pytest.mark.parametrize("late", [0.0, 0.015])
def test_padding_keeps_the_probe_rate_when_slices_run_late(late: float) -> None:
    clock = LateClock(late)
    ctl = CongestionController()
    ctl.use_transport_cc()
    ctl.measure(0.0, 0, 0)
    ctl.bwe._aimd.set(300_000.0, 0.0)  # a cap (transport-cc: what slices make up for)
    ctl.allocate([Demand(LAYERS, 0, 1.0)], clock.now)
    egress = Egress()
    counters = {"probes": 0, "padding_packets": 0}
    sender = ProbeSender(clock, ctl, egress, counters, lambda: Carrier(), lambda now: None)  # type: ignore[arg-type]
    sender.maybe_probe()
    probe = ctl.bwe.probe
    assert probe is not None and counters["probes"] == 1
    rate, start, duration = probe.rate, probe.start, probe.duration
    clock.advance(duration + 0.05)
    # slices every 35 ms instead of 20: still the rate times the duration (each slice
    # may end one padding packet over), where a fixed slice would have sent 20/35 of it
    slices = duration / PROBE_TICK + 1
    assert 0.95 * rate * duration <= egress.sent * 8 <= rate * duration + slices * 255 * 8
    assert ctl.bwe.probe is probe and start == 10.0
    sender.close()
