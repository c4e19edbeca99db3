"""The egress's transport-cc send history is sized by the subscriber's rate: it starts
small and doubles only while it would forget packets sent less than TWCC_SPAN ago
(sfu/native.py PyEgress with a fake clock; the C Egress through its behaviour)."""

from __future__ import annotations

from sfu import native
from tests.unit.test_native import Wire
from tests.unit.test_twcc_egress import TWCC_ID, packet


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def py_egress(clock: Clock) -> native.PyEgress:
    egress = native.PyEgress(lambda data: data, lambda data: None, (OSError,), clock=clock)
    egress.twcc_id = TWCC_ID
    return egress


def send(egress: native.PyEgress | object, count: int, clock: Clock | None, step: float) -> None:
    for i in range(count):
        if clock is not None:
            clock.now += step
        assert egress.send(packet(i & 0xFFFF))  # type: ignore[attr-defined]


def test_a_slow_stream_keeps_the_smallest_history() -> None:
    clock = Clock()
    egress = py_egress(clock)
    send(egress, 1500, clock, 0.01)  # 100 packets/s: 1024 entries hold 10 s
    assert native.TWCC_HISTORY_MIN == 1024 and native.TWCC_SPAN <= 10.24
    assert egress.history(0) is None and egress.history(1500 - 1025) is None
    entry = egress.history(1500 - 1024)
    assert entry is not None and entry[0] == 476 and abs(entry[1] - 4.77) < 1e-9


def test_a_fast_stream_grows_the_history_to_its_span() -> None:
    clock = Clock()
    egress = py_egress(clock)
    send(egress, 3000, clock, 0.0005)  # 2000 packets/s: 2 s are 4000 packets
    entry = egress.history(0)
    assert entry is not None and entry[0] == 0  # the history grew to 4096: all kept
    send(egress, 20000, clock, 0.0005)  # 4096 hold 2 s of it: no more
    assert egress.history((23000 - 4096) & 0xFFFF) is not None
    assert egress.history((23000 - 4097) & 0xFFFF) is None
    send(egress, 40000, clock, 0.00001)  # 100 000 packets/s: the largest history
    assert egress.history((63000 - native.TWCC_HISTORY) & 0xFFFF) is not None
    assert egress.history((63000 - native.TWCC_HISTORY - 1) & 0xFFFF) is None


def test_a_closed_egress_forgets_its_history() -> None:
    clock = Clock()
    egress = py_egress(clock)
    send(egress, 10, clock, 0.01)
    egress.close()
    assert egress.history(3) is None
    egress.twcc_id = TWCC_ID
    assert egress.history(3) is None


def test_the_c_egress_grows_and_frees_its_history_the_same_way() -> None:
    wire = Wire()
    try:
        egress = wire.egress
        egress.twcc_id = TWCC_ID
        for i in range(3000):  # far faster than 2048 packets in 2 s
            assert egress.send(packet(i))
            if i % 500 == 0:
                wire.received()
        entry = egress.history(0)
        assert entry is not None and entry[0] == 0
        egress.close()
        assert egress.history(2999) is None
    finally:
        wire.close()
