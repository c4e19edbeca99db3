"""The send-side estimator on simulated paths (``gcc_sim.py``): a link that narrows to
300 kbit/s under 1.7 Mbit/s, probes into it, the link lifted again, a clean link with a
jittery receiver, random loss; and where the first decrease comes when 15 fps frames
meet a link that narrows a little or steeply (the onset rule)."""

from __future__ import annotations

import statistics

import pytest

from sfu.gcc.estimator import SendSideEstimator
from sfu.gcc.settings import GccSettings

from .gcc_sim import Link, Receiver, Simulation

LIMIT = 300_000.0
NARROW_AT = 5.0
LIFT_AT = 30.0


def narrowing(t: float) -> Link:
    return Link(rate=LIMIT) if NARROW_AT <= t < LIFT_AT else Link()


@pytest.fixture(scope="module", params=[1, 2, 3])
def narrowed(request: pytest.FixtureRequest) -> Simulation:
    sim = Simulation(narrowing, Receiver(jitter=(0.003, 0.01)), seed=request.param)
    sim.run(0.0, 40.0)
    return sim


def test_no_estimate_before_the_link_narrows(narrowed: Simulation) -> None:
    t = narrowed.trace
    assert all(t.estimates[i] is None for i in t.between(0.0, NARROW_AT))


def test_narrowed_link_is_followed_within_a_second(narrowed: Simulation) -> None:
    t = narrowed.trace
    after = [t.estimates[i] for i in t.between(NARROW_AT + 1.2, NARROW_AT + 1.5)]
    assert after and all(e is not None and e < LIMIT for e in after), after


def test_estimate_settles_near_the_link_not_far_below(narrowed: Simulation) -> None:
    t = narrowed.trace
    limited = [t.estimates[i] for i in t.between(NARROW_AT + 1.0, LIFT_AT)]
    assert all(e is not None for e in limited)
    values = [e for e in limited if e is not None]
    assert min(values) >= 200_000, min(values)
    settled = [t.estimates[i] for i in t.between(NARROW_AT + 5.0, LIFT_AT)]
    median = statistics.median(e for e in settled if e is not None)
    assert 230_000 <= median <= LIMIT, median
    # while the link limits, the estimate never climbs far above it
    assert max(values) <= 1.3 * LIMIT, max(values)


def test_no_decrease_far_below_what_is_acknowledged(narrowed: Simulation) -> None:
    decreases = [
        (when, cap)
        for when, what, cap in narrowed.bwe.events
        if what in ("delay", "loss") and NARROW_AT < when < LIFT_AT
    ]
    assert decreases
    assert all(cap is not None and cap >= 200_000 for _, cap in decreases), decreases


def test_probes_into_the_narrow_link_fail(narrowed: Simulation) -> None:
    events = narrowed.bwe.events
    probes = [w for w, what, _ in events if what == "probe" and NARROW_AT < w < LIFT_AT - 2]
    failed = [w for w, what, _ in events if what.startswith("probe failed") and w < LIFT_AT]
    assert len(probes) >= 3, events  # it keeps trying, every few seconds ...
    assert not [w for w, what, _ in events if what == "probe ok" and NARROW_AT < w < LIFT_AT]
    assert len(failed) >= len(probes)  # ... and each one fails


def test_lifted_link_is_found_within_eight_seconds(narrowed: Simulation) -> None:
    t = narrowed.trace
    late = [t.estimates[i] for i in t.between(LIFT_AT + 8.0, LIFT_AT + 10.0)]
    assert late and all(e is None or e > 2_000_000 for e in late), late


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_jittery_receiver_on_a_clean_link_is_not_capped(seed: int) -> None:
    # a receiver's process waking every 5-20 ms and stalling 100-300 ms about once a
    # second: its arrival times jitter and bunch, nothing queues on the path
    receiver = Receiver(jitter=(0.005, 0.02), stall_chance=0.015, stall=(0.1, 0.3))
    sim = Simulation(lambda t: Link(), receiver, seed=seed)
    trace = sim.run(0.0, 20.0)
    caps = [e for e in trace.estimates if e is not None]
    assert not caps or min(caps) >= 1_700_000, sim.bwe.events
    assert sim.bwe.acknowledged_rate(20.0) is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_loss_of_five_percent_holds(seed: int) -> None:
    sim = Simulation(lambda t: Link(loss=0.05), seed=seed)
    trace = sim.run(0.0, 20.0)
    caps = [e for e in trace.estimates if e is not None]
    assert not caps or min(caps) >= 1_700_000, sim.bwe.events
    assert 0.02 <= sim.bwe.loss <= 0.10  # it was seen, and held on


def test_sender_that_does_not_slow_down_keeps_the_estimate_near_the_link() -> None:
    # only a 1.7 M layer: the sender goes on at 1.7 M into the 300 k link, losing
    # most of it; the cuts on what is sent stop at what the receiver still gets
    sim = Simulation(narrowing, Receiver(jitter=(0.003, 0.01)), layers=(1_700_000.0,))
    trace = sim.run(0.0, 20.0)
    limited = [trace.estimates[i] for i in trace.between(NARROW_AT + 1.5, 20.0)]
    assert all(e is not None and 0.8 * LIMIT <= e <= LIMIT for e in limited), limited


def test_first_decrease_lands_near_the_link_at_once(narrowed: Simulation) -> None:
    """Frames sent as bursts fill the narrow link's queue within a frame or two: the
    queue that stands shows before the trendline's send groups have crossed, and what
    arrives behind it measures the link, so the first decrease goes to about the link
    (not to a share of what the longer window still holds from before)."""
    decreases = [
        (when, cap)
        for when, what, cap in narrowed.bwe.events
        if what in ("delay", "loss") and when > NARROW_AT
    ]
    assert decreases, narrowed.bwe.events
    when, cap = decreases[0]
    assert when - NARROW_AT < 0.6, decreases
    assert cap is not None and 0.7 * LIMIT <= cap <= 1.1 * LIMIT, decreases


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_queue_of_the_onset_does_not_lower_the_estimate_again(seed: int) -> None:
    """Behind a deep queue (a ``tbf`` holding 0.55 s at 300 kbit/s), the feedback that
    follows the first decrease still reports packets sent before it: the decrease
    answered them, so they lower nothing further (a chain of cuts on them took the
    estimate to 0.5-0.6 x the link)."""

    def deep(t: float) -> Link:
        return Link(rate=LIMIT, queue_limit=0.55) if t >= NARROW_AT else Link()

    sim = Simulation(deep, Receiver(jitter=(0.003, 0.01)), seed=seed)
    sim.run(0.0, NARROW_AT + 4.0)
    caps = [
        cap
        for when, what, cap in sim.bwe.events
        if what in ("delay", "loss") and NARROW_AT < when < NARROW_AT + 3.0
    ]
    assert caps and min(c for c in caps if c is not None) >= 0.75 * LIMIT, sim.bwe.events


def _first_decrease(rate: float, seed: int, **kwargs: float) -> tuple[float, float]:
    """(s after the limit, cap) of the first decrease when 1.5 Mbit/s of 15 fps frames
    (``parley bot``'s top layer) meets a ``rate`` bit/s link."""

    def link(t: float) -> Link:
        return Link(rate=rate) if t >= NARROW_AT else Link()

    layers = (150_000.0, 500_000.0, 1_500_000.0)
    sim = Simulation(link, Receiver(jitter=(0.003, 0.01)), seed=seed, layers=layers, fps=15.0)
    sim.bwe = SendSideEstimator(GccSettings(**kwargs))
    sim.run(0.0, NARROW_AT + 2.0)
    when, cap = next(
        (when, cap)
        for when, what, cap in sim.bwe.events
        if what in ("delay", "loss") and when > NARROW_AT and cap is not None
    )
    return when - NARROW_AT, cap


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_queue_building_slowly_is_answered_before_it_stands(seed: int) -> None:
    """1.5 Mbit/s into 1 Mbit/s: the queue grows half a second per second once the
    bottleneck's burst is spent, and a standing queue (80 ms) or the trendline shows
    it only 0.55-0.65 s after the limit. A queue of 40 ms with the newest 0.1 s of
    arrivals at 0.6-0.8x what is sent answers it about 0.1 s sooner, at about the link."""
    when, cap = _first_decrease(1_000_000.0, seed)
    late, _ = _first_decrease(1_000_000.0, seed, onset_queue=9.0)  # the rule off
    assert when <= 0.53 and when < late - 0.03, (when, late)
    assert 850_000 <= cap <= 1_000_000, cap


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_steep_narrowing_waits_for_the_queue_that_stands(seed: int) -> None:
    """1.5 Mbit/s into 500 kbit/s: the arrivals run at a third of what is sent, so
    the onset rule leaves it to the queue that stands a feedback later, whose recent
    arrivals measure the link (a longer window would still hold the bottleneck's burst
    and land over the 500 kbit/s layer): the first decrease is the one without the rule."""
    assert _first_decrease(500_000.0, seed) == _first_decrease(500_000.0, seed, onset_queue=9.0)
