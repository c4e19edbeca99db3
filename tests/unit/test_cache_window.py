"""The NACK cache sized by the stream's rate (sfu/cache_window.py, PacketCache.resize,
Source.tick): pure logic, time passed in."""

from __future__ import annotations

import pytest

from sfu.cache_window import CacheSizer, CacheWindow, capacity_for
from sfu.packet_cache import PacketCache
from sfu.rtp.packet import RtpView
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner

WINDOW = CacheWindow(seconds=2.0, min_packets=64, max_packets=1024, shrink_after=3)


@pytest.mark.parametrize(
    ("rate", "capacity"),
    [(0.0, 64), (10.0, 64), (33.0, 128), (50.0, 128), (150.0, 512), (300.0, 1024), (5000.0, 1024)],
)
def test_capacity_holds_the_window_at_the_rate_within_bounds(rate: float, capacity: int) -> None:
    assert capacity_for(rate, WINDOW) == capacity
    assert capacity >= min(rate * WINDOW.seconds, 1024)


def test_bad_windows_are_refused() -> None:
    for bad in ({"seconds": 0.0}, {"min_packets": 0}, {"min_packets": 512, "max_packets": 256}):
        with pytest.raises(ValueError):
            CacheWindow(**bad)  # type: ignore[arg-type]


def feed(
    sizer: CacheSizer, rate: float, seconds: int, start: float, packets: int
) -> tuple[list[int | None], float, int]:
    """``seconds`` ticks, one a second, of a stream at ``rate``."""
    out = []
    t = start
    for _ in range(seconds):
        t += 1.0
        packets += int(rate)
        out.append(sizer.update(packets, t))
    return out, t, packets


def test_starts_at_the_largest_and_shrinks_after_three_low_measurements() -> None:
    sizer = CacheSizer(WINDOW)
    assert sizer.capacity == 1024 and sizer.rate is None
    assert sizer.update(0, 100.0) is None  # the first call only marks
    changes, t, n = feed(sizer, 50, 3, 100.0, 0)  # Opus: 50 packets/s
    assert changes == [None, None, 128] and sizer.capacity == 128 and sizer.rate == 50


def test_grows_at_once_when_the_rate_rises() -> None:
    sizer = CacheSizer(WINDOW)
    sizer.update(0, 0.0)
    _, t, n = feed(sizer, 30, 3, 0.0, 0)
    assert sizer.capacity == 64
    changes, t, n = feed(sizer, 200, 1, t, n)
    assert changes == [512] and sizer.capacity == 512


def test_shrinks_to_the_largest_need_of_the_low_streak_and_a_peak_restarts_it() -> None:
    sizer = CacheSizer(WINDOW)
    sizer.update(0, 0.0)
    rates = [100, 30, 100, 30, 30]  # 256, 64, 256, 64, 64 wanted below 1024
    t, n, changes = 0.0, 0, []
    for rate in rates:
        t += 1.0
        n += rate
        changes.append(sizer.update(n, t))
    assert changes == [None, None, 256, None, None]
    changes, t, n = feed(sizer, 30, 1, t, n)
    assert changes == [64]


def test_short_intervals_are_not_measured() -> None:
    sizer = CacheSizer(WINDOW)
    sizer.update(0, 10.0)
    assert sizer.update(500, 10.2) is None and sizer.rate is None
    assert sizer.update(1000, 10.6) is None and sizer.rate == pytest.approx(1000 / 0.6)


def test_resize_keeps_the_newest_packets_that_fit() -> None:
    cache = PacketCache(16)
    for seq in range(65530, 65536 + 6):  # across the 16-bit wrap
        cache.store(seq & 0xFFFF, bytes([seq & 0xFF]), seq)
    cache.resize(8)
    assert cache.capacity == 8 and len(cache) == 8
    assert cache.get(65533) is None  # outside the newest 8
    assert cache.get(65534) == (bytes([0xFE]), 65534)
    assert cache.get(5) == (bytes([5]), 65541) and cache.newest == 5
    cache.resize(32)
    assert cache.capacity == 32 and len(cache) == 8  # nothing comes back
    for seq in range(6, 30):
        cache.store(seq, b"x")
    assert len(cache) == 32 and cache.get(65534) is not None  # the larger window fills
    with pytest.raises(ValueError):
        cache.resize(0)


def rtp(seq: int, pt: int = 111, ssrc: int = 0x1234) -> RtpView:
    header = bytes((0x80, pt)) + seq.to_bytes(2, "big") + (seq * 960).to_bytes(4, "big")
    return RtpView(header + ssrc.to_bytes(4, "big") + b"opus" * 10)


def test_a_source_keeps_about_its_window_of_packets() -> None:
    params = SourceParams("mic", "audio", "opus", 48000, 111, 0x1234)
    fixed = Source(params, RecordingOwner(), cache_size=1024)
    windowed = Source(params, RecordingOwner(), cache_window=WINDOW)
    assert fixed.cache_sizer is None and windowed.cache.capacity == 1024
    seq = 0
    for source in (fixed, windowed):
        source.tick(0.0)
    for second in range(1, 7):  # Opus at 50 packets/s for 6 s, a tick each second
        for k in range(50):
            for source in (fixed, windowed):
                source.on_rtp(rtp(seq), second - 1 + k / 50)
            seq += 1
        for source in (fixed, windowed):
            source.tick(float(second))
    assert len(fixed.cache) == 300  # every packet since the start
    assert windowed.cache.capacity == 128 and len(windowed.cache) == 128  # about 2 s
    assert windowed.cache.get(seq - 1) is not None and windowed.cache.get(seq - 129) is None
