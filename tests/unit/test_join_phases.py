"""loadgen.join_phases: the per-phase join timeline (pure)."""

from __future__ import annotations

from loadgen.join_phases import (
    END,
    ORDER,
    JoinTimeline,
    durations,
    nearest_rank,
    order_problems,
    phase_medians,
)


def test_the_first_mark_of_a_phase_wins_and_times_are_ms_since_start() -> None:
    timeline = JoinTimeline(start=10.0)
    timeline.mark("joined", 10.004)
    timeline.mark("joined", 10.5)  # a rejoin's: ignored
    timeline.mark(END, 10.0456)
    timeline.mark("ws_open", 10.001)
    assert timeline.ms("joined") == 4.0
    assert timeline.total_ms == 45.6
    assert timeline.ms("publish.offer_sent") is None and not timeline.has("publish.offer_sent")
    # reported in the reference order, whatever the order of marking
    assert list(timeline.to_json()) == ["ws_open", "joined", END]


def test_unknown_phases_are_reported_after_the_known_ones() -> None:
    timeline = JoinTimeline(start=0.0)
    timeline.mark("zz.custom", 0.001)
    timeline.mark("joined", 0.002)
    assert list(timeline.to_json()) == ["joined", "zz.custom"]


def test_order_problems_compares_each_connection_chain_only() -> None:
    ok = {
        "ws_open": 1.0,
        "joined": 2.0,
        "publish.offer_sent": 5.0,
        "subscribe.offer_received": 4.0,  # before the publish offer: another chain, fine
        "publish.answer_received": 9.0,
        "subscribe.first_frame": 8.0,
    }
    assert order_problems(ok) == []
    bad = dict(ok, **{"subscribe.dtls_connected": 3.5})  # before its own offer
    problems = order_problems(bad)
    assert len(problems) == 1 and "subscribe.offer_received" in problems[0]
    assert order_problems({"joined": -1.0}) == ["joined < 0"]


def test_durations_are_steps_from_the_previous_phase_of_the_chain() -> None:
    phases = {
        "ws_open": 2.0,
        "joined": 5.0,
        "publish.offer_sent": 9.0,
        "subscribe.offer_received": 7.0,
    }
    assert durations(phases) == {
        "ws_open": 2.0,
        "joined": 3.0,
        "publish.offer_sent": 4.0,
        "subscribe.offer_received": 2.0,
    }


def test_phase_medians_and_nearest_rank() -> None:
    joins = [{"joined": 1.0, END: 50.0}, {"joined": 3.0, END: 70.0}, {"joined": 2.0}]
    medians = phase_medians(joins)
    assert medians == {"joined": 2.0, END: 60.0}
    assert list(medians) == [p for p in ORDER if p in medians]
    assert nearest_rank([], 50) is None
    assert nearest_rank([5.0, 1.0, 3.0, 4.0, 2.0], 50) == 3.0
    assert nearest_rank([5.0, 1.0, 3.0, 4.0, 2.0], 95) == 5.0


def test_ice_may_connect_before_the_answer_is_sent_but_dtls_may_not() -> None:
    base = {"ws_open": 1.0, "joined": 2.0, "subscribe.offer_received": 3.0}
    early_ice = dict(base, **{"subscribe.ice_connected": 5.0, "subscribe.answer_sent": 6.0})
    assert order_problems(early_ice) == []  # (Chromium answering: its checks succeed first)
    assert durations(early_ice)["subscribe.answer_sent"] == 1.0  # from ICE, the latest before
    early_dtls = dict(early_ice, **{"subscribe.dtls_connected": 5.5})
    assert order_problems(early_dtls) == [
        "subscribe.dtls_connected (5.5) before subscribe.answer_sent (6.0)"
    ]
