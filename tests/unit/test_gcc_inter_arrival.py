"""Send-time groups and their deltas (sfu/gcc/inter_arrival.py)."""

from __future__ import annotations

import pytest

from sfu.gcc.inter_arrival import InterArrival


def feed(ia: InterArrival, packets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for send, arrival in packets:
        delta = ia.add(send, arrival, 1000)
        if delta is not None:
            out.append((round(delta.send_delta, 6), round(delta.arrival_delta, 6)))
    return out


def test_packets_sent_within_five_ms_form_one_group() -> None:
    ia = InterArrival()
    # three frames 33 ms apart, each three packets within 2 ms; the path adds 10 ms
    # to the second frame's last packet (a queue): the deltas are last-to-last
    packets = []
    for frame in range(4):
        base = frame * 0.033
        extra = 0.010 if frame == 1 else 0.0
        packets += [
            (base, base + 1.0),
            (base + 0.001, base + 1.001),
            (base + 0.002, base + 1.002 + extra),
        ]
    assert feed(ia, packets) == [(0.033, 0.043), (0.033, 0.023)]


def test_a_stalled_receivers_backlog_is_one_group() -> None:
    ia = InterArrival()
    packets = [(i * 0.01, 5.0 + i * 0.01) for i in range(5)]  # steady, 10 ms apart
    # the receiver stalls 200 ms: 20 packets sent 10 ms apart are stamped within 2 ms
    packets += [(0.05 + i * 0.01, 5.25 + i * 0.0001) for i in range(20)]
    packets += [(0.25 + i * 0.01, 5.252 + i * 0.01) for i in range(1, 5)]
    deltas = feed(ia, packets)
    # no run of negative delays after the stall (one group took the backlog, twenty
    # groups would each read -10 ms), and what the stall added is undone at once
    assert sum(1 for s, a in deltas if a - s < -0.005) <= 1
    assert abs(sum(a - s for s, a in deltas)) < 0.005
    assert any(s >= 0.19 for s, _ in deltas)  # (the backlog's group spans ~200 ms of sends)


def test_reordered_and_far_apart_arrivals_do_not_make_deltas() -> None:
    ia = InterArrival()
    assert feed(ia, [(0.0, 1.0), (0.02, 1.02), (0.04, 1.04)]) == [(0.02, 0.02)]
    assert ia.add(0.01, 1.05, 1000) is None  # sent before the current group: ignored
    # a 5 s gap between arrivals: starts over instead of reporting a 5 s delay
    assert ia.add(0.06, 6.06, 1000) is not None  # (completes the group sent at 0.04)
    assert ia.add(0.08, 6.08, 1000) is None
    assert ia.resets == 1
    assert ia.add(0.10, 6.10, 1000) is None  # (the group of 0.08 is the new previous)
    delta = ia.add(0.12, 6.12, 1000)
    assert delta is not None and delta.send_delta == pytest.approx(0.02)
