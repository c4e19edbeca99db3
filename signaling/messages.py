"""Typed messages of the Parley signaling protocol v1 and their JSON wire format.

``docs/protocol.md`` documents the protocol; this module is its one schema. It is
pure: no I/O, no websocket library.

* ``parse_client_message`` validates one frame from a client and returns a frozen
  dataclass, or raises ``ProtocolError`` carrying the stable error code that the
  server sends back (``ProtocolError.to_message()``).
* Every message is a frozen dataclass whose ``to_json()`` is its exact wire object
  (field names are the wire keys; optional fields that are ``None`` are left out).
  ``serialize`` makes a compact JSON text frame of one; ``parse_server_message``
  (for bots and tests) validates server messages like ``parse_client_message``.

Choices the spec leaves open:

* A missing or non-string ``type`` is ``unknown_type``, like an unrecognised one.
* ``null`` is never a valid value: an optional field is either absent or valid.
* Unknown extra fields are ignored.
* ``ProtocolError.request`` is the message's ``type`` only when that type is known;
  ``request_id`` is echoed whenever it is valid, even if another field is not.
* No string may contain unpaired surrogates (from ``\\ud800``-style escapes), so
  whatever is parsed can be serialized again and sent as UTF-8.
* ``name`` rejects control characters (Unicode category Cc) and line/paragraph
  separators (Zl, Zp); anything else, leading/trailing spaces included, is kept.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import ClassVar, Final, Literal, TypeAlias, TypeVar, cast, get_args

from sfu.config import IceServer

_T = TypeVar("_T")

RequestId: TypeAlias = str | int
TrackKind: TypeAlias = Literal["audio", "video"]
ErrorCode: TypeAlias = Literal[
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
]

ERROR_CODES: Final[frozenset[str]] = frozenset(get_args(ErrorCode))
TRACK_KINDS: Final[frozenset[str]] = frozenset(get_args(TrackKind))
#: Default of the server's ``max_message_bytes``: the largest frame accepted.
DEFAULT_MAX_MESSAGE_BYTES: Final = 262_144
#: Websocket close code used after ``too_large`` (1009, "message too big").
TOO_LARGE_CLOSE_CODE: Final = 1009


class ProtocolError(Exception):
    """A client broke the protocol; ``to_message()`` is the ``error`` reply.

    ``request`` is the type of the offending message when known, ``request_id`` its
    ``request_id`` when it could be read, ``field`` the offending field's path
    (e.g. ``"room"``, ``"participants[0].name"``) for field errors.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request: str | None = None,
        request_id: RequestId | None = None,
        field: str | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.request = request
        self.request_id = request_id
        self.field = field

    def to_message(self) -> ErrorMessage:
        return ErrorMessage(self.code, self.message, self.request, self.request_id)


def _wire_value(value: object) -> object:
    if isinstance(value, _Wire | IceServer):
        return value.to_json()
    if isinstance(value, tuple):
        return [_wire_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _wire_value(item) for key, item in value.items()}
    return value


class _Wire:
    """Base of the dataclasses below, whose field names are the wire keys."""

    __slots__ = ()

    def to_json(self) -> dict[str, object]:
        """The wire object; fields that are ``None`` are optional and left out."""
        return {
            f.name: _wire_value(value)
            for f in fields(self)  # type: ignore[arg-type]
            if (value := getattr(self, f.name)) is not None
        }


class _Message(_Wire):
    __slots__ = ()
    type: ClassVar[str]

    def to_json(self) -> dict[str, object]:
        return {"type": self.type, **_Wire.to_json(self)}


# --- client -> server -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join(_Message):
    type: ClassVar[str] = "join"
    room: str
    name: str
    token: str | None = None
    request_id: RequestId | None = None
    #: False: new subscribe m-lines for every track, never an inactive one reused
    #: (clients that cannot change an m-line's direction, such as GStreamer's webrtcbin)
    reuse_mlines: bool | None = None
    #: the codecs the client can decode (RTP encoding names, e.g. ``["opus", "vp8"]``):
    #: it is not subscribed to tracks of others (libwebrtc builds without H.264). Absent:
    #: every codec Parley forwards
    codecs: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PublishOffer(_Message):
    type: ClassVar[str] = "publish_offer"
    sdp: str
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class SubscribeAnswer(_Message):
    type: ClassVar[str] = "subscribe_answer"
    sdp: str
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class SetLayer(_Message):
    """What the client wants of one remote track: a size ceiling, or nothing (paused).

    A field that is absent leaves that part of the request as it was.
    """

    type: ClassVar[str] = "set_layer"
    track: str
    max_height: int | None = None
    paused: bool | None = None
    request_id: RequestId | None = None
    max_width: int | None = None


@dataclass(frozen=True, slots=True)
class Leave(_Message):
    type: ClassVar[str] = "leave"
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Ping(_Message):
    type: ClassVar[str] = "ping"
    request_id: RequestId | None = None


ClientMessage: TypeAlias = Join | PublishOffer | SubscribeAnswer | SetLayer | Leave | Ping


# --- server -> client -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackInfo(_Wire):
    id: str
    kind: TrackKind
    #: RIDs of a simulcast track's layers, in the publisher's order (absent: one layer)
    layers: tuple[str, ...] | None = None
    #: True while an operator has muted it (absent: not muted)
    muted: bool | None = None


@dataclass(frozen=True, slots=True)
class ParticipantInfo(_Wire):
    id: str
    name: str
    tracks: tuple[TrackInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class PublishedTrack(_Wire):
    """A track of a ``publish_answer``: which m-line (``mid``) carries it."""

    id: str
    kind: TrackKind
    mid: str


@dataclass(frozen=True, slots=True)
class SubscribedTrack(_Wire):
    """What one active m-line of a ``subscribe_offer`` carries."""

    participant: str
    track: str
    kind: TrackKind


@dataclass(frozen=True, slots=True)
class Joined(_Message):
    type: ClassVar[str] = "joined"
    id: str
    room: str
    participants: tuple[ParticipantInfo, ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class ParticipantJoined(_Message):
    type: ClassVar[str] = "participant_joined"
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class ParticipantLeft(_Message):
    type: ClassVar[str] = "participant_left"
    id: str


@dataclass(frozen=True, slots=True)
class TrackPublished(_Message):
    type: ClassVar[str] = "track_published"
    participant: str
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUnpublished(_Message):
    type: ClassVar[str] = "track_unpublished"
    participant: str
    track: str


@dataclass(frozen=True, slots=True)
class TrackMuted(_Message):
    """An operator muted (or unmuted) a track: nobody receives it while ``muted``."""

    type: ClassVar[str] = "track_muted"
    participant: str
    track: str
    muted: bool


@dataclass(frozen=True, slots=True)
class PublishAnswer(_Message):
    type: ClassVar[str] = "publish_answer"
    sdp: str
    tracks: tuple[PublishedTrack, ...] = ()
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class SubscribeOffer(_Message):
    """``tracks`` maps each active mid to what it carries (a read-only copy is kept)."""

    type: ClassVar[str] = "subscribe_offer"
    sdp: str
    tracks: Mapping[str, SubscribedTrack]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tracks", MappingProxyType(dict(self.tracks)))


@dataclass(frozen=True, slots=True)
class Layer(_Message):
    """What the server now forwards of one remote track (sent whenever it changes).

    ``rid`` is the simulcast layer (None for a track without layers), ``width`` and
    ``height`` its last known size (0 when not known yet), ``paused`` True when nothing
    is forwarded. ``temporal`` is the highest VP8 temporal layer (TID) forwarded when
    the server leaves higher ones out (None, and absent on the wire: all of them).
    """

    type: ClassVar[str] = "layer"
    track: str
    rid: str | None
    width: int
    height: int
    paused: bool
    temporal: int | None = None

    def to_json(self) -> dict[str, object]:
        # unlike other optional fields, a null rid is sent (it means "no layers")
        wire: dict[str, object] = {
            "type": self.type,
            "track": self.track,
            "rid": self.rid,
            "width": self.width,
            "height": self.height,
            "paused": self.paused,
        }
        if self.temporal is not None:
            wire["temporal"] = self.temporal
        return wire


@dataclass(frozen=True, slots=True)
class ActiveSpeaker(_Message):
    """Who is speaking now in the room (``participant`` null: nobody any more)."""

    type: ClassVar[str] = "active_speaker"
    participant: str | None

    def to_json(self) -> dict[str, object]:
        return {"type": self.type, "participant": self.participant}


@dataclass(frozen=True, slots=True)
class Left(_Message):
    type: ClassVar[str] = "left"
    reason: str
    request_id: RequestId | None = None
    #: False: the operator ended it (removed, room closed): do not rejoin on your own
    reconnect: bool | None = None


@dataclass(frozen=True, slots=True)
class ServerShutdown(_Message):
    """The server is stopping: every session ends now and the websocket closes (1001).

    ``retry_after_ms`` is the server's hint for when to rejoin (a restart takes about that
    long); clients rejoin with their own backoff from then on. ``reconnect`` false means
    the server asks clients not to rejoin at all.
    """

    type: ClassVar[str] = "server_shutdown"
    reason: str
    retry_after_ms: int
    reconnect: bool = True


@dataclass(frozen=True, slots=True)
class Redirect(_Message):
    """The answer to ``join`` when another node serves the room (``parley serve --redis``):
    close this websocket, open ``url`` (a ``ws://…/ws`` URL) and send the same ``join``
    there. When the connection is lost later, rejoin through the URL you first used."""

    type: ClassVar[str] = "redirect"
    url: str
    room: str
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Pong(_Message):
    type: ClassVar[str] = "pong"
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage(_Message):
    type: ClassVar[str] = "error"
    code: ErrorCode
    message: str
    request: str | None = None
    request_id: RequestId | None = None

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"unknown error code {self.code!r}")


ServerMessage: TypeAlias = (
    Joined
    | ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | TrackMuted
    | PublishAnswer
    | SubscribeOffer
    | Layer
    | ActiveSpeaker
    | Left
    | ServerShutdown
    | Redirect
    | Pong
    | ErrorMessage
)
Message: TypeAlias = ClientMessage | ServerMessage


def serialize(msg: Message) -> str:
    """One compact JSON text frame."""
    return json.dumps(msg.to_json(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- validation -------------------------------------------------------------------


class _Invalid(Exception):
    """A value failed a check; ``_Reader`` names the field in the ProtocolError."""


_Check: TypeAlias = Callable[[object], _T]
_NON_PRINTABLE: Final = frozenset({"Cc", "Zl", "Zp"})


def _string(
    *,
    nonempty: bool = False,
    max_len: int | None = None,
    pattern: re.Pattern[str] | None = None,
    printable: bool = False,
) -> _Check[str]:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        if nonempty and not value:
            raise _Invalid("must not be empty")
        if max_len is not None and len(value) > max_len:
            raise _Invalid(f"must have at most {max_len} characters")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Invalid("must not contain unpaired surrogates") from None
        if pattern is not None and pattern.fullmatch(value) is None:
            raise _Invalid(f"must match {pattern.pattern}")
        if printable and any(unicodedata.category(c) in _NON_PRINTABLE for c in value):
            raise _Invalid("must not contain control characters")
        return value

    return check


def _integer(lo: int, hi: int) -> _Check[int]:
    def check(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid("must be an integer")
        if not lo <= value <= hi:
            raise _Invalid(f"must be between {lo} and {hi}")
        return value

    return check


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _optional(check: _Check[_T]) -> _Check[_T | None]:
    """``check``, or JSON null."""

    def optional(value: object) -> _T | None:
        return None if value is None else check(value)

    return optional


def _one_of(values: frozenset[str]) -> _Check[str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in values:
            raise _Invalid("must be one of " + ", ".join(sorted(values)))
        return value

    return check


def _array_of(item: _Check[_T]) -> _Check[tuple[_T, ...]]:
    def check(value: object) -> tuple[_T, ...]:
        if not isinstance(value, list):
            raise _Invalid("must be an array")
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except _Invalid as exc:
                raise _Invalid(f"item {i} {exc}") from None
        return tuple(out)

    return check


def _object(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Invalid("must be an object")
    return value


def _array(value: object) -> list[object]:
    if not isinstance(value, list):
        raise _Invalid("must be an array")
    return value


_ROOM = _string(nonempty=True, max_len=64, pattern=re.compile(r"[A-Za-z0-9_.-]{1,64}"))
_NAME = _string(nonempty=True, max_len=64, printable=True)
_TOKEN = _string(max_len=4096)
_SDP = _string(nonempty=True)
_ID = _string(nonempty=True)
_TEXT = _string()
_WS_URL = _string(nonempty=True, max_len=2048, pattern=re.compile(r"wss?://[^\s]+"))
_REQUEST_ID_STR = _string(max_len=64)
_MAX_HEIGHT = _integer(0, 4320)
_MAX_WIDTH = _integer(0, 7680)
_SIZE = _integer(0, 16384)
_TID = _integer(0, 3)
_KIND = cast("_Check[TrackKind]", _one_of(TRACK_KINDS))
_CODE = cast("_Check[ErrorCode]", _one_of(ERROR_CODES))
_CODEC = _string(nonempty=True, max_len=32, pattern=re.compile(r"[A-Za-z0-9_.-]{1,32}"))


def _codecs(value: object) -> tuple[str, ...]:
    codecs = _array_of(_CODEC)(value)
    if len(codecs) > 32:
        raise _Invalid("must list at most 32 codecs")
    return tuple(codec.lower() for codec in codecs)


_CODECS: _Check[tuple[str, ...]] = _codecs


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid participant name (None: it is one)."""
    try:
        _NAME(value)
    except _Invalid as exc:
        return str(exc)
    return None


def _request_id(value: object) -> RequestId:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return _REQUEST_ID_STR(value)
    except _Invalid:
        raise _Invalid("must be an integer or a string of at most 64 characters") from None


@dataclass(frozen=True, slots=True)
class _Reader:
    """Typed access to the fields of one JSON object; errors name the field."""

    data: Mapping[str, object]
    request: str | None
    request_id: RequestId | None = None
    path: str = ""

    def req(self, key: str, check: _Check[_T]) -> _T:
        if key not in self.data:
            raise self._error("missing_field", key, "is missing")
        return self._check(key, self.data[key], check)

    def opt(self, key: str, check: _Check[_T]) -> _T | None:
        return self._check(key, self.data[key], check) if key in self.data else None

    def obj(self, key: str) -> _Reader:
        return self._child(key, self.req(key, _object))

    def objs(self, key: str) -> list[_Reader]:
        return [self._child(f"{key}[{i}]", v) for i, v in enumerate(self.req(key, _array))]

    def entries(self, key: str) -> list[tuple[str, _Reader]]:
        return [(k, self._child(f"{key}.{k}", v)) for k, v in self.req(key, _object).items()]

    def _child(self, key: str, value: object) -> _Reader:
        data = self._check(key, value, _object)
        return _Reader(data, self.request, self.request_id, f"{self.path}{key}.")

    def _check(self, key: str, value: object, check: _Check[_T]) -> _T:
        try:
            return check(value)
        except _Invalid as exc:
            raise self._error("invalid_field", key, str(exc)) from None

    def _error(self, code: ErrorCode, key: str, detail: str) -> ProtocolError:
        name = self.path + key
        return ProtocolError(
            code,
            f"field {name!r} {detail}",
            request=self.request,
            request_id=self.request_id,
            field=name,
        )


_CLIENT_PARSERS: Final[Mapping[str, Callable[[_Reader], ClientMessage]]] = MappingProxyType(
    {
        Join.type: lambda r: Join(
            r.req("room", _ROOM),
            r.req("name", _NAME),
            r.opt("token", _TOKEN),
            r.request_id,
            r.opt("reuse_mlines", _boolean),
            r.opt("codecs", _CODECS),
        ),
        PublishOffer.type: lambda r: PublishOffer(r.req("sdp", _SDP), r.request_id),
        SubscribeAnswer.type: lambda r: SubscribeAnswer(r.req("sdp", _SDP), r.request_id),
        SetLayer.type: lambda r: SetLayer(
            r.req("track", _ID),
            r.opt("max_height", _MAX_HEIGHT),
            r.opt("paused", _boolean),
            r.request_id,
            r.opt("max_width", _MAX_WIDTH),
        ),
        Leave.type: lambda r: Leave(r.request_id),
        Ping.type: lambda r: Ping(r.request_id),
    }
)


def _track(r: _Reader) -> TrackInfo:
    layers = r.opt("layers", _array_of(_ID))
    return TrackInfo(
        r.req("id", _ID),
        r.req("kind", _KIND),
        tuple(layers) if layers else None,
        r.opt("muted", _boolean),
    )


def _participant(r: _Reader) -> ParticipantInfo:
    return ParticipantInfo(
        r.req("id", _ID), r.req("name", _NAME), tuple(map(_track, r.objs("tracks")))
    )


def _ice_server(r: _Reader) -> IceServer:
    return IceServer(
        r.req("urls", _array_of(_ID)), r.opt("username", _TEXT), r.opt("credential", _TEXT)
    )


def _published(r: _Reader) -> PublishedTrack:
    return PublishedTrack(r.req("id", _ID), r.req("kind", _KIND), r.req("mid", _ID))


def _subscribed(r: _Reader) -> SubscribedTrack:
    return SubscribedTrack(r.req("participant", _ID), r.req("track", _ID), r.req("kind", _KIND))


_SERVER_PARSERS: Final[Mapping[str, Callable[[_Reader], ServerMessage]]] = MappingProxyType(
    {
        Joined.type: lambda r: Joined(
            r.req("id", _ID),
            r.req("room", _ROOM),
            tuple(map(_participant, r.objs("participants"))),
            tuple(map(_ice_server, r.objs("ice_servers"))),
            r.request_id,
        ),
        ParticipantJoined.type: lambda r: ParticipantJoined(_participant(r.obj("participant"))),
        ParticipantLeft.type: lambda r: ParticipantLeft(r.req("id", _ID)),
        TrackPublished.type: lambda r: TrackPublished(
            r.req("participant", _ID), _track(r.obj("track"))
        ),
        TrackUnpublished.type: lambda r: TrackUnpublished(
            r.req("participant", _ID), r.req("track", _ID)
        ),
        TrackMuted.type: lambda r: TrackMuted(
            r.req("participant", _ID), r.req("track", _ID), r.req("muted", _boolean)
        ),
        PublishAnswer.type: lambda r: PublishAnswer(
            r.req("sdp", _SDP), tuple(map(_published, r.objs("tracks"))), r.request_id
        ),
        SubscribeOffer.type: lambda r: SubscribeOffer(
            r.req("sdp", _SDP), {mid: _subscribed(t) for mid, t in r.entries("tracks")}
        ),
        Layer.type: lambda r: Layer(
            r.req("track", _ID),
            r.req("rid", _optional(_ID)),
            r.req("width", _SIZE),
            r.req("height", _SIZE),
            r.req("paused", _boolean),
            r.opt("temporal", _TID),
        ),
        ActiveSpeaker.type: lambda r: ActiveSpeaker(r.req("participant", _optional(_ID))),
        Left.type: lambda r: Left(
            r.req("reason", _TEXT), r.request_id, r.opt("reconnect", _boolean)
        ),
        ServerShutdown.type: lambda r: ServerShutdown(
            r.req("reason", _TEXT),
            r.req("retry_after_ms", _integer(0, 3_600_000)),
            r.opt("reconnect", _boolean) is not False,  # absent (older servers): true
        ),
        Redirect.type: lambda r: Redirect(
            r.req("url", _WS_URL), r.req("room", _ROOM), r.request_id
        ),
        Pong.type: lambda r: Pong(r.request_id),
        ErrorMessage.type: lambda r: ErrorMessage(
            r.req("code", _CODE), r.req("message", _TEXT), r.opt("request", _ID), r.request_id
        ),
    }
)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _decode(raw: str | bytes, max_bytes: int | None) -> object:
    if max_bytes is not None:
        # A character is at least one byte: only encode a str that might fit.
        if isinstance(raw, bytes) or len(raw) > max_bytes:
            size = len(raw)
        else:
            size = len(raw.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise ProtocolError("too_large", f"message exceeds the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ProtocolError("bad_json", "message is not valid UTF-8") from None
    except RecursionError:
        raise ProtocolError("bad_json", "message is nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError("bad_json", f"message is not valid JSON: {exc}") from None


_JSON_KINDS: Final[Mapping[type, str]] = MappingProxyType(
    {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 66 else text[:64] + "..."


def _peek_request_id(data: Mapping[str, object]) -> RequestId | None:
    try:
        return _request_id(data["request_id"]) if "request_id" in data else None
    except _Invalid:
        return None


def _parse(
    raw: str | bytes, max_bytes: int | None, parsers: Mapping[str, Callable[[_Reader], _T]]
) -> _T:
    data = _decode(raw, max_bytes)
    if not isinstance(data, dict):
        json_kind = _JSON_KINDS.get(type(data), "null")
        raise ProtocolError("not_object", f"message must be a JSON object, not {json_kind}")
    kind = data.get("type")
    parser = parsers.get(kind) if isinstance(kind, str) else None
    if parser is None:
        if "type" not in data:
            detail = "message has no 'type' field"
        elif not isinstance(kind, str):
            detail = "field 'type' must be a string"
        else:
            detail = f"unknown message type {_short(kind)}"
        raise ProtocolError("unknown_type", detail, request_id=_peek_request_id(data))
    reader = _Reader(data, cast(str, kind))
    return parser(_Reader(data, reader.request, reader.opt("request_id", _request_id)))


def parse_client_message(raw: str | bytes, max_bytes: int) -> ClientMessage:
    """Validate one frame from a client; raise ProtocolError if it breaks the protocol.

    ``max_bytes`` bounds the UTF-8 size of the frame and is checked before decoding.
    """
    return _parse(raw, max_bytes, _CLIENT_PARSERS)


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Validate one frame from the server (bots, tests); raise ProtocolError if bad."""
    return _parse(raw, None, _SERVER_PARSERS)
