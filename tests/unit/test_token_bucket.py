"""The token bucket shared by every event rate limit (sfu/token_bucket.py), fake clock."""

from __future__ import annotations

import pytest

from sfu.token_bucket import TokenBucket


def test_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.4)  # 0.8 of a token
    assert bucket.take(100.5)  # one token after half a second at 2/s
    assert not bucket.take(100.5)
    # a long pause refills to the burst, no further
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_a_refused_take_spends_nothing_and_rate_zero_never_refills() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
    assert bucket.take(0.0)
    for _ in range(10):
        assert not bucket.take(0.5)
    assert bucket.take(1.0)
    once = TokenBucket(rate=0.0, burst=1, now=0.0)
    assert once.take(0.0) and not once.take(1e9)
    with pytest.raises(ValueError):
        TokenBucket(rate=1.0, burst=0, now=0.0)


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    bucket = TokenBucket(rate=10.0, burst=1, now=50.0)
    assert bucket.take(50.0)
    assert not bucket.take(10.0)
    assert not bucket.take(50.05)
    assert bucket.take(50.1)


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    for _ in range(3):
        assert bucket.has(1.0, 0.0)
        bucket.spend(1.0)
    assert not bucket.has(1.0, 0.0)
    assert not bucket.has(1.0, 0.4)  # 0.8 token
    assert bucket.has(1.0, 0.5)
    assert bucket.has(3.0, 100.0) and not bucket.has(3.5, 100.0)  # capped at the burst


def test_token_bucket_ignores_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0, now=10.0)
    bucket.spend(1.0)
    assert not bucket.has(1.0, 5.0)
    assert not bucket.has(1.0, 10.5)
    assert bucket.has(1.0, 11.0)


def test_a_bucket_is_full_again_once_refilled() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert bucket.full(0.0)
    assert bucket.take(0.0) and not bucket.full(0.5)
    assert bucket.full(1.0)
