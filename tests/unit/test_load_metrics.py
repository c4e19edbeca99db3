"""Pure accounting of ``parley load``: histograms, tags, continuity, frames, freezes."""

from __future__ import annotations

import random

import pytest

from loadgen.load.metrics import (
    FLAG_FRAME_END,
    FLAG_FRAME_START,
    FLAG_KEYFRAME,
    FLAG_VIDEO,
    TAG_SIZE,
    Interval,
    KindCounters,
    LatencyHistogram,
    StreamRx,
    Tag,
    TrackRx,
    bucket_of,
    bucket_upper,
    nearest_rank,
    pack_tag,
    parse_tag,
    split_stream_id,
    stream_id,
)

# ------------------------------------------------------------------ histogram


def test_bucket_edges_are_consistent() -> None:
    for value in (0.0005, 0.001, 0.0123, 1.0, 3.7, 49.99, 1234.5):
        index = bucket_of(value)
        assert value <= bucket_upper(index) * (1 + 1e-9)
        if index > 0:
            assert value > bucket_upper(index - 1) * (1 - 1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_within_one_percent_of_exact(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(0.0, 1.2) for _ in range(5000)]
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    for q in (50, 95, 99, 99.9):
        exact = nearest_rank(values, q)
        assert exact is not None
        got = hist.percentile(q)
        assert got is not None
        assert abs(got - exact) <= 0.0101 * exact
    assert hist.percentile(100) == max(values)
    assert hist.count == len(values)


def test_single_value_and_empty() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(50) is None
    assert hist.summary() == {
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
        "mean": None,
        "count": 0,
    }
    hist.record(2.5)
    assert hist.percentile(50) == 2.5
    assert hist.percentile(99) == 2.5
    assert hist.summary()["max"] == 2.5


def test_merge_equals_recording_everything_and_json_round_trip() -> None:
    rng = random.Random(7)
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(1000):
        v = rng.uniform(0.1, 20)
        (a if i % 2 else b).record(v)
        both.record(v)
    a.merge(LatencyHistogram.from_json(b.to_json()))
    for q in (50, 95, 99, 100):
        assert a.percentile(q) == both.percentile(q)
    assert a.count == both.count
    assert a.max == both.max
    assert a.min == both.min


def test_cdf_is_monotonic_and_ends_at_one() -> None:
    hist = LatencyHistogram()
    for v in (1, 2, 2, 3, 10):
        hist.record(v)
    cdf = hist.cdf()
    assert [f for _, f in cdf] == sorted(f for _, f in cdf)
    assert cdf[-1] == (10, 1.0)


def test_nearest_rank() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 50) == 50.0
    assert nearest_rank(values, 95) == 95.0
    assert nearest_rank(values, 100) == 100.0


# ---------------------------------------------------------------------- tags


def test_tag_round_trip_at_the_end_of_a_packet() -> None:
    stream = stream_id(513, 3)
    assert split_stream_id(stream) == (513, 3)
    tag = pack_tag(FLAG_VIDEO | FLAG_FRAME_END, stream, 2**32 + 5, 123_456_789_012)
    assert len(tag) == TAG_SIZE
    parsed = parse_tag(b"\x80" * 40 + tag)
    assert parsed == Tag(FLAG_VIDEO | FLAG_FRAME_END, stream, 5, 123_456_789_012)
    assert parsed.video


def test_untagged_payloads_are_refused() -> None:
    assert parse_tag(b"short") is None
    assert parse_tag(bytes(100)) is None
    tag = bytearray(pack_tag(0, 1, 1, 1))
    tag[2] = 99  # unknown version
    assert parse_tag(bytes(tag)) is None


# ---------------------------------------------------------------- continuity


def test_stream_counts_gaps_late_arrivals_and_duplicates() -> None:
    rx = StreamRx(100)
    for seq in (101, 102, 105, 106):
        assert rx.on_packet(seq)
    assert (rx.expected, rx.received, rx.lost) == (7, 5, 2)
    assert rx.on_packet(103)  # late (reordered or repaired)
    assert rx.lost == 1
    assert not rx.on_packet(103)  # duplicate
    assert not rx.on_packet(106)
    assert rx.duplicates == 2
    assert rx.lost == 1


def test_stream_without_loss() -> None:
    rx = StreamRx(0)
    for seq in range(1, 1000):
        rx.on_packet(seq)
    assert rx.lost == 0
    assert rx.received == rx.expected == 1000


def test_kind_counters_loss_pct() -> None:
    assert KindCounters().loss_pct() is None
    assert KindCounters(expected=200, lost=3).loss_pct() == 1.5
    interval = Interval()
    interval.counters["audio"].expected = 4
    assert Interval.from_json(interval.to_json()).counters["audio"].expected == 4


# ------------------------------------------------------------- frames/tracks

V = FLAG_VIDEO


def _frame(
    track: TrackRx,
    stream: int,
    first_seq: int,
    packets: int,
    now: float,
    key: bool = False,
    skip: int | None = None,
) -> bool:
    """Feed one frame of ``packets`` packets; ``skip`` drops that packet index."""
    done = False
    for i in range(packets):
        if i == skip:
            continue
        flags = V
        if i == 0:
            flags |= FLAG_FRAME_START | (FLAG_KEYFRAME if key else 0)
        if i == packets - 1:
            flags |= FLAG_FRAME_END
        done = track.on_packet(Tag(flags, stream, first_seq + i, 0), now)
    return done


def test_first_decodable_frame_needs_a_keyframe() -> None:
    track = TrackRx(video=True)
    assert not _frame(track, 1, 0, 3, 1.0)  # delta frame first: not decodable
    assert track.first_frame_at is None
    assert _frame(track, 1, 3, 5, 1.1, key=True)
    assert track.first_frame_at == 1.1
    assert _frame(track, 1, 8, 2, 1.2)
    assert track.frames == 2


def test_a_lost_packet_breaks_decoding_until_the_next_keyframe() -> None:
    track = TrackRx(video=True)
    _frame(track, 1, 0, 3, 0.0, key=True)
    assert not _frame(track, 1, 3, 3, 0.1, skip=1)
    assert track.needs_keyframe
    assert not _frame(track, 1, 6, 3, 0.2)  # complete but references a broken frame
    assert _frame(track, 1, 9, 3, 0.9, key=True)
    assert not track.needs_keyframe
    # 0.0 -> 0.9 without a decodable frame is a freeze
    assert track.freezes.count == 1
    assert track.freezes.max_s == pytest.approx(0.9)


def test_frame_missing_its_last_packet_is_broken() -> None:
    track = TrackRx(video=True)
    _frame(track, 1, 0, 2, 0.0, key=True)
    assert not _frame(track, 1, 2, 3, 0.05, skip=2)  # end never arrives
    assert not _frame(track, 1, 5, 2, 0.1)  # next frame starts: previous one is broken
    assert track.broken_frames >= 2


def test_freezes_only_above_half_a_second_and_at_the_end() -> None:
    track = TrackRx(video=True)
    seq = 0
    for now in (0.0, 0.066, 0.5, 1.1, 1.2):
        _frame(track, 1, seq, 2, now, key=seq == 0)
        seq += 2
    assert track.freezes.count == 1  # 0.5 -> 1.1 only (0.066 -> 0.5 is 434 ms)
    track.finish(1.5)
    assert track.freezes.count == 1
    track.finish(2.0)  # 1.2 -> 2.0 silent
    assert track.freezes.count == 2
    assert track.freezes.total_s == pytest.approx(0.6 + 0.8)


def test_layer_switch_counts_and_restarts_at_the_new_layers_keyframe() -> None:
    track = TrackRx(video=True)
    _frame(track, stream_id(0, 2), 0, 2, 0.0, key=True)
    _frame(track, stream_id(0, 2), 2, 2, 0.066)
    assert track.layer_switches == 0
    assert _frame(track, stream_id(0, 4), 50, 4, 0.133, key=True)
    assert track.layer_switches == 1
    assert _frame(track, stream_id(0, 4), 54, 4, 0.2)
    assert track.frames == 4


def test_audio_tracks_count_switches_but_no_frames() -> None:
    track = TrackRx(video=False)
    assert not track.on_packet(Tag(0, stream_id(1, 0), 0, 0), 0.0)
    track.finish(10.0)
    assert track.freezes.count == 0


def test_worker_latency_goes_to_the_second_and_to_the_total_once() -> None:
    """record_latency fills this second's histogram; the total gets each value once, when
    the second is taken or at the end."""
    from loadgen.load.bots import WorkerMetrics

    metrics = WorkerMetrics()
    for ms in (1.0, 2.0, 3.0):
        metrics.record_latency("audio", ms)
    first = metrics.take_interval()
    assert first.latency["audio"].count == 3
    metrics.record_latency("audio", 40.0)
    metrics.record_latency("video", 5.0)
    metrics.finish_counters()
    metrics.finish_counters()  # idempotent: nothing merged twice
    total = metrics.total.latency
    assert total["audio"].count == 4 and total["audio"].max == 40.0
    assert total["video"].count == 1
    assert metrics.take_interval().latency["audio"].count == 0
    assert metrics.total.latency["audio"].count == 4
