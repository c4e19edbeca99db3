"""Signaling message schema: wire format, round trips and every kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.config import IceServer
from signaling.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ERROR_CODES,
    ActiveSpeaker,
    ErrorMessage,
    Join,
    Joined,
    Layer,
    Leave,
    Left,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    Ping,
    Pong,
    ProtocolError,
    PublishAnswer,
    PublishedTrack,
    PublishOffer,
    Redirect,
    ServerShutdown,
    SetLayer,
    SubscribeAnswer,
    SubscribedTrack,
    SubscribeOffer,
    TrackInfo,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
    parse_client_message,
    parse_server_message,
    serialize,
)

MAX = DEFAULT_MAX_MESSAGE_BYTES
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def parse(obj: Any, max_bytes: int = MAX):
    """Parse a client message given as a JSON value (or as raw text/bytes)."""
    raw = obj if isinstance(obj, str | bytes) else json.dumps(obj)
    return parse_client_message(raw, max_bytes)


def parse_error(obj: Any, max_bytes: int = MAX) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(obj, max_bytes)
    return info.value


# --- client messages ----------------------------------------------------------------

CLIENT_EXAMPLES: list[tuple[dict[str, Any], object]] = [
    (
        {"type": "join", "room": "standup", "name": "Ada", "token": "s3cret", "request_id": 1},
        Join("standup", "Ada", "s3cret", 1),
    ),
    ({"type": "join", "room": "standup", "name": "Ada"}, Join("standup", "Ada")),
    (
        {"type": "join", "room": "standup", "name": "Ada", "reuse_mlines": False},
        Join("standup", "Ada", reuse_mlines=False),
    ),
    (
        {"type": "join", "room": "standup", "name": "Ada", "codecs": ["opus", "vp8"]},
        Join("standup", "Ada", codecs=("opus", "vp8")),
    ),
    ({"type": "publish_offer", "sdp": SDP, "request_id": "p1"}, PublishOffer(SDP, "p1")),
    ({"type": "subscribe_answer", "sdp": SDP}, SubscribeAnswer(SDP)),
    (
        {"type": "set_layer", "track": "t1", "max_height": 360, "paused": False},
        SetLayer("t1", 360, False),
    ),
    ({"type": "set_layer", "track": "t1"}, SetLayer("t1")),
    ({"type": "leave"}, Leave()),
    ({"type": "ping", "request_id": "abc"}, Ping("abc")),
]


@pytest.mark.parametrize(("wire", "expected"), CLIENT_EXAMPLES)
def test_client_example_parses(wire, expected):
    assert parse(wire) == expected
    assert parse_client_message(json.dumps(wire).encode(), MAX) == expected


@pytest.mark.parametrize(("wire", "expected"), CLIENT_EXAMPLES)
def test_client_message_to_json_is_its_wire_form(wire, expected):
    assert expected.to_json() == wire
    assert parse_client_message(serialize(expected), MAX) == expected


def test_unknown_fields_are_ignored():
    assert parse({"type": "ping", "extra": [1, {"x": None}], "request_id": 7}) == Ping(7)


@pytest.mark.parametrize(
    "room",
    ["a", "a" * 64, "Room_1.test-2", "...", "0"],
    ids=["one", "64", "mixed", "dots", "digit"],
)
def test_valid_rooms(room):
    assert parse({"type": "join", "room": room, "name": "n"}).room == room


@pytest.mark.parametrize(
    "name", ["a", "a" * 64, " spaced out ", "Zoë 名前 👩\u200d👩\u200d👧", "\u00a0tab-free"]
)
def test_valid_names_are_kept_verbatim(name):
    assert parse({"type": "join", "room": "r", "name": name}).name == name


@pytest.mark.parametrize("token", ["", "t" * 4096])
def test_valid_tokens(token):
    assert parse({"type": "join", "room": "r", "name": "n", "token": token}).token == token


@pytest.mark.parametrize("height", [0, 4320])
def test_max_height_bounds(height):
    assert parse({"type": "set_layer", "track": "t", "max_height": height}).max_height == height


@pytest.mark.parametrize("request_id", ["", "r" * 64, 0, -5, 2**70])
def test_valid_request_ids(request_id):
    assert parse({"type": "ping", "request_id": request_id}).request_id == request_id


# --- bad client input ---------------------------------------------------------------


def test_too_large_is_checked_before_json():
    err = parse_error("{" * (MAX + 1))
    assert err.code == "too_large"
    assert parse_error(b"x" * 101, max_bytes=100).code == "too_large"


def test_size_limit_counts_utf8_bytes():
    ping = '{"type":"ping","request_id":"%s"}'
    fits = ping % ("a" * 10)
    assert parse(fits, max_bytes=len(fits)) == Ping("a" * 10)
    # Same number of characters, but "é" is two bytes in UTF-8.
    wide = ping % ("é" * 10)
    assert len(wide) == len(fits)
    assert parse_error(wide, max_bytes=len(fits)).code == "too_large"
    assert parse_error(wide.encode(), max_bytes=len(fits)).code == "too_large"


@pytest.mark.parametrize(
    "raw", [b"\xff", b'{"type":"ping","x":"\xc3"}', b'{"type":"ping"}\xed\xa0\x80'], ids=repr
)
def test_bad_utf8(raw):
    err = parse_error(raw)
    assert err.code == "bad_json"
    assert "UTF-8" in err.message


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        "{'type': 'ping'}",
        '{"type":"ping"} x',
        '{"type":"ping",}',
        "NaN",
        '{"type":"ping","x":Infinity}',
        "\ufeff{}",
        "[" * 5000 + "]" * 5000,
        "1" * 5000,
    ],
    ids=["empty", "open", "quotes", "trailing", "comma", "nan", "inf", "bom", "deep", "bigint"],
)
def test_bad_json(raw):
    assert parse_error(raw).code == "bad_json"


@pytest.mark.parametrize("raw", ["[]", '[{"type":"ping"}]', "1", "1.5", '"ping"', "null", "true"])
def test_not_object(raw):
    err = parse_error(raw)
    assert err.code == "not_object"
    assert err.request is None


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"room": "r", "name": "n"},
        {"type": 5},
        {"type": None},
        {"type": ["ping"]},
        {"type": "PING"},
        {"type": "joined"},
        {"type": "x" * 1000},
    ],
    ids=["empty", "no-type", "int", "null", "list", "case", "server-type", "long"],
)
def test_missing_or_unknown_type(obj):
    err = parse_error(obj)
    assert err.code == "unknown_type"
    assert err.request is None
    assert len(err.message) < 200


def test_unknown_type_echoes_a_valid_request_id_only():
    assert parse_error({"type": "nope", "request_id": "r9"}).request_id == "r9"
    assert parse_error({"type": "nope", "request_id": True}).request_id is None


REQUIRED_FIELDS = [
    ("join", "room"),
    ("join", "name"),
    ("publish_offer", "sdp"),
    ("subscribe_answer", "sdp"),
    ("set_layer", "track"),
]
EXAMPLE_BY_TYPE = {wire["type"]: wire for wire, _ in reversed(CLIENT_EXAMPLES)}


@pytest.mark.parametrize(("kind", "field"), REQUIRED_FIELDS)
def test_missing_required_field(kind, field):
    wire = {k: v for k, v in EXAMPLE_BY_TYPE[kind].items() if k != field}
    wire["request_id"] = "req-1"
    err = parse_error(wire)
    assert (err.code, err.field, err.request, err.request_id) == (
        "missing_field",
        field,
        kind,
        "req-1",
    )
    assert repr(field) in err.message


JOIN = {"type": "join", "room": "r", "name": "n"}
LAYER = {"type": "set_layer", "track": "t"}

INVALID_FIELDS: list[tuple[dict[str, Any], str]] = [
    # wrong types
    ({**JOIN, "room": 5}, "room"),
    ({**JOIN, "room": None}, "room"),
    ({**JOIN, "name": 5}, "name"),
    ({**JOIN, "name": ["n"]}, "name"),
    ({**JOIN, "token": 5}, "token"),
    ({**JOIN, "token": None}, "token"),
    ({**JOIN, "reuse_mlines": 0}, "reuse_mlines"),
    ({**JOIN, "reuse_mlines": "false"}, "reuse_mlines"),
    ({**JOIN, "reuse_mlines": None}, "reuse_mlines"),
    ({**JOIN, "codecs": "vp8"}, "codecs"),
    ({**JOIN, "codecs": ["vp8", 8]}, "codecs"),
    ({**JOIN, "codecs": ["vp 8"]}, "codecs"),
    ({**JOIN, "codecs": ["vp8"] * 33}, "codecs"),
    ({"type": "publish_offer", "sdp": 1}, "sdp"),
    ({"type": "publish_offer", "sdp": {"sdp": SDP}}, "sdp"),
    ({"type": "subscribe_answer", "sdp": None}, "sdp"),
    ({**LAYER, "track": 5}, "track"),
    ({**LAYER, "max_height": True}, "max_height"),
    ({**LAYER, "max_height": 720.0}, "max_height"),
    ({**LAYER, "max_height": "720"}, "max_height"),
    ({**LAYER, "paused": 1}, "paused"),
    ({**LAYER, "paused": "true"}, "paused"),
    ({**LAYER, "paused": None}, "paused"),
    # bad values
    ({**JOIN, "room": ""}, "room"),
    ({**JOIN, "room": "a" * 65}, "room"),
    ({**JOIN, "room": "a b"}, "room"),
    ({**JOIN, "room": "a/b"}, "room"),
    ({**JOIN, "room": "café"}, "room"),
    ({**JOIN, "room": "room\n"}, "room"),
    ({**JOIN, "name": ""}, "name"),
    ({**JOIN, "name": "n" * 65}, "name"),
    ({**JOIN, "name": "a\x00b"}, "name"),
    ({**JOIN, "name": "tab\there"}, "name"),
    ({**JOIN, "name": "line\n"}, "name"),
    ({**JOIN, "name": "del\x7f"}, "name"),
    ({**JOIN, "name": "c1\x85"}, "name"),
    ({**JOIN, "name": "sep\u2028"}, "name"),
    ({**JOIN, "name": "\ud800"}, "name"),
    ({**JOIN, "token": "t" * 4097}, "token"),
    ({"type": "publish_offer", "sdp": ""}, "sdp"),
    ({"type": "subscribe_answer", "sdp": ""}, "sdp"),
    ({**LAYER, "track": ""}, "track"),
    ({**LAYER, "max_height": -1}, "max_height"),
    ({**LAYER, "max_height": 4321}, "max_height"),
    ({**LAYER, "max_width": -1}, "max_width"),
    ({**LAYER, "max_width": 7681}, "max_width"),
    ({**LAYER, "max_width": "640"}, "max_width"),
    # bad request ids
    ({"type": "ping", "request_id": "r" * 65}, "request_id"),
    ({"type": "ping", "request_id": True}, "request_id"),
    ({"type": "ping", "request_id": 1.5}, "request_id"),
    ({"type": "ping", "request_id": None}, "request_id"),
    ({"type": "ping", "request_id": []}, "request_id"),
    ({"type": "ping", "request_id": {"id": 1}}, "request_id"),
    ({"type": "ping", "request_id": "\udfff"}, "request_id"),
]


@pytest.mark.parametrize(
    ("wire", "field"), INVALID_FIELDS, ids=[f"{f}={w.get(f)!r:.20}" for w, f in INVALID_FIELDS]
)
def test_invalid_field(wire, field):
    err = parse_error(wire)
    assert (err.code, err.field, err.request) == ("invalid_field", field, wire["type"])
    assert repr(field) in err.message
    if field != "request_id":
        assert err.request_id is None


def test_field_errors_echo_request_id():
    err = parse_error({**JOIN, "room": "a b", "request_id": 42})
    assert (err.code, err.request, err.request_id) == ("invalid_field", "join", 42)
    assert err.to_message() == ErrorMessage("invalid_field", err.message, "join", 42)


def test_first_bad_field_in_order_is_reported():
    assert parse_error({"type": "join"}).field == "room"
    assert parse_error({"type": "join", "room": 1, "name": 2}).field == "room"


def test_surrogate_escapes_are_rejected_so_output_stays_encodable():
    raw = '{"type":"publish_offer","sdp":"v=0\\ud83d"}'
    assert parse_error(raw).field == "sdp"
    # A correctly escaped pair is an ordinary character.
    assert parse('{"type":"join","room":"r","name":"\\ud83d\\ude00"}').name == "😀"


# --- ProtocolError ---------------------------------------------------------------


def test_protocol_error_attributes_and_message():
    err = ProtocolError("wrong_state", "already joined", request="join", request_id="j2")
    assert (err.code, err.message, err.request, err.request_id) == (
        "wrong_state",
        "already joined",
        "join",
        "j2",
    )
    assert str(err) == "already joined"
    assert serialize(err.to_message()) == (
        '{"type":"error","code":"wrong_state","message":"already joined",'
        '"request":"join","request_id":"j2"}'
    )
    assert ProtocolError("internal", "oops").to_message().to_json() == {
        "type": "error",
        "code": "internal",
        "message": "oops",
    }


def test_unknown_error_codes_are_refused():
    with pytest.raises(ValueError, match="error code"):
        ProtocolError("oops", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="error code"):
        ErrorMessage("oops", "x")  # type: ignore[arg-type]


def test_error_codes_match_the_spec():
    assert ERROR_CODES == {
        "bad_json",
        "not_object",
        "unknown_type",
        "invalid_field",
        "missing_field",
        "too_large",
        "wrong_state",
        "bad_sdp",
        "unsupported_media",
        "join_refused",
        "not_found",
        "internal",
        "data_too_large",
        "data_rate_limited",
        "bad_data",
        "room_full",
        "too_many_rooms",
        "too_many_tracks",
        "rate_limited",
        "token_required",
        "token_invalid",
        "token_expired",
        "token_wrong_room",
        "not_allowed",
        "server_draining",
    }


# --- server messages ----------------------------------------------------------------

ALICE = ParticipantInfo("p1", "Alice", (TrackInfo("a1", "audio"), TrackInfo("v1", "video")))
ALICE_WIRE = {
    "id": "p1",
    "name": "Alice",
    "tracks": [{"id": "a1", "kind": "audio"}, {"id": "v1", "kind": "video"}],
}

SERVER_EXAMPLES: list[tuple[object, dict[str, Any]]] = [
    (
        Joined(
            "p2",
            "standup",
            (ALICE, ParticipantInfo("p3", "Bob")),
            (
                IceServer(("stun:stun.example.org:3478",)),
                IceServer(("turn:t.example.org", "turns:t.example.org"), "u", "pw"),
            ),
            request_id=1,
        ),
        {
            "type": "joined",
            "id": "p2",
            "room": "standup",
            "participants": [ALICE_WIRE, {"id": "p3", "name": "Bob", "tracks": []}],
            "ice_servers": [
                {"urls": ["stun:stun.example.org:3478"]},
                {
                    "urls": ["turn:t.example.org", "turns:t.example.org"],
                    "username": "u",
                    "credential": "pw",
                },
            ],
            "request_id": 1,
        },
    ),
    (
        Joined("p1", "empty"),
        {"type": "joined", "id": "p1", "room": "empty", "participants": [], "ice_servers": []},
    ),
    (ParticipantJoined(ALICE), {"type": "participant_joined", "participant": ALICE_WIRE}),
    (ParticipantLeft("p1"), {"type": "participant_left", "id": "p1"}),
    (
        TrackPublished("p1", TrackInfo("v1", "video")),
        {"type": "track_published", "participant": "p1", "track": {"id": "v1", "kind": "video"}},
    ),
    (
        TrackUnpublished("p1", "v1"),
        {"type": "track_unpublished", "participant": "p1", "track": "v1"},
    ),
    (
        TrackMuted("p1", "v1", True),
        {"type": "track_muted", "participant": "p1", "track": "v1", "muted": True},
    ),
    (
        TrackPublished("p1", TrackInfo("v1", "video", muted=True)),
        {
            "type": "track_published",
            "participant": "p1",
            "track": {"id": "v1", "kind": "video", "muted": True},
        },
    ),
    (
        PublishAnswer(
            SDP, (PublishedTrack("a1", "audio", "0"), PublishedTrack("v1", "video", "1")), "p"
        ),
        {
            "type": "publish_answer",
            "sdp": SDP,
            "tracks": [
                {"id": "a1", "kind": "audio", "mid": "0"},
                {"id": "v1", "kind": "video", "mid": "1"},
            ],
            "request_id": "p",
        },
    ),
    (
        SubscribeOffer(
            SDP,
            {"0": SubscribedTrack("p1", "a1", "audio"), "2": SubscribedTrack("p1", "v1", "video")},
        ),
        {
            "type": "subscribe_offer",
            "sdp": SDP,
            "tracks": {
                "0": {"participant": "p1", "track": "a1", "kind": "audio"},
                "2": {"participant": "p1", "track": "v1", "kind": "video"},
            },
        },
    ),
    (SubscribeOffer(SDP, {}), {"type": "subscribe_offer", "sdp": SDP, "tracks": {}}),
    (
        Layer("v1", "h", 640, 360, False),
        {"type": "layer", "track": "v1", "rid": "h", "width": 640, "height": 360, "paused": False},
    ),
    (
        Layer("v1", None, 0, 0, True),
        {"type": "layer", "track": "v1", "rid": None, "width": 0, "height": 0, "paused": True},
    ),
    (
        TrackPublished("p1", TrackInfo("v1", "video", ("q", "h", "f"))),
        {
            "type": "track_published",
            "participant": "p1",
            "track": {"id": "v1", "kind": "video", "layers": ["q", "h", "f"]},
        },
    ),
    (ActiveSpeaker("p1"), {"type": "active_speaker", "participant": "p1"}),
    (ActiveSpeaker(None), {"type": "active_speaker", "participant": None}),
    (Left("left", "bye"), {"type": "left", "reason": "left", "request_id": "bye"}),
    (Left("removed"), {"type": "left", "reason": "removed"}),
    (
        Left("removed by the server's operator", reconnect=False),
        {"type": "left", "reason": "removed by the server's operator", "reconnect": False},
    ),
    (
        ServerShutdown("server is shutting down", 2000),
        {
            "type": "server_shutdown",
            "reason": "server is shutting down",
            "retry_after_ms": 2000,
            "reconnect": True,
        },
    ),
    (
        ServerShutdown("closing for good", 0, reconnect=False),
        {
            "type": "server_shutdown",
            "reason": "closing for good",
            "retry_after_ms": 0,
            "reconnect": False,
        },
    ),
    (
        Redirect("ws://10.0.0.7:8080/ws", "standup", "join-1"),
        {
            "type": "redirect",
            "url": "ws://10.0.0.7:8080/ws",
            "room": "standup",
            "request_id": "join-1",
        },
    ),
    (Pong(), {"type": "pong"}),
    (Pong(7), {"type": "pong", "request_id": 7}),
    (
        ErrorMessage("bad_sdp", "cannot parse offer", "publish_offer", "x"),
        {
            "type": "error",
            "code": "bad_sdp",
            "message": "cannot parse offer",
            "request": "publish_offer",
            "request_id": "x",
        },
    ),
    (
        ErrorMessage("bad_json", "not JSON"),
        {"type": "error", "code": "bad_json", "message": "not JSON"},
    ),
]
SERVER_IDS = [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(SERVER_EXAMPLES)]


@pytest.mark.parametrize(("msg", "wire"), SERVER_EXAMPLES, ids=SERVER_IDS)
def test_server_message_wire_format(msg, wire):
    assert msg.to_json() == wire
    assert list(msg.to_json()) == list(wire)  # "type" first, then the spec's order


@pytest.mark.parametrize(("msg", "wire"), SERVER_EXAMPLES, ids=SERVER_IDS)
def test_server_message_round_trip(msg, wire):
    text = serialize(msg)
    assert json.loads(text) == wire
    assert parse_server_message(text) == msg
    assert parse_server_message(text.encode()) == msg


def test_every_server_message_type_is_covered():
    covered = {type(m) for m, _ in SERVER_EXAMPLES}
    assert covered == {
        ActiveSpeaker,
        Joined,
        Layer,
        ParticipantJoined,
        ParticipantLeft,
        TrackPublished,
        TrackUnpublished,
        TrackMuted,
        PublishAnswer,
        SubscribeOffer,
        Left,
        ServerShutdown,
        Redirect,
        Pong,
        ErrorMessage,
    }


def test_serialize_is_compact_and_keeps_unicode():
    assert serialize(Pong()) == '{"type":"pong"}'
    text = serialize(ParticipantJoined(ParticipantInfo("p", "Zoë 😀")))
    assert (
        text == '{"type":"participant_joined","participant":{"id":"p","name":"Zoë 😀","tracks":[]}}'
    )


def test_messages_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Join("r", "n").room = "other"  # type: ignore[misc]
    source = {"0": SubscribedTrack("p", "t", "audio")}
    offer = SubscribeOffer(SDP, source)
    source["1"] = SubscribedTrack("p", "u", "video")
    assert list(offer.tracks) == ["0"]
    with pytest.raises(TypeError):
        offer.tracks["1"] = source["1"]  # type: ignore[index]
    assert not hasattr(Ping(), "__dict__")


JOINED = {"type": "joined", "id": "p", "room": "r", "participants": [], "ice_servers": []}
BOB = {"id": "x", "name": "y", "tracks": []}

BAD_SERVER_INPUT: list[tuple[Any, str, str | None]] = [
    ("{", "bad_json", None),
    ("[]", "not_object", None),
    ({"type": "ping"}, "unknown_type", None),
    ({"type": "participant_left"}, "missing_field", "id"),
    ({"type": "participant_left", "id": 1}, "invalid_field", "id"),
    ({"type": "pong", "request_id": False}, "invalid_field", "request_id"),
    ({**JOINED, "room": "a b"}, "invalid_field", "room"),
    ({**JOINED, "participants": {}}, "invalid_field", "participants"),
    ({**JOINED, "participants": [1]}, "invalid_field", "participants[0]"),
    (
        {**JOINED, "participants": [BOB, {**BOB, "name": "\x07"}]},
        "invalid_field",
        "participants[1].name",
    ),
    (
        {**JOINED, "participants": [{**BOB, "tracks": [{"id": "t", "kind": "data"}]}]},
        "invalid_field",
        "participants[0].tracks[0].kind",
    ),
    ({**JOINED, "ice_servers": [{"urls": "stun:x"}]}, "invalid_field", "ice_servers[0].urls"),
    ({**JOINED, "ice_servers": [{"urls": ["stun:x", 3]}]}, "invalid_field", "ice_servers[0].urls"),
    ({**JOINED, "ice_servers": [{"urls": []}, {}]}, "missing_field", "ice_servers[1].urls"),
    ({k: v for k, v in JOINED.items() if k != "ice_servers"}, "missing_field", "ice_servers"),
    (
        {"type": "participant_joined", "participant": {"id": "p", "name": "n"}},
        "missing_field",
        "participant.tracks",
    ),
    ({"type": "track_published", "participant": "p", "track": "t"}, "invalid_field", "track"),
    (
        {"type": "track_unpublished", "participant": "p", "track": {"id": "t"}},
        "invalid_field",
        "track",
    ),
    ({"type": "publish_answer", "sdp": "", "tracks": []}, "invalid_field", "sdp"),
    (
        {"type": "publish_answer", "sdp": SDP, "tracks": [{"id": "a", "kind": "audio"}]},
        "missing_field",
        "tracks[0].mid",
    ),
    ({"type": "subscribe_offer", "sdp": SDP, "tracks": []}, "invalid_field", "tracks"),
    (
        {
            "type": "subscribe_offer",
            "sdp": SDP,
            "tracks": {"0": {"participant": "p", "track": "t", "kind": 1}},
        },
        "invalid_field",
        "tracks.0.kind",
    ),
    ({"type": "left"}, "missing_field", "reason"),
    ({"type": "error", "code": "oops", "message": "m"}, "invalid_field", "code"),
    ({"type": "error", "code": "internal", "message": None}, "invalid_field", "message"),
]


@pytest.mark.parametrize(("wire", "code", "field"), BAD_SERVER_INPUT)
def test_bad_server_input(wire, code, field):
    raw = wire if isinstance(wire, str) else json.dumps(wire)
    with pytest.raises(ProtocolError) as info:
        parse_server_message(raw)
    assert (info.value.code, info.value.field) == (code, field)


# --- properties ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
CLIENT_TYPES = ["join", "publish_offer", "subscribe_answer", "set_layer", "leave", "ping"]
FIELD_NAMES = ["room", "name", "token", "sdp", "track", "max_height", "paused", "request_id"]
near_valid_messages = st.fixed_dictionaries(
    {"type": st.sampled_from([*CLIENT_TYPES, "joined"])},
    optional={k: json_values | st.sampled_from(["r", "", "x" * 65]) for k in FIELD_NAMES},
)


def check_client_parse(raw: str | bytes, max_bytes: int = MAX) -> None:
    try:
        msg = parse_client_message(raw, max_bytes)
    except ProtocolError as err:
        assert err.code in ERROR_CODES
        err.to_message()  # always representable as an error reply
        serialize(err.to_message()).encode()
    else:
        assert msg.type in CLIENT_TYPES
        serialize(msg).encode()  # whatever parses can be sent back as UTF-8


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_protocol_error(raw):
    check_client_parse(raw, max_bytes=200)


@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_protocol_error(raw):
    check_client_parse(raw, max_bytes=200)


@given(json_values)
def test_arbitrary_json_only_raises_protocol_error(value):
    check_client_parse(json.dumps(value))


@settings(max_examples=300)
@given(near_valid_messages)
def test_near_valid_messages_only_raise_protocol_error(value):
    check_client_parse(json.dumps(value))


@given(json_values | near_valid_messages)
def test_server_parser_only_raises_protocol_error(value):
    try:
        parse_server_message(json.dumps(value))
    except ProtocolError as err:
        assert err.code in ERROR_CODES


names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Zl", "Zp"]), min_size=1, max_size=64
)
rooms = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
request_ids = st.none() | st.integers() | st.text(st.characters(codec="utf-8"), max_size=64)


@given(rooms, names, st.none() | st.text(st.characters(codec="utf-8"), max_size=50), request_ids)
def test_valid_joins_round_trip(room, name, token, request_id):
    join = Join(room, name, token, request_id)
    assert parse_client_message(serialize(join), MAX) == join


@given(names, st.lists(st.tuples(st.text(min_size=1), st.sampled_from(["audio", "video"]))))
def test_participants_round_trip(name, tracks):
    msg = ParticipantJoined(ParticipantInfo("p", name, tuple(TrackInfo(*t) for t in tracks)))
    assert parse_server_message(serialize(msg)) == msg


# --- documentation ------------------------------------------------------------------

DOC_EXAMPLES = re.findall(
    r"```json\n(.*?)```", (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(), re.S
)


def test_docs_show_every_message_type():
    server_types = {type(m).type for m, _ in SERVER_EXAMPLES}
    assert sorted(json.loads(e)["type"] for e in DOC_EXAMPLES) == sorted(
        {*CLIENT_TYPES, *server_types}
    )


@pytest.mark.parametrize("example", DOC_EXAMPLES)
def test_doc_examples_are_valid_messages(example):
    wire = json.loads(example)
    if wire["type"] in CLIENT_TYPES:
        msg = parse_client_message(example, MAX)
    else:
        msg = parse_server_message(example)
    assert msg.to_json() == wire


def test_server_shutdown_without_reconnect_means_reconnect() -> None:
    """Servers from before ``reconnect`` existed: their clients rejoined, so absent is true."""
    raw = '{"type": "server_shutdown", "reason": "bye", "retry_after_ms": 10}'
    message = parse_server_message(raw)
    assert isinstance(message, ServerShutdown) and message.reconnect is True
    raw = '{"type": "server_shutdown", "reason": "bye", "retry_after_ms": 10, "reconnect": false}'
    message = parse_server_message(raw)
    assert isinstance(message, ServerShutdown) and message.reconnect is False
