"""sfu.layers: which simulcast layer each subscriber gets (pure logic)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfu.layers import (
    LayerInfo,
    LayerRequest,
    LayerSelector,
    allocate,
    allowed,
    expected_bitrate,
    ordered,
    priority,
)

Q = LayerInfo(0, 320, 180, 150_000, True)
H = LayerInfo(1, 640, 360, 500_000, True)
F = LayerInfo(2, 1280, 720, 1_500_000, True)
LAYERS = [Q, H, F]


def idx(layers):
    return [layer.index for layer in layers]


def test_ordered_by_size_or_publisher_order():
    assert idx(ordered([F, Q, H])) == [0, 1, 2]
    unknown = LayerInfo(2, 0, 0, 0, True)
    assert idx(ordered([H, unknown, Q])) == [0, 1, 2]  # a size unknown: publisher order
    assert idx(ordered([Q, LayerInfo(1, 640, 360, 500_000, False), F])) == [0, 2]


def test_allowed_by_height_and_width():
    assert idx(allowed(LAYERS, LayerRequest())) == [0, 1, 2]
    assert idx(allowed(LAYERS, LayerRequest(max_height=360))) == [0, 1]
    assert idx(allowed(LAYERS, LayerRequest(max_height=719))) == [0, 1]
    assert idx(allowed(LAYERS, LayerRequest(max_width=320))) == [0]
    assert idx(allowed(LAYERS, LayerRequest(max_width=1280, max_height=360))) == [0, 1]


def test_allowed_falls_back_to_the_lowest_and_is_empty_when_paused_or_idle():
    assert idx(allowed(LAYERS, LayerRequest(max_height=90))) == [0]
    assert allowed(LAYERS, LayerRequest(max_height=720, paused=True)) == []
    idle = [LayerInfo(i, layer.width, layer.height, 0, False) for i, layer in enumerate(LAYERS)]
    assert allowed(idle, LayerRequest()) == []


def test_allocate_unlimited_gives_each_its_highest():
    assert allocate(None, [[1, 2, 3], [1, 2]], [None, None]) == [2, 1]
    assert allocate(None, [[], [5]], [None, None]) == [-1, 0]


def test_allocate_shares_the_budget_round_robin():
    demand = [150_000, 500_000, 1_500_000]
    # 1.2 Mbit/s: both up to h (1.0 Mbit/s), neither to f
    assert allocate(1_200_000, [demand, demand], [None, None]) == [1, 1]
    # 2.5 Mbit/s: the first gets f, the second stays at h
    assert allocate(2_500_000, [demand, demand], [None, None]) == [2, 1]
    # even the lowest layer does not fit: video paused (audio is not part of this budget)
    assert allocate(10_000, [demand, demand], [None, None]) == [-1, -1]
    # room for one lowest layer: the higher priority gets it, the other is paused
    assert allocate(200_000, [demand, demand], [None, None], priorities=[1, 2]) == [-1, 0]
    # resuming needs the margin, keeping does not
    assert allocate(160_000, [demand], [None]) == [-1]
    assert allocate(160_000, [demand], [0]) == [0]


def test_allocate_keeps_a_held_layer_without_the_margin():
    demand = [150_000, 500_000]
    # 520 kbit/s keeps h (held) but is not enough to go up to h (needs 575k)
    assert allocate(520_000, [demand], [1]) == [1]
    assert allocate(520_000, [demand], [0]) == [0]
    assert allocate(580_000, [demand], [0]) == [1]


@given(
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e8)),
    st.lists(
        st.lists(st.floats(min_value=1, max_value=1e7), min_size=0, max_size=4).map(sorted),
        max_size=6,
    ),
)
def test_allocate_stays_within_bounds_and_budget(budget, demands):
    levels = allocate(budget, demands, [None] * len(demands))
    assert len(levels) == len(demands)
    for level, demand in zip(levels, demands, strict=True):
        assert -1 <= level < len(demand)
        if not demand:
            assert level == -1
    if budget is None:
        assert all(level == len(d) - 1 for level, d in zip(levels, demands, strict=True))
    else:
        spent = sum(d[level] for level, d in zip(levels, demands, strict=True) if level >= 0)
        assert spent <= budget + 1e-6


RANK = {0: 0, 1: 1, 2: 2}


def test_selector_down_at_once_up_at_once_without_bandwidth_history():
    sel = LayerSelector()
    assert sel.decide(2, 2, None, RANK, 0.0) == 2  # start: whatever is proposed
    assert sel.decide(1, 1, 2, RANK, 1.0) == 1  # request went down: at once
    assert sel.last_bandwidth_down is None  # the request, not bandwidth, caused it
    assert sel.decide(2, 2, 1, RANK, 1.1) == 2  # request up: at once


def test_selector_waits_before_going_up_after_a_bandwidth_drop():
    sel = LayerSelector(up_delay=2.0)
    assert sel.decide(0, 2, 2, RANK, 10.0) == 0  # bandwidth pushed it down
    assert sel.last_bandwidth_down == 10.0
    assert sel.decide(2, 2, 0, RANK, 10.5) == 0  # proposal up: hold
    assert sel.decide(2, 2, 0, RANK, 12.4) == 0
    assert sel.decide(2, 2, 0, RANK, 12.6) == 1  # held for 2 s: one step
    assert sel.decide(2, 2, 1, RANK, 13.0) == 1
    assert sel.decide(2, 2, 1, RANK, 15.1) == 2  # and the next one 2 s later


def test_selector_resets_the_wait_when_the_proposal_drops_back():
    sel = LayerSelector(up_delay=2.0)
    sel.decide(0, 2, 2, RANK, 0.0)
    assert sel.decide(1, 2, 0, RANK, 1.0) == 0
    assert sel.decide(0, 2, 0, RANK, 2.0) == 0  # fell back: the clock restarts
    assert sel.decide(1, 2, 0, RANK, 2.5) == 0
    assert sel.decide(1, 2, 0, RANK, 4.0) == 0
    assert sel.decide(1, 2, 0, RANK, 4.6) == 1


def test_selector_never_flaps_under_an_oscillating_estimate():
    """Bandwidth alternating every second between 'f fits' and 'only q fits'."""
    sel = LayerSelector(up_delay=2.0, max_up_delay=30.0)
    current = 2
    switches = 0
    t = 0.0
    while t < 120.0:
        proposed = 0 if int(t) % 2 else 2
        chosen = sel.decide(proposed, 2, current, RANK, t)
        if chosen != current:
            switches += 1
            current = chosen
        t += 0.25
    # one downswitch: the up proposal never holds for 2 s, so it never goes up again
    assert switches == 1 and current == 0


def test_selector_backs_off_when_going_up_keeps_failing():
    sel = LayerSelector(up_delay=2.0, max_up_delay=8.0)
    sel.decide(0, 2, 2, RANK, 0.0)
    assert sel.up_delay == 2.0
    assert sel.decide(2, 2, 0, RANK, 2.0) == 0
    assert sel.decide(2, 2, 0, RANK, 4.0) == 1  # one step up
    sel.decide(0, 2, 1, RANK, 5.0)  # congested again soon after: the step failed
    assert sel.up_delay == 4.0
    sel.decide(0, 2, 0, RANK, 5.1)  # more downs in the same episode do not count
    assert sel.up_delay == 4.0
    assert sel.decide(1, 2, 0, RANK, 6.0) == 0
    assert sel.decide(1, 2, 0, RANK, 10.0) == 1  # after the longer hold
    sel.decide(0, 2, 1, RANK, 11.0)  # failed again
    assert sel.up_delay == 8.0
    assert sel.decide(1, 2, 0, RANK, 12.0) == 0
    assert sel.decide(1, 2, 0, RANK, 20.0) == 1
    sel.decide(0, 2, 1, RANK, 21.0)
    assert sel.up_delay == 8.0  # capped
    sel.decide(0, 2, 2, RANK, 100.0)  # a long calm resets it
    assert sel.up_delay == 2.0


def test_relax_takes_the_penalty_of_failed_steps_away():
    sel = LayerSelector(up_delay=1.0, max_up_delay=8.0)
    sel.decide(0, 2, 2, RANK, 0.0)
    assert sel.decide(1, 2, 0, RANK, 1.0) == 0
    assert sel.decide(1, 2, 0, RANK, 2.0) == 1
    sel.decide(0, 2, 1, RANK, 3.0)  # the step failed
    assert sel.up_delay == 2.0
    sel.relax()  # probes since showed the link takes more
    assert sel.up_delay == 1.0
    assert sel.decide(1, 2, 0, RANK, 4.0) == 0
    assert sel.decide(1, 2, 0, RANK, 5.0) == 1  # after the base hold, not twice it


def test_selector_switches_at_once_when_the_current_layer_disappears():
    sel = LayerSelector()
    sel.decide(0, 2, 2, RANK, 0.0)
    assert sel.decide(1, 1, 2, {0: 0, 1: 1}, 0.5) == 1


def test_allocate_serves_higher_priority_first():
    demand = [150_000, 500_000, 1_500_000]
    # 1.9 Mbit/s: the higher priority (e.g. the active speaker) gets f, the other q
    assert allocate(1_900_000, [demand, demand], [None, None], priorities=[1, 5]) == [0, 2]
    assert allocate(1_900_000, [demand, demand], [None, None], priorities=[5, 1]) == [2, 0]
    # equal priorities share round robin
    assert allocate(1_200_000, [demand, demand], [None, None], priorities=[3, 3]) == [1, 1]


def test_priority_speaker_first_then_larger_tiles():
    small, large = LayerRequest(max_width=320, max_height=180), LayerRequest(max_height=720)
    assert priority(large, False) > priority(small, False)
    assert priority(small, True) > priority(large, False)
    assert priority(LayerRequest(), False) > priority(large, False)


def test_selector_resumes_a_paused_track_only_after_the_hold():
    sel = LayerSelector(up_delay=2.0)
    assert sel.decide(0, 2, 0, RANK, 0.0) == 0
    assert sel.decide(None, 2, 0, RANK, 1.0) is None  # nothing fits: paused at once
    assert sel.last_bandwidth_down == 1.0
    assert sel.decide(0, 2, None, RANK, 1.5) is None  # fits again: wait
    assert sel.decide(0, 2, None, RANK, 3.6) == 0


def test_selector_pause_requested_is_not_a_bandwidth_event():
    sel = LayerSelector()
    assert sel.decide(None, None, 1, RANK, 0.0) is None
    assert sel.last_bandwidth_down is None
    assert sel.decide(1, 1, None, RANK, 0.1) == 1  # resumed by request: at once


def test_allocate_floor_keeps_every_lowest_layer():
    demand = [150_000, 500_000, 1_500_000]
    assert allocate(10_000, [demand, demand], [None, None], floor=True) == [0, 0]
    assert allocate(800_000, [demand, demand], [None, None], floor=True) == [1, 0]


def test_an_unmeasured_layer_costs_a_typical_bitrate_for_its_height() -> None:
    assert expected_bitrate(LayerInfo(0, 320, 180, 123_000.0, True), 0) == 123_000.0
    assert expected_bitrate(LayerInfo(0, 320, 180, 0.0, True), 0) == 150_000.0
    assert expected_bitrate(LayerInfo(1, 640, 360, 0.0, True), 1) == 500_000.0
    assert expected_bitrate(LayerInfo(2, 1280, 720, 0.0, True), 2) == 1_800_000.0
    # size unknown too (no keyframe yet): by position from the lowest
    assert expected_bitrate(LayerInfo(2, 0, 0, 0.0, True), 2) == 1_000_000.0
    assert expected_bitrate(LayerInfo(0, 0, 0, 0.0, True), 0) == 150_000.0
