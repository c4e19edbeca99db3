"""sfu.speaker.ActiveSpeakerDetector (pure: loudness samples and times passed in)."""

from __future__ import annotations

from sfu.speaker import ActiveSpeakerDetector, SpeakerSettings

LOUD, SOFT, QUIET = 115.0, 90.0, 20.0


def run(det: ActiveSpeakerDetector, script, start=0.0, step=0.3):
    """Feed the same sample ``n`` times per script entry; return (time, current) changes."""
    changes = []
    t = start
    for sample, n in script:
        for _ in range(n):
            if det.update(sample, t):
                changes.append((round(t, 2), det.current))
            t += step
    return changes, t


def test_first_speaker_takes_the_floor_at_once():
    det = ActiveSpeakerDetector()
    assert det.update({"a": LOUD, "b": QUIET}, 0.0)
    assert det.current == "a"


def test_nobody_above_threshold_means_no_speaker():
    det = ActiveSpeakerDetector()
    changes, _ = run(det, [({"a": QUIET, "b": None}, 20)])
    assert changes == [] and det.current is None


def test_challenger_needs_margin_and_time():
    det = ActiveSpeakerDetector(SpeakerSettings(switch_delay=0.6, min_hold=1.5))
    det.update({"a": LOUD, "b": QUIET}, 0.0)
    # b speaks about as loud as a: no change (margin)
    changes, t = run(det, [({"a": LOUD, "b": LOUD - 2}, 10)], start=0.3)
    assert changes == []
    # a stops, b goes on: b takes the floor after the switch delay
    changes, t = run(det, [({"a": QUIET, "b": LOUD}, 10)], start=t)
    assert [c[1] for c in changes] == ["b"]
    assert changes[0][0] - 3.3 >= 0.6 - 1e-9


def test_silence_keeps_the_last_speaker_and_leaving_clears_it():
    det = ActiveSpeakerDetector()
    det.update({"a": LOUD, "b": QUIET}, 0.0)
    changes, t = run(det, [({"a": None, "b": None}, 30)], start=0.3)
    assert changes == [] and det.current == "a"
    assert det.update({"b": None}, t)  # a left
    assert det.current is None


def test_short_interjections_do_not_flap():
    """b coughs for one interval every two seconds while a talks: a keeps the floor."""
    det = ActiveSpeakerDetector()
    script = []
    for _ in range(10):
        script.append(({"a": SOFT, "b": LOUD}, 1))
        script.append(({"a": SOFT, "b": QUIET}, 6))
    det.update({"a": SOFT, "b": QUIET}, -0.3)
    changes, _ = run(det, script)
    assert changes == [] and det.current == "a"


def test_alternating_speakers_switch_each_turn_but_not_faster_than_min_hold():
    det = ActiveSpeakerDetector(SpeakerSettings(min_hold=1.5))
    turns = [({"a": LOUD, "b": QUIET}, 10), ({"a": QUIET, "b": LOUD}, 10)] * 3
    changes, _ = run(det, turns)
    assert [c[1] for c in changes] == ["a", "b", "a", "b", "a", "b"]
    times = [c[0] for c in changes]
    assert all(b - a >= 1.5 for a, b in zip(times, times[1:], strict=False))
