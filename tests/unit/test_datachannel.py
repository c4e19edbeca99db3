"""The data channel's envelope, limits and relay (sfu/datachannel.py, sfu/data_side.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from sfu.data_side import DataSide
from sfu.datachannel import (
    BAD_DATA,
    DATA_RATE_LIMITED,
    DATA_TOO_LARGE,
    DataLimiter,
    DataLimits,
    EnvelopeError,
    decode_relayed,
    encode_envelope,
    parse_envelope,
    recipients,
    relayed,
)
from sfu.ports import NegotiationError
from sfu.publish_side import check_offer

# ------------------------------------------------------------ limiter


def test_limiter_refuses_oversize_before_spending_anything() -> None:
    limits = DataLimits(max_message_bytes=100, messages_per_second=1, message_burst=1)
    limiter = DataLimiter(limits, now=0.0)
    assert limiter.check(101, 0.0) == DATA_TOO_LARGE
    assert limiter.check(100, 0.0) is None  # exactly the limit goes, the token was kept
    assert limiter.check(10, 0.0) == DATA_RATE_LIMITED


def test_limits_refuse_a_burst_smaller_than_a_message() -> None:
    with pytest.raises(ValueError):
        DataLimits(max_message_bytes=2000, byte_burst=1000)


def test_limiter_limits_messages_and_bytes_per_second() -> None:
    limits = DataLimits(
        max_message_bytes=1000,
        messages_per_second=10,
        message_burst=5,
        bytes_per_second=1000,
        byte_burst=2000,
    )
    limiter = DataLimiter(limits, now=0.0)
    assert [limiter.check(1, 0.0) for _ in range(6)] == [None] * 5 + [DATA_RATE_LIMITED]
    assert limiter.check(1, 0.1) is None  # one message token back after 0.1 s
    limiter = DataLimiter(limits, now=0.0)
    assert limiter.check(1000, 0.0) is None
    assert limiter.check(1000, 0.0) is None
    assert limiter.check(1000, 0.0) == DATA_RATE_LIMITED  # 2000-byte burst spent
    assert limiter.check(1000, 0.5) == DATA_RATE_LIMITED  # 500 bytes back only
    assert limiter.check(1000, 1.0) is None  # 1000 bytes back after 1 s
    # sustained: 1000 bytes/s lets about one 1000-byte message a second through
    sent = sum(limiter.check(1000, 1.0 + i * 0.1) is None for i in range(100))
    assert 9 <= sent <= 11, sent


# ------------------------------------------------------------ envelope


def test_text_envelope_round_trip() -> None:
    env = parse_envelope(encode_envelope({"msg": "hi"}, to=("a", "b")))
    assert env.to == ("a", "b") and env.data == {"msg": "hi"} and not env.binary
    env = parse_envelope('{"data": "x"}')
    assert env.to is None and env.data == "x"
    out = relayed("p1", env)
    assert isinstance(out, str)
    assert json.loads(out) == {"from": "p1", "data": "x"}
    assert decode_relayed(out) == ("p1", "x")


def test_binary_envelope_round_trip() -> None:
    raw = encode_envelope(b"\x00\x01payload", to=("abc", "d\u00e9"))
    assert isinstance(raw, bytes)
    assert raw[:5] == b"\x02\x03abc"
    env = parse_envelope(raw)
    assert env.to == ("abc", "d\u00e9") and env.data == b"\x00\x01payload" and env.binary
    env = parse_envelope(b"\x00hello")
    assert env.to is None and env.data == b"hello"
    out = relayed("p-42", env)
    assert out == b"\x04p-42hello"
    assert decode_relayed(out) == ("p-42", b"hello")


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2]",
        '{"to": ["a"]}',
        '{"data": 1, "to": "a"}',
        '{"data": 1, "to": [1]}',
        '{"data": 1, "to": [""]}',
        '{"data": NaN}',
        '{"data": ' + "[" * 5000 + "]" * 5000 + "}",
        b"",
        b"\x01",
        b"\x01\x05ab",
        b"\x01\x00",
        b"\x01\x02\xff\xfe",
    ],
)
def test_bad_envelopes_are_refused(message: str | bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(message)


def test_recipients_room_or_named_never_the_sender() -> None:
    present = ["a", "b", "c"]
    assert recipients("a", parse_envelope('{"data": 0}'), present) == ["b", "c"]
    assert recipients("a", parse_envelope('{"data": 0, "to": ["c", "zz", "a"]}'), present) == ["c"]
    assert recipients("a", parse_envelope('{"data": 0, "to": []}'), present) == []


# ------------------------------------------------------------ relay (a fake channel)


class FakeChannel:
    label = "parley"

    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.sent: list[str | bytes] = []
        self.handlers: dict[str, Any] = {}
        self.closed = False

    def on(self, event: str, handler: Any = None) -> Any:
        if handler is not None:
            self.handlers[event] = handler
            return handler

        def register(fn: Any) -> Any:
            self.handlers[event] = fn
            return fn

        return register

    def send(self, message: str | bytes) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> Any:
        raise NotImplementedError

    def call_at(self, when: float, callback: Any) -> Any:
        raise NotImplementedError


def make_room(
    ids: list[str], limits: DataLimits
) -> tuple[dict[str, DataSide], dict[str, FakeChannel], list[tuple[str, str, str]]]:
    sides: dict[str, DataSide] = {}
    channels: dict[str, FakeChannel] = {}
    refused: list[tuple[str, str, str]] = []
    clock = Clock()

    def peers() -> Mapping[str, DataSide]:
        return sides

    def refuser(pid: str) -> Callable[[str, str], None]:
        return lambda code, text: refused.append((pid, code, text))

    for pid in ids:
        side = DataSide(pid, limits, clock, {}, peers, refuser(pid))
        channel = FakeChannel()
        side.attach(channel)
        sides[pid], channels[pid] = side, channel
    return sides, channels, refused


def test_relay_to_room_targets_and_errors() -> None:
    sides, channels, refused = make_room(["a", "b", "c"], DataLimits(max_message_bytes=64))
    channels["a"].handlers["message"]('{"data": "hello"}')
    assert [decode_relayed(m) for m in channels["b"].sent] == [("a", "hello")]
    assert [decode_relayed(m) for m in channels["c"].sent] == [("a", "hello")]
    assert channels["a"].sent == []
    channels["b"].handlers["message"](encode_envelope(b"bin", to=("c",)))
    assert decode_relayed(channels["c"].sent[-1]) == ("b", b"bin")
    assert len(channels["a"].sent) == 0 and len(channels["b"].sent) == 1
    channels["c"].handlers["message"](encode_envelope("x" * 100))
    channels["c"].handlers["message"]("junk")
    assert [(pid, code) for pid, code, _ in refused] == [("c", DATA_TOO_LARGE), ("c", BAD_DATA)]
    assert sides["c"].counters["data_dropped_size"] == 1 and sides["c"].counters["data_bad"] == 1
    assert sides["a"].counters["data_relayed"] == 2


def test_refusals_are_reported_at_most_once_a_second_per_code() -> None:
    sides, channels, refused = make_room(
        ["a", "b"], DataLimits(max_message_bytes=20, messages_per_second=1, message_burst=1)
    )
    clock = sides["a"]._clock
    assert isinstance(clock, Clock)
    for _ in range(5):
        sides["a"].on_message("x" * 21, clock.time())
    sides["a"].on_message('{"data": 1}', clock.time())
    sides["a"].on_message('{"data": 2}', clock.time())  # over the rate
    assert [code for _, code, _ in refused] == [DATA_TOO_LARGE, DATA_RATE_LIMITED]
    clock.now = 1.5
    sides["a"].on_message("x" * 21, clock.time())
    assert refused[-1][1] == DATA_TOO_LARGE and "4 more refused" in refused[-1][2]
    assert sides["a"].counters["data_dropped_size"] == 6
    assert len(channels["b"].sent) == 1


def test_slow_receiver_misses_messages_others_do_not() -> None:
    sides, channels, _ = make_room(["a", "b", "c"], DataLimits(max_buffered_bytes=10))
    channels["b"].bufferedAmount = 11
    channels["a"].handlers["message"]('{"data": 1}')
    assert channels["b"].sent == [] and len(channels["c"].sent) == 1
    assert sides["b"].counters["data_dropped_slow"] == 1


def test_other_labels_are_closed() -> None:
    sides, _, _ = make_room(["a"], DataLimits())
    other = FakeChannel()
    other.label = "chat"
    sides["a"].channel = None
    sides["a"].attach(other)
    assert other.closed and sides["a"].channel is None


# ------------------------------------------------------------ the offer's m=application

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

APPLICATION = (
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:lzUS\r\n"
    "a=ice-pwd:5OI5eT1D0mwm7qDWkMlUy6IJ\r\n"
    "a=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 16:B5:6A:51:03:39:BE:71:CD:3C:A9:F7:9D:05:79:71:B5:E7:A7:43:"
    "69:D8:6C:8F:25:9A:7E:91:ED:CE:87:0C\r\n"
    "a=setup:actpass\r\n"
    "a=mid:2\r\n"
    "a=sctp-port:5000\r\n"
    "a=max-message-size:262144\r\n"
)


def test_publish_offers_with_a_data_channel_are_accepted() -> None:
    base = (FIXTURES / "libwebrtc_wrtc_publish_offer.sdp").read_text().replace("\n", "\r\n")
    base = base.replace("\r\r\n", "\r\n")
    offer = base.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    offer = offer.rstrip("\r\n") + "\r\n" + APPLICATION
    media, _ = check_offer(offer)
    assert [(m.mid, m.kind) for m in media] == [
        ("0", "video"),
        ("1", "audio"),
        ("2", "application"),
    ]
    # the data channel alone
    session = base[: base.index("m=")].replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 2")
    media, _ = check_offer(session + APPLICATION)
    assert [(m.mid, m.kind, m.setup) for m in media] == [("2", "application", "actpass")]
    # an m-line of another kind is still refused
    with pytest.raises(NegotiationError):
        check_offer(
            session + APPLICATION.replace("m=application 9 UDP/DTLS/SCTP", "m=text 9 RTP/AVP")
        )
