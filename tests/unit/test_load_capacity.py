"""``parley load --find-capacity``: the stepping and the per-step measurement (pure)."""

from __future__ import annotations

import pytest

from loadgen.load.capacity import CapacitySearch, ServiceLevel, StepResult, measure_step
from loadgen.load.config import LoadConfig
from loadgen.load.metrics import Interval
from loadgen.load.plan import subscriber_specs


def _step(
    per_room: int, p99: float | None = 5.0, loss: float | None = 0.0, saturated: bool = False
) -> StepResult:
    return StepResult(per_room, per_room * 2, p99, loss, 1000.0, 50.0, saturated)


def test_steps_up_until_latency_breaks_and_reports_the_last_level_that_held() -> None:
    search = CapacitySearch(start=2, step=3, limit=100, level=ServiceLevel(p99_ms=50, loss_pct=1))
    assert search.record(_step(2)) == 5
    assert search.record(_step(5, p99=49.9)) == 8
    assert search.record(_step(8, p99=61.0)) is None
    assert search.stopped_by == "service level"
    best = search.best()
    assert best is not None and best.subscribers_per_room == 5
    out = search.to_json()
    assert out["max_subscribers_per_room"] == 5
    assert out["max_subscribers"] == 10
    assert out["lower_bound"] is False
    assert out["steps"][-1]["reasons"] == ["p99 latency 61.0 ms > 50 ms"]


def test_loss_breaks_too_and_no_media_is_a_failure() -> None:
    search = CapacitySearch(1, 1, 10, ServiceLevel())
    assert search.record(_step(1, loss=1.5)) is None
    assert search.best() is None
    assert search.to_json()["max_subscribers_per_room"] is None
    search = CapacitySearch(1, 1, 10, ServiceLevel())
    assert search.record(_step(1, p99=None, loss=None)) is None
    assert search.steps[0].reasons == ["no media received"]


def test_saturated_load_generator_or_limit_give_a_lower_bound() -> None:
    search = CapacitySearch(1, 2, 10, ServiceLevel())
    assert search.record(_step(1)) == 3
    assert search.record(_step(3, saturated=True)) is None
    assert search.stopped_by == "load generator saturated"
    assert search.to_json()["lower_bound"] is True
    assert search.best().subscribers_per_room == 3  # type: ignore[union-attr]
    search = CapacitySearch(4, 4, 9, ServiceLevel())
    assert search.record(_step(4)) == 8
    assert search.record(_step(8)) is None
    assert search.stopped_by == "limit"


def test_invalid_search() -> None:
    with pytest.raises(ValueError):
        CapacitySearch(0, 1, 10, ServiceLevel())
    with pytest.raises(ValueError):
        CapacitySearch(5, 1, 4, ServiceLevel())


def _progress(
    t: float,
    worker: int,
    latency: float,
    received: int,
    lost: int,
    cpu: float = 10.0,
    lag: float = 1.0,
) -> dict:
    interval = Interval()
    interval.latency["audio"].record(latency)
    interval.latency["video"].record(latency * 2)
    interval.counters["video"].received = received
    interval.counters["video"].expected = received + lost
    interval.counters["video"].lost = lost
    return {"t": t, "worker": worker, "interval": interval.to_json(), "cpu_pct": cpu, "lag_ms": lag}


def test_measure_step_uses_only_its_window() -> None:
    progress = [
        _progress(100.0 + i, w, 1.0 + i, 100, 1 if i == 3 else 0) for i in range(6) for w in (0, 1)
    ]
    result = measure_step(progress, [30.0, 50.0], 101.0, 104.0, 3, 6)
    # seconds 102, 103, 104: latency up to 5 ms audio, 10 ms video; one loss at 103
    assert result.p99_ms == pytest.approx(10.0)
    assert result.loss_pct == pytest.approx(100 * 2 / 602)
    assert result.received_pps == pytest.approx(200)
    assert result.server_cpu_pct == 40.0
    assert not result.loadgen_saturated
    # both sides' CPU: two workers at 10 % each, 200 packets/s received -> 1000 µs/packet
    assert result.loadgen_cpu_pct == 20.0
    assert result.loadgen_us_per_received_packet == pytest.approx(1000.0)
    assert result.saturated is None
    assert measure_step(progress, [90.0, 95.0], 101.0, 104.0, 3, 6).saturated == "server"
    busy = [_progress(100.0 + i, 0, 1.0, 100, 0, cpu=95.0) for i in range(5)]
    assert measure_step(busy, [], 100.0, 104.0, 1, 1).loadgen_saturated
    assert measure_step(busy, [], 100.0, 104.0, 1, 1).saturated == "load generator"
    assert measure_step(busy, [99.0], 100.0, 104.0, 1, 1).saturated == "both"
    lagging = [_progress(100.0 + i, 0, 1.0, 100, 0, lag=80.0) for i in range(5)]
    assert measure_step(lagging, [], 100.0, 104.0, 1, 1).loadgen_saturated


def test_added_subscribers_continue_the_numbering() -> None:
    config = LoadConfig(url=None, rooms=2, subscribers=2, simulcast=True, ramp=10)
    more = subscriber_specs(config, 2, 2)
    assert [s.name for s in more] == ["sub-0-2", "sub-1-2", "sub-0-3", "sub-1-3"]
    assert [s.index for s in more] == [4, 5, 6, 7]
    assert [s.start_at for s in more] == pytest.approx([0.0, 0.1, 0.2, 0.3])
