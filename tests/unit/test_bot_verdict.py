"""The bot's verdict (loadgen/bot/verdict.py) and reconnection backoff (loadgen/bot/reconnect.py):
pure logic on TrackStats fed with explicit times."""

from __future__ import annotations

import random

import pytest

from loadgen.bot import TrackStats
from loadgen.bot.reconnect import MAX_DELAY, Backoff, Reconnect
from loadgen.bot.verdict import Limits, RunFacts, evaluate, verdict_line

T0 = 100.0
END = 130.0


def video(name: str = "alice", published_at: float = T0 + 1.0) -> TrackStats:
    return TrackStats("p-" + name, "v-" + name, "video", T0, published_at, participant_name=name)


def audio(name: str = "alice", published_at: float = T0 + 1.0) -> TrackStats:
    return TrackStats("p-" + name, "a-" + name, "audio", T0, published_at, participant_name=name)


def frames(track: TrackStats, start: float, stop: float, fps: float = 15.0) -> None:
    t = start
    while t < stop:
        track.on_frame(t, 320, 240)
        t += 1.0 / fps


def facts(**kwargs: object) -> RunFacts:
    base: dict[str, object] = {
        "started_at": T0,
        "end": END,
        "deadline": END,
        "joined": True,
        "publish": True,
        "published": True,
        "session_joined_at": T0 + 0.2,
    }
    base.update(kwargs)
    return RunFacts(**base)  # type: ignore[arg-type]


def codes(failures: list) -> list[str]:
    return [f.code for f in failures]


def smooth(name: str = "alice") -> list[TrackStats]:
    v, a = video(name), audio(name)
    frames(v, T0 + 1.5, END)
    frames(a, T0 + 1.5, END, fps=50)
    for t in (v, a):
        t.on_packets(1000, 0)
    return [v, a]


def test_a_good_call_is_ok() -> None:
    failures = evaluate(facts(), smooth(), Limits())
    assert failures == [] and verdict_line(failures) == "ok"


def test_a_freeze_longer_than_the_limit_fails_and_says_where() -> None:
    v, a = smooth()
    v2 = video("bob")
    frames(v2, T0 + 1.5, T0 + 10.0)
    frames(v2, T0 + 17.0, END)  # 7 s without a frame
    failures = evaluate(facts(), [v, a, v2], Limits())
    assert codes(failures) == ["freeze"]
    assert "video from bob froze for 70" in failures[0].message, failures
    assert "at 10.0 s" in failures[0].message
    # under a looser limit the same call is ok
    assert evaluate(facts(), [v, a, v2], Limits(max_freeze_ms=8000)) == []
    assert verdict_line(failures).startswith("not ok: freeze: video from bob")


def test_no_freeze_before_the_first_frame_nor_after_a_publisher_left() -> None:
    late = video("late", published_at=T0 + 1.0)
    frames(late, T0 + 6.0, END)  # 5 s from publish to the first frame: join time, not a freeze
    gone = video("gone")
    frames(gone, T0 + 1.5, T0 + 10.0)
    gone.on_unpublished(T0 + 18.0)  # left (8 s after its last frame): not a freeze
    assert evaluate(facts(), [late, gone], Limits()) == []


def test_video_stopping_before_the_end_of_the_run_is_a_freeze() -> None:
    v = video()
    frames(v, T0 + 1.5, END - 3.0)  # still published, nothing for the last 3 s
    assert codes(evaluate(facts(), [v], Limits())) == ["freeze"]
    # the last frame just before the end is not one
    w = video()
    frames(w, T0 + 1.5, END - 0.05)
    assert evaluate(facts(), [w], Limits()) == []


def test_a_track_that_ended_with_a_lost_connection_has_no_trailing_freeze() -> None:
    v = video()
    frames(v, T0 + 1.5, T0 + 10.0)
    v.on_session_end(T0 + 12.0)
    assert v.trailing_gap(END) == 0.0
    assert evaluate(facts(), [v], Limits()) == []


def test_a_required_track_without_frames_fails() -> None:
    silent = video("mute")
    failures = evaluate(facts(), [*smooth(), silent], Limits())
    assert codes(failures) == ["no_media"]
    assert "no video from mute decoded" in failures[0].message
    recent = video("new", published_at=END - 1.0)  # published 1 s before the end
    assert evaluate(facts(), [*smooth(), recent], Limits()) == []


def test_loss_over_the_limit_fails_with_enough_packets() -> None:
    v, a = smooth()
    a.on_packets(900, 100)  # 10 %
    failures = evaluate(facts(), [v, a], Limits())
    assert codes(failures) == ["loss"]
    assert "audio from alice lost 10.0 %" in failures[0].message
    assert evaluate(facts(), [v, a], Limits(max_loss_pct=12.0)) == []
    a.on_packets(18, 2)  # 10 % of only 20 packets: not judged
    assert evaluate(facts(), [v, a], Limits()) == []


def test_a_lost_connection_fails_without_reconnect_and_names_the_cause() -> None:
    lost = ("connection_lost", "websocket closed (code 1006)", T0 + 31.0)
    failures = evaluate(facts(end=T0 + 31.0, deadline=T0 + 60, lost=lost), smooth(), Limits())
    assert codes(failures)[0] == "connection_lost"
    assert "websocket closed (code 1006) at 31.0 s of 60 s" in failures[0].message
    shutdown = ("server_shutdown", "the server shut down (restart)", T0 + 5.0)
    failures = evaluate(facts(lost=shutdown), smooth(), Limits())
    assert codes(failures) == ["server_shutdown"]
    # with --reconnect, not being back by the end is the failure
    failures = evaluate(
        facts(lost=lost, reconnect=True, attempts=7, last_attempt_error="refused"),
        smooth(),
        Limits(),
    )
    assert codes(failures) == ["not_recovered"]
    assert "7 attempt(s)" in failures[0].message and "refused" in failures[0].message


def test_not_joined_is_the_only_failure_reported() -> None:
    failures = evaluate(facts(joined=False, join_error="room full"), [video()], Limits())
    assert codes(failures) == ["not_joined"] and "room full" in failures[0].message


def test_publish_never_answered_and_failed_connections() -> None:
    failures = evaluate(
        facts(published=False, failed_connections=["subscribe"]), smooth(), Limits()
    )
    assert codes(failures) == ["not_published", "ice_failed"]
    # a bot that was asked not to publish is not expected to
    assert evaluate(facts(publish=False, published=False), smooth(), Limits()) == []
    # an exception that ended the stay early
    failures = evaluate(facts(end=T0 + 4, error="RuntimeError: boom"), [], Limits())
    assert codes(failures) == ["ended_early"]


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    backoff = Backoff(first=0.3, cap=2.0)
    delays = [backoff.next_delay(rng) for _ in range(10)]
    ceilings = [min(2.0, 0.3 * 2**i) for i in range(10)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling * 0.5 <= delay <= ceiling
    assert max(delays) <= 2.0 and delays[-1] >= 1.0
    # two bots with different random states do not retry in lockstep
    other = Backoff(first=0.3, cap=2.0)
    assert [other.next_delay(random.Random(8)) for _ in range(3)] != delays[:3]


def test_backoff_starts_from_the_servers_hint_within_bounds() -> None:
    assert Backoff.after(None).first == pytest.approx(0.3)
    assert Backoff.after(1000).first == pytest.approx(1.0)
    assert Backoff.after(10).first == pytest.approx(0.25)
    assert Backoff.after(600_000).first == MAX_DELAY
    with pytest.raises(ValueError):
        Backoff(first=3.0, cap=2.0)


def test_reconnect_record_times_media_from_every_publisher_of_before() -> None:
    record = Reconnect("connection_lost", "websocket closed (code 1006)", T0 + 10, ["a", "b"])
    record.attempts = 3
    record.connected_at = T0 + 12.0
    record.on_frame("a", T0 + 12.1)  # before joined: not yet counted
    record.joined_at = T0 + 12.05
    record.on_frame("a", T0 + 12.4)
    assert record.media_back_at() is None  # b is still missing
    record.on_frame("b", T0 + 12.9)
    record.on_frame("b", T0 + 13.5)  # only the first frame counts
    out = record.to_json(T0)
    assert out["t_ms"] == 10000.0 and out["recovered"] and out["attempts"] == 3
    assert out["connected_after_ms"] == 2000.0 and out["joined_after_ms"] == 2050.0
    assert out["media_after_server_ms"] == 900.0 and out["media_after_ms"] == 2900.0
    assert out["missing_publishers"] == []
