"""Probe clusters judged by what arrived (sfu/gcc/probe.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sfu.gcc.packet import PacketResult
from sfu.gcc.probe import Probe, ProbeSettings, collect, judge, new_probe

SETTINGS = ProbeSettings()
CLOCK = 100.0


def cluster(rate: float, start: float = 10.0, duration: float = 0.6) -> list[tuple[float, int]]:
    """(send time, size) of 1000-byte packets at ``rate`` from ``start`` for
    ``duration`` s, and two packets after it."""
    gap = 1000 * 8 / rate
    count = round(duration / gap)
    return [(start + i * gap, 1000) for i in range(count)] + [
        (start + duration + 0.01, 1000),
        (start + duration + 0.02, 1000),
    ]


def through(sent: list[tuple[float, int]], link: float | None, burst: int = 15_000):
    """PacketResults through a token bucket (``link`` bit/s, ``burst`` bytes, 150 ms of
    queue), 20 ms away."""
    results, tokens, clock, last = [], float(burst), 0.0, 0.0
    for seq, (send, size) in enumerate(sent):
        depart: float | None = send
        if link is not None:
            start = max(send, last)
            tokens = min(burst, tokens + (start - clock) * link / 8)
            depart = start if tokens >= size else start + (size - tokens) * 8 / link
            if depart - send > 0.15:
                depart = None
            else:
                tokens, clock, last = max(0.0, tokens - size), depart, depart
        arrival = None if depart is None else CLOCK + depart + 0.02
        results.append(PacketResult(seq, send, size, arrival))
    return results


def probe_at(target: float, duration: float = 0.6) -> Probe:
    return Probe(10.0, target, target, duration)


def test_cluster_carried_at_its_rate_succeeds_at_95_percent() -> None:
    probe = probe_at(1_000_000)
    collect(probe, through(cluster(1_000_000), None))
    result = judge(probe, 10.7, SETTINGS)
    assert result is not None and result.ok, result
    assert result.rate == pytest.approx(950_000, rel=0.03)


def test_token_bucket_burst_does_not_pass_a_probe() -> None:
    # 600 k for 1 s into a 300 k link with 15 kB saved up: the first half passes at
    # full rate, the rest queues (and is dropped past 150 ms)
    probe = probe_at(600_000, duration=1.0)
    collect(probe, through(cluster(600_000, duration=1.0), 300_000))
    result = judge(probe, 11.2, SETTINGS)
    assert result is not None and not result.ok
    # without the delay rule, the later half's arrival rate fails it as well
    lenient = replace(SETTINGS, max_delay_growth=10.0, max_loss=1.0)
    result = judge(probe, 11.2, lenient)
    assert result is not None and result.reason == "saturated"


def test_silence_is_failure_not_success() -> None:
    probe = probe_at(1_000_000)
    assert judge(probe, 10.8, SETTINGS) is None  # its feedback may still come
    result = judge(probe, 11.7, SETTINGS)
    assert result is not None and not result.ok and result.reason == "silence"
    # feedback that stops halfway through the cluster is silence too
    probe = probe_at(1_000_000)
    collect(probe, [r for r in through(cluster(1_000_000), None) if r.send_time < 10.3])
    result = judge(probe, 11.7, SETTINGS)
    assert result is not None and result.reason == "silence"


def test_loss_fails_a_cluster_before_it_is_complete() -> None:
    probe = probe_at(1_000_000)
    results = through(cluster(1_000_000), None)[:30]
    results = [replace(r, arrival=None) if r.seq % 3 == 0 else r for r in results]
    collect(probe, results)
    result = judge(probe, 10.4, SETTINGS)
    assert result is not None and result.reason == "loss"


def test_receiver_stall_at_the_end_is_not_a_queue() -> None:
    probe = probe_at(1_000_000)
    results = through(cluster(1_000_000), None)
    # the receiver's process stalls 200 ms: the last 150 ms of the cluster are stamped
    # at once when it wakes
    stamped = CLOCK + 10.45 + 0.02 + 0.2
    results = [
        replace(r, arrival=stamped) if r.send_time >= 10.45 and r.arrival is not None else r
        for r in results
    ]
    collect(probe, results)
    result = judge(probe, 10.9, SETTINGS)
    assert result is not None and result.ok, result


def test_a_cluster_sent_short_of_its_target_probed_nothing() -> None:
    probe = probe_at(1_000_000)
    collect(probe, through(cluster(500_000), None))
    result = judge(probe, 10.7, SETTINGS)
    assert result is not None and result.reason == "not sent"


def test_new_probe_pads_up_to_the_target_long_enough_to_outlast_a_burst() -> None:
    probe = new_probe(5.0, 250_000, 500_000, 150_000, SETTINGS)
    assert probe.rate == pytest.approx(350_000)
    assert probe.duration == SETTINGS.max_duration  # 320 kbit above 250 k: over 1 s
    fast = new_probe(5.0, 2_000_000, 6_000_000, 1_700_000, SETTINGS)
    assert fast.duration == SETTINGS.min_duration
    assert fast.sending(5.1) and not fast.sending(5.0 + fast.duration)
