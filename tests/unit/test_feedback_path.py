"""The send-side estimator's per-packet part: C (``sfu/_feedback.c``) against Python
(``sfu/gcc/feedback_path.py``).

Both are fed the same transport-cc feedback, property-based: queues that build and
drain, loss, packets reported again (repeated and overlapping feedback), a receiver
that stalls and stamps its backlog at once, arrivals that go backwards, a receiver's
clock that starts over, probe spans. After every feedback they must return the same
batch (bit for bit: the C part computes its doubles as Python does) and give the same
answer to every query at several times.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sfu._native import FeedbackPath as CFeedbackPath
from sfu._native import Trendline as CTrendline

from sfu import native
from sfu.gcc.estimator import SendSideEstimator
from sfu.gcc.feedback_path import PyFeedbackPath
from sfu.gcc.packet import PacketResult
from sfu.gcc.trendline import TrendlineDetector, TrendlineSettings

from .gcc_recorded import recorded
from .gcc_sim import Link, Receiver, Simulation

QUERY_OFFSETS = (0.0, 0.05, 0.9, 1.5, 2.5)


def _answers(path: object, now: float) -> list[object]:
    p: PyFeedbackPath = path  # type: ignore[assignment]
    out: list[object] = [p.highest, p.stalls, p.group_resets, p.newest_send(), p.stall_suspect()]
    for dt in QUERY_OFFSETS:
        t = now + dt
        out += [
            p.acked_rate(t),
            p.sent_rate(t),
            p.recent_rate(t, 0.2),
            p.recent_rate(t, 0.1),
            p.acked_fresh(t),
            p.queue_delay(t),
            p.queue_standing(t),
            p.stall_holding(t),
        ]
    return out


def _feedback_run(seed: int, feedbacks: int) -> list[tuple[list[PacketResult], float, list]]:
    """A random run: each item is (results, now, spans)."""
    rng = random.Random(seed)
    out = []
    seq = rng.choice([0, 1000, 70_000])
    send = rng.uniform(0, 100)
    offset = rng.uniform(-50, 50)  # receiver clock - SFU clock
    queue = 0.0
    history: list[PacketResult] = []
    for _ in range(feedbacks):
        results = []
        mode = rng.random()
        n = rng.randint(1, 40)
        stall = rng.random() < 0.08
        stall_len = rng.uniform(0.08, 0.4)
        for i in range(n):
            send += rng.choice([0.0, 0.0, 0.001, 0.004, 0.006, 0.02, rng.uniform(0, 0.05)])
            if mode < 0.3:
                queue = max(0.0, queue + rng.uniform(-0.002, 0.006))
            elif mode < 0.5:
                queue = max(0.0, queue - 0.01)
            arrival: float | None = send + offset + 0.02 + queue + rng.uniform(0, 0.002)
            if stall and i < n // 2:
                arrival = send + offset + 0.02 + stall_len - (i / n) * stall_len
            if rng.random() < 0.03:
                arrival = send + offset - rng.uniform(0, 0.05)  # backwards
            if rng.random() < 0.06:
                arrival = None
            size = rng.choice([80, 200, 1100, 1200, rng.randint(20, 1300)])
            results.append(PacketResult(seq, send, size, arrival))
            seq += 1
        if rng.random() < 0.03:
            offset += rng.choice([-20.0, 30.0])  # the receiver's clock starts over
        if history and rng.random() < 0.1:  # a repeated or overlapping feedback
            k = rng.randint(1, min(len(history), 30))
            results = history[-k:] + results[: rng.randint(0, len(results))]
        history = (history + results)[-200:]
        now = send + rng.uniform(0.01, 0.2)
        if rng.random() < 0.05:
            now += rng.uniform(1.0, 4.0)  # feedback after a silence
            send += rng.uniform(1.0, 4.0)
        spans = []
        if rng.random() < 0.3:
            a = send - rng.uniform(0, 0.5)
            spans = [(a, a + rng.uniform(0, 0.4)) for _ in range(rng.randint(1, 3))]
        out.append((results, now, spans))
    return out


def _check(run: list[tuple[list[PacketResult], float, list]]) -> None:
    c, py = CFeedbackPath(), PyFeedbackPath()
    for results, now, spans in run:
        got, want = c.update(results, now, spans), py.update(results, now, spans)
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert tuple(got) == tuple(want)
        assert _answers(c, now) == _answers(py, now)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 120))
def test_the_c_path_matches_the_python_one(seed: int, feedbacks: int) -> None:
    _check(_feedback_run(seed, feedbacks))


def test_long_runs_match_and_the_windows_stay_bounded() -> None:
    for seed in range(5):
        _check(_feedback_run(seed, 1500))


def test_a_repeated_feedback_counts_once() -> None:
    results = [PacketResult(i, i * 0.01, 1000, 5 + i * 0.01) for i in range(10)]
    for path in (CFeedbackPath(), PyFeedbackPath()):
        first = path.update(results, 1.0, [])
        assert first is not None and len(first[0]) == 10 and path.highest == 9
        assert path.update(results, 1.1, []) is None
        again = path.update(results[5:] + [PacketResult(10, 0.1, 500, None)], 1.2, [])
        assert again is not None
        assert [r.seq for r in again[0]] == [10] and again[1] == 1  # one new, lost


def test_probe_spans_are_left_out_of_the_loss_counts() -> None:
    results = [PacketResult(i, i * 0.01, 100, None if i % 2 else 1 + i * 0.01) for i in range(10)]
    for path in (CFeedbackPath(), PyFeedbackPath()):
        batch = path.update(results, 1.0, [(0.02, 0.06)])  # sends 0.02-0.05 inside
        assert batch is not None
        assert tuple(batch[4]) == (6, 3, 600, 0.0, 0.09)
        assert path.update([PacketResult(10, 0.1, 100, 2.0)], 1.1, [(0.0, 1.0)])[4] is None


def test_bad_input_is_refused_with_an_error() -> None:
    path = CFeedbackPath()
    with pytest.raises(TypeError):
        path.update(5, 1.0)
    with pytest.raises(AttributeError):
        path.update([object()], 1.0)
    with pytest.raises(ValueError):
        path.update([], 1.0, [(0.0, 1.0)] * 17)
    assert path.update([PacketResult(0, 0.0, 100, 1.0)], 1.0) is not None  # still usable


def test_the_server_uses_the_c_path() -> None:
    assert native.FeedbackPath is CFeedbackPath or not native.NATIVE
    assert native.Trendline is CTrendline or not native.NATIVE


def _deltas(seed: int, n: int) -> list[tuple[float, float, float]]:
    """Group deltas: jitter, queues building and draining, spikes, stalls' bunches."""
    rng = random.Random(seed)
    arrival = rng.uniform(-100, 100)
    out = []
    ramp = 0.0
    for _ in range(n):
        send = rng.choice([0.005, 0.0066, 0.033, 0.066, rng.uniform(0.0, 0.1)])
        if rng.random() < 0.05:
            ramp = rng.choice([0.0, 0.002, 0.008, -0.004])
        jitter = rng.uniform(-0.015, 0.015) * rng.choice([0.0, 0.2, 1.0])
        spike = rng.choice([0.0] * 30 + [0.3, -0.05])
        arrival_delta = max(0.0, send + ramp + jitter + spike)
        arrival += arrival_delta
        out.append((send, arrival_delta, arrival))
    return out


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 400),
    st.sampled_from([TrendlineSettings(), TrendlineSettings(window=8, min_deltas=10)]),
)
def test_the_c_trendline_matches_the_python_one(seed: int, n: int, s: TrendlineSettings) -> None:
    c, py = CTrendline(s), TrendlineDetector(s)
    deltas = _deltas(seed, n)
    split = n // 3
    assert c.update_all(deltas[:split]) == py.update_all(deltas[:split])
    for delta in deltas[split:]:
        assert c.update(*delta) == py.update(*delta)
        assert (c.threshold, c.trend, c.modified_trend) == (
            py.threshold,
            py.trend,
            py.modified_trend,
        )


def test_the_trendline_reads_overuse_on_a_building_queue() -> None:
    for trend in (CTrendline(TrendlineSettings()), TrendlineDetector()):
        arrival, states = 0.0, []
        for i in range(60):
            arrival_delta = 0.033 + (0.01 if i >= 30 else 0.0)
            arrival += arrival_delta
            states.append(trend.update(0.033, arrival_delta, arrival))
        assert states[:30] == ["normal"] * 30 and "overusing" in states[30:]


# ------------------------------------------------------------ the estimator on either


def _narrowing(t: float) -> Link:
    return Link(rate=300_000.0) if 3.0 <= t < 15.0 else Link(loss=0.02 if t >= 18 else 0.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_estimator_decides_alike_on_either_path(seed: int) -> None:
    """A narrowing link with probes, a stalling receiver and loss after the lift: the
    whole run (estimate, acknowledged rate, delay state every tick; the cap's events)
    is the same with the C path as with the Python one."""
    receiver = Receiver(jitter=(0.003, 0.01), stall_chance=0.01)
    runs = []
    for path, trendline in ((PyFeedbackPath, TrendlineDetector), (CFeedbackPath, CTrendline)):
        sim = Simulation(_narrowing, receiver, seed=seed, path=path, trendline=trendline)
        trace = sim.run(0.0, 25.0)
        runs.append((trace, sim.bwe.events, sim.bwe.probes_ok, sim.bwe.loss))
    (py_trace, *py_rest), (c_trace, *c_rest) = runs
    assert c_trace == py_trace
    assert c_rest == py_rest
    assert any(what.startswith("probe") for _, what, _ in py_rest[0])  # probes were judged


@pytest.mark.parametrize(
    "fixture", ["chromium_transport_cc.jsonl", "chromium_transport_cc_loss.jsonl"]
)
def test_recorded_chromium_feedback_gives_the_same_estimates(fixture: str) -> None:
    ests = [
        SendSideEstimator(path=PyFeedbackPath),
        SendSideEstimator(path=CFeedbackPath, trendline=CTrendline),
    ]
    for when, results in recorded(fixture):
        for bwe in ests:
            bwe.on_feedback(results, when)
        py, c = ests
        assert c.estimate(when) == py.estimate(when)
        assert c.acknowledged_rate(when) == py.acknowledged_rate(when)
        assert c.queue_delay(when) == py.queue_delay(when)
        assert (c.delay_state, c.loss, c.rtt) == (py.delay_state, py.loss, py.rtt)
