"""Impaired links in parley load: schedules and the per-subscriber analysis."""

from __future__ import annotations

import pytest

from loadgen.impair.schedule import LinkState, analyse_subscriber, parse_schedule, parse_state
from loadgen.load.metrics import StreamRx


def test_states_and_schedules_parse() -> None:
    assert parse_state("none") == LinkState()
    assert parse_state("300") == LinkState(300)
    assert parse_state("5%") == LinkState(None, 5.0)
    assert parse_state("300+5%") == LinkState(300, 5.0)
    assert parse_schedule("20:none, 8:300") == [(8.0, LinkState(300)), (20.0, LinkState())]
    assert parse_schedule("") == []
    for bad in ("8", "x:300", "8:-3", "8:100%", "-1:none"):
        with pytest.raises(ValueError):
            parse_schedule(bad)
    assert LinkState(300).worse_than(LinkState())
    assert LinkState(None, 5).worse_than(LinkState())
    assert LinkState().better_than(LinkState(300))
    assert not LinkState(300).worse_than(LinkState(300))


def _timeline(start: float, end: float, audio_lost_from: float, audio_lost_to: float) -> list:
    """Per-second rows: 50 audio packets a second, 10 lost a second in the window."""
    rows = []
    lost = 0
    for t in range(int(start), int(end) + 1):
        if audio_lost_from < t <= audio_lost_to:
            lost += 10
        rows.append([float(t), 50.0 * t, float(lost), 100.0 * t, 0.0, 0.0, 0, 0.0, 15 * t])
    return rows


def test_a_limit_then_a_lift() -> None:
    changes = [(0.0, LinkState()), (10.0, LinkState(300)), (20.0, LinkState())]
    layers = [
        (1.0, "v", "f", False),
        (11.5, "v", "h", False),
        (13.0, "v", "q", False),
        (22.0, "v", "h", False),
        (24.0, "v", "f", False),
    ]
    out = analyse_subscriber(changes, layers, _timeline(0, 30, 13, 15), t0=0.0, end=30.0)
    assert out["switch_down_s"] == 1.5
    assert out["back_to_top_s"] == 4.0
    assert out["layer_switches_between"] == 4
    assert out["top_layer"] == {"v": "f"}
    # 20 packets lost out of the 350 expected between 13 s and 20 s
    assert out["audio_loss_pct_limited"] == pytest.approx(100 * 20 / 350, abs=0.01)
    limited = out["phases"][1]
    assert limited["change"] == "worse" and limited["rate_kbit"] == 300
    assert out["phases"][2]["change"] == "better"
    assert out["layer_changes"][0] == [1.0, "v", "f"]


def test_never_switching_down_and_paused_tracks() -> None:
    changes = [(0.0, LinkState()), (5.0, LinkState(None, 5.0)), (15.0, LinkState())]
    steady = analyse_subscriber(
        changes, [(1.0, "v", "f", False)], _timeline(0, 20, 0, 0), 0.0, 20.0
    )
    assert steady["switch_down_s"] is None  # it never had to
    assert steady["back_to_top_s"] == 0.0  # already there at the lift
    assert steady["layer_switches_between"] == 0
    paused = analyse_subscriber(
        changes,
        [(1.0, "v", "f", False), (6.0, "v", None, True), (17.0, "v", "f", False)],
        _timeline(0, 20, 0, 0),
        0.0,
        20.0,
    )
    assert paused["switch_down_s"] == 1.0 and paused["back_to_top_s"] == 2.0
    flapping = analyse_subscriber(
        changes,
        [(1.0, "v", "f", False), (6.0, "v", "h", False), (14.0, "v", "f", False),
         (16.0, "v", "h", False), (19.0049, "v", "f", False)],
        _timeline(0, 20, 0, 0),
        0.0,
        20.0,
    )  # fmt: skip
    # on top when the link recovered, but only for good 4 s later (the last switch counts
    # even when the times do not round evenly)
    assert flapping["back_to_top_s"] == 4.0 and flapping["layer_switches_between"] == 4
    assert flapping["phases"][2]["back_to_top_s"] == 4.0


def test_a_stream_resumed_after_another_layer_does_not_count_the_gap_as_loss() -> None:
    rx = StreamRx(100)
    rx.on_packet(101)
    rx.resume(500)  # the server forwarded another layer meanwhile
    rx.on_packet(500)
    rx.on_packet(502)  # 501 lost for real
    assert rx.expected == 5 and rx.lost == 1
