"""Limits' pure parts with a fake clock: the per-address map, the message
gate, the room/track checks, and the Origin allow-list."""

from __future__ import annotations

import argparse

import pytest

from signaling.limits import (
    ABUSE_WINDOW,
    AddressBuckets,
    Limits,
    MessageGate,
    add_limit_arguments,
    join_refusal,
    offered_tracks,
    tracks_refusal,
)
from signaling.origins import OriginPolicy, normalize_origin, origin_refusal


def test_addresses_have_their_own_buckets() -> None:
    buckets = AddressBuckets(rate=1.0, burst=2, max_addresses=100)
    assert buckets.take("10.0.0.1", 0.0) and buckets.take("10.0.0.1", 0.0)
    assert not buckets.take("10.0.0.1", 0.0)
    assert buckets.take("10.0.0.2", 0.0)  # another address is not held up
    assert buckets.take("10.0.0.1", 1.0)


def test_address_map_stays_bounded_and_forgets_refilled_buckets_first() -> None:
    buckets = AddressBuckets(rate=1.0, burst=1, max_addresses=3)
    assert buckets.take("a", 0.0)
    assert buckets.take("b", 5.0)
    assert buckets.take("c", 5.0)
    assert buckets.take("d", 5.0)  # "a" refilled by now: forgotten
    assert len(buckets) == 3
    assert not buckets.take("b", 5.0)  # "b" is still remembered and empty
    for i in range(100):  # a flood of addresses: the least recently used go
        buckets.take(f"x{i}", 5.0)
    assert len(buckets) <= 3


def test_gate_refuses_over_the_rate_then_closes_after_sustained_abuse() -> None:
    limits = Limits(message_rate=10.0, message_burst=5, max_refused_messages=4)
    gate = MessageGate(limits, now=0.0)
    verdicts = [gate.admit(0.0) for _ in range(10)]
    assert verdicts == ["ok"] * 5 + ["refuse"] * 4 + ["close"]


def test_gate_forgives_occasional_bursts() -> None:
    limits = Limits(message_rate=10.0, message_burst=5, max_refused_messages=4)
    gate = MessageGate(limits, now=0.0)
    now = 0.0
    # 8 messages at once every 10 s: 3 refused each time, the strikes refill meanwhile
    for _ in range(20):
        verdicts = [gate.admit(now) for _ in range(8)]
        assert verdicts.count("close") == 0, verdicts
        assert verdicts.count("refuse") == 3
        now += ABUSE_WINDOW
    # steady traffic under the rate is never refused
    for _ in range(200):
        now += 0.15
        assert gate.admit(now) == "ok"


def test_join_refusals() -> None:
    limits = Limits(max_rooms=2, max_participants_per_room=3)
    assert join_refusal(limits, rooms=1, participants=None) is None
    refusal = join_refusal(limits, rooms=2, participants=None)
    assert refusal is not None and refusal[0] == "too_many_rooms"
    assert join_refusal(limits, rooms=2, participants=2) is None  # an existing room
    refusal = join_refusal(limits, rooms=2, participants=3)
    assert refusal is not None and refusal[0] == "room_full"
    off = Limits(max_rooms=0, max_participants_per_room=0)
    assert join_refusal(off, rooms=10**6, participants=None) is None
    assert join_refusal(off, rooms=1, participants=10**6) is None


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendrecv\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=inactive\r\n"
    "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:4\r\n"
)


def test_offered_tracks_counts_media_that_is_sent() -> None:
    assert offered_tracks(OFFER) == 2
    assert tracks_refusal(Limits(max_tracks_per_participant=2), OFFER) is None
    refusal = tracks_refusal(Limits(max_tracks_per_participant=1), OFFER)
    assert refusal is not None and refusal[0] == "too_many_tracks"


def test_every_limit_has_a_flag_with_its_default() -> None:
    parser = argparse.ArgumentParser()
    add_limit_arguments(parser)
    args = parser.parse_args([])
    for name in Limits.__dataclass_fields__:
        if name != "max_tracked_addresses":
            assert getattr(args, name) == getattr(Limits(), name), name
    with pytest.raises(SystemExit):
        parser.parse_args(["--join-rate", "-1"])


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("http://Example.COM", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", None),
        ("http://example.com/path", None),
        ("http://example.com:99999", None),
    ],
)
def test_normalize_origin(origin: str, expected: str | None) -> None:
    assert normalize_origin(origin) == expected


def test_origin_policy() -> None:
    own = OriginPolicy()
    assert origin_refusal(None, "127.0.0.1:8080", own) is None  # no Origin: not a browser
    assert origin_refusal("http://127.0.0.1:8080", "127.0.0.1:8080", own) is None
    assert origin_refusal("https://parley.example", "parley.example", own) is None  # TLS proxy
    assert origin_refusal("http://parley.example:80", "parley.example", own) is None
    assert origin_refusal("http://evil.example", "127.0.0.1:8080", own) is not None
    assert origin_refusal("http://127.0.0.1:9999", "127.0.0.1:8080", own) is not None
    assert origin_refusal("null", "127.0.0.1:8080", own) is not None
    listed = OriginPolicy(allowed=("https://app.example",))
    assert origin_refusal("https://app.example", "parley.example", listed) is None
    # the list replaces the default: the server's own origin is no longer implied
    assert origin_refusal("https://parley.example", "parley.example", listed) is not None
    assert origin_refusal("http://evil.example", "x", OriginPolicy(allowed=("*",))) is None
