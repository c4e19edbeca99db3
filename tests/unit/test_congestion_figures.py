"""The table's figures from synthetic page samples (loadgen/congestion_figures.py)."""

from __future__ import annotations

from typing import Any

from loadgen.congestion_figures import (
    Window,
    audio_loss,
    check,
    clean_figures,
    layer_changes,
    longest_freeze,
    min_fps,
    slow_figures,
)
from loadgen.loop_stalls import Stall, held_off_within, late_tick

STEP = 0.2


def _samples(plan: list[tuple[float, float, int, float]]) -> list[dict[str, Any]]:
    """``plan``: (from t, to t, height, fps) pieces; audio at 50 packets/s, none lost."""
    out: list[dict[str, Any]] = []
    frames = 0.0
    packets = 0.0
    for start, end, height, fps in plan:
        t = start
        while t < end - 1e-9:
            frames += fps * STEP
            packets += 50 * STEP
            out.append(
                {
                    "t": round(t, 3),
                    "video": {"framesDecoded": int(frames), "frameHeight": height},
                    "audio": {
                        "packetsReceived": int(packets),
                        "packetsLost": 0,
                        "concealedSamples": 0,
                        "silentConcealedSamples": 0,
                        "totalSamplesReceived": int(packets) * 960,
                    },
                }
            )
            t += STEP
    return out


def test_a_switch_to_a_lower_layer_that_keeps_decoding_meets_the_300k_row() -> None:
    samples = _samples([(0, 10, 720, 15), (10, 11.4, 720, 15), (11.4, 35, 180, 15), (35, 41, 360, 15), (41, 60, 720, 15)])  # fmt: skip
    layers = [
        {"t": 0.0, "rid": "f", "paused": False},
        {"t": 11.3, "rid": "q", "paused": False},
        {"t": 35.0, "rid": "h", "paused": False},
        {"t": 41.0, "rid": "f", "paused": False},
    ]
    slow = slow_figures(samples, layers, Window(10.0, 34.9, 60.0))
    assert slow["switch_down_s"] is not None and 1.3 <= slow["switch_down_s"] <= 1.5
    assert slow["heights_during_limit"] == [180, 720]
    assert slow["min_fps_after_switch"] is not None and slow["min_fps_after_switch"] >= 14
    assert slow["layer_changes"] == 1
    assert slow["back_to_top_s"] is not None and 6.0 <= slow["back_to_top_s"] <= 6.2
    assert slow["freeze"]["longest_s"] < 0.2
    assert check("300k", slow, None) == []


def test_a_pause_is_not_a_switch_and_is_a_freeze() -> None:
    # the server pauses at 11 s: nothing decodes (the last height stays 720) until 30 s
    samples = _samples([(0, 11, 720, 15), (11, 30, 720, 0), (30, 35, 180, 15), (35, 60, 720, 15)])  # fmt: skip
    layers = [{"t": 0.0, "rid": "f"}, {"t": 11.0, "rid": None, "paused": True}, {"t": 30.0, "rid": "q"}]  # fmt: skip
    slow = slow_figures(samples, layers, Window(10.0, 35.0, 60.0))
    assert slow["switch_down_s"] is not None and slow["switch_down_s"] >= 20
    assert slow["freeze"]["stall_s"] > 18
    assert slow["paused_s"] == 19.0
    assert slow["layer_changes"] == 2
    failed = check("300k", slow, None)
    assert any("within 2.0 s" in f for f in failed), failed
    assert any("freeze" in f for f in failed), failed


def test_audio_loss_counts_lost_over_expected_and_concealment() -> None:
    samples = [
        {
            "t": 0.0,
            "audio": {
                "packetsReceived": 0,
                "packetsLost": 0,
                "concealedSamples": 0,
                "totalSamplesReceived": 0,
            },
        },
        {
            "t": 10.0,
            "audio": {
                "packetsReceived": 990,
                "packetsLost": 10,
                "concealedSamples": 4800,
                "silentConcealedSamples": 960,
                "totalSamplesReceived": 480000,
            },
        },
    ]
    figures = audio_loss(samples, 0.0, 10.0)
    assert figures["loss_pct"] == 1.0
    assert figures["concealed_pct"] == 0.8


def test_min_fps_and_freeze_and_chromium_freeze_counters() -> None:
    samples = _samples([(0, 5, 720, 15), (5, 6.6, 720, 0), (6.6, 10, 720, 15)])
    assert min_fps(samples, 0, 10) == 0.0
    assert 1.3 <= longest_freeze(samples, 0, 10)["stall_s"] <= 1.6
    samples[40]["video"]["freezeCount"] = 0
    for s in samples[41:]:
        s["video"]["freezeCount"] = 1
        s["video"]["totalFreezesDuration"] = 1.7
    frozen = longest_freeze(samples, 0, 10)
    assert frozen["freezes"] == 1 and frozen["chromium_s"] == 1.7 and frozen["longest_s"] == 1.7


def test_layer_changes_ignore_repeats_and_what_came_before() -> None:
    layers = [
        {"t": 1.0, "rid": "f"},
        {"t": 5.0, "rid": "h"},
        {"t": 11.0, "rid": "h"},
        {"t": 12.0, "rid": "q"},
        {"t": 13.0, "rid": "q", "paused": True},
        {"t": 40.0, "rid": "f"},
    ]
    assert layer_changes(layers, 10.0, 35.0) == 2


def test_the_clean_subscriber_leaving_the_top_layer_fails() -> None:
    samples = _samples([(0, 20, 720, 15), (20, 22, 360, 15), (22, 40, 720, 15)])
    clean = clean_figures(samples, [{"t": 0.0, "rid": "f"}], 1.0, 40.0)
    assert clean["samples_below_top"] == 10
    slow = slow_figures(
        _samples([(0, 11, 720, 15), (11, 60, 180, 15)]), [], Window(10.0, 35.0, 60.0)
    )
    failed = check("loss5", slow, clean)
    assert failed and "never leaves 720p" in failed[0], failed


def test_the_loss_row_judges_what_was_concealed_not_packets_red_recovered() -> None:
    """At 5 % random loss the SFU sends RED: packetsLost counts the RTP packets the link
    lost (about 5 %), but their audio came from the next packets' redundant blocks; what
    was lost after repair is what NetEq concealed."""

    def run(lost: int, concealed: int) -> list[str]:
        samples = _samples([(0, 10, 720, 15), (10, 35, 720, 15), (35, 60, 720, 15)])
        for s in samples:
            if s["t"] >= 10:
                progress = min(1.0, (s["t"] - 10) / 25)
                s["audio"]["packetsLost"] = int(lost * progress)
                s["audio"]["concealedSamples"] = int(concealed * progress)
        slow = slow_figures(samples, [], Window(10.0, 35.0, 60.0))
        return check("loss5", slow, None)

    assert run(lost=62, concealed=0) == []  # 5 % of 1250 packets, all recovered
    failed = run(lost=62, concealed=1250 * 960 // 100)  # 1 % concealed
    assert len(failed) == 1 and failed[0].startswith(
        "audio loss after repair < 0.5 %: concealed 1.0"
    )


def test_a_clean_subscriber_whose_decoding_stalls_0_4_s_fails() -> None:
    """The clean page's decoding may not stall 0.3 s (what 200 ms samples can see)."""
    samples = _samples([(0, 20, 720, 15), (20, 20.8, 720, 0), (20.8, 40, 720, 15)])
    clean = clean_figures(samples, [{"t": 0.0, "rid": "f"}], 1.0, 40.0)
    assert 0.3 <= clean["freeze"]["stall_s"] <= 0.8, clean
    slow = slow_figures(_samples([(0, 60, 720, 15)]), [], Window(10.0, 35.0, 60.0))
    failed = check("loss5", slow, clean)
    assert any("decoding never stalls" in f for f in failed), failed
    steady = clean_figures(_samples([(0, 40, 720, 15)]), [{"t": 0.0, "rid": "f"}], 1.0, 40.0)
    assert check("loss5", slow, steady) == []


def test_a_clean_freeze_is_the_machines_only_while_the_sfu_was_held_off() -> None:
    """Chromium counts a 0.3 s freeze on the clean page; it is excused only when the
    SFU's process did not run (a held-off stall of >= 0.1 s, ``loadgen.loop_stalls``)
    from a jitter-buffer delay before it began; a stall with the CPU busy (the SFU's own
    work) or one long before does not excuse it."""
    samples = _samples([(0, 40, 720, 15)])
    for s in samples:
        if s["t"] >= 20.1:
            s["video"]["freezeCount"] = 1
            s["video"]["totalFreezesDuration"] = 0.3
    slow = slow_figures(_samples([(0, 60, 720, 15)]), [], Window(10.0, 35.0, 60.0))

    def failed(stalls: list[Stall]) -> list[str]:
        clean = clean_figures(samples, [{"t": 0.0, "rid": "f"}], 1.0, 40.0, stalls)
        return check("loss5", slow, clean)

    # the freeze ended between the samples at 20.0 and 20.2
    assert any(f.startswith("the clean subscriber never freezes") for f in failed([]))
    held_off = Stall(start=19.75, length=0.18, cpu=0.002)
    assert failed([held_off]) == []
    busy = Stall(start=19.75, length=0.18, cpu=0.17)  # the SFU's own work: its fault
    assert failed([busy]) != []
    short = Stall(start=19.75, length=0.06, cpu=0.0)
    assert failed([short]) != []
    before = Stall(start=15.0, length=0.3, cpu=0.0)
    assert failed([before]) != []


def test_late_ticks_and_held_off() -> None:
    assert late_tick(10.0, 1.0, 10.04, 1.01, 100.04, 0.01, 0.05) is None
    stall = late_tick(10.0, 1.0, 10.26, 1.002, 100.26, 0.01, 0.05)
    assert stall is not None and abs(stall.length - 0.25) < 1e-9
    assert abs(stall.start - 100.01) < 1e-9 and stall.held_off
    busy = late_tick(10.0, 1.0, 10.26, 1.2, 100.26, 0.01, 0.05)
    assert busy is not None and not busy.held_off
    assert held_off_within([stall], 100.2, 101.0, 0.1)
    assert not held_off_within([stall], 100.3, 101.0, 0.1)
    assert not held_off_within([stall], 100.0, 101.0, 0.3)
