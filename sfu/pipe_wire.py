"""What travels on a pipe between two Parley SFUs (``sfu/pipe.py``), as bytes (pure, no I/O).

One UDP socket per pipe carries three kinds of datagram, told apart by their first bytes
(as RFC 7983 tells STUN, DTLS and RTP apart):

* **RTP** (version 2, payload type outside 64-95): the media of every piped layer, as the
  origin received it from its publisher, with the SSRC replaced by the layer's *pipe
  SSRC* (chosen by the origin when it exports the track: unique on the pipe, known
  before the publisher's own SSRC is, which simulcast browsers only reveal in their
  first packets). Retransmissions are RTX (RFC 4588) on the layer's pipe RTX SSRC.
* **RTCP** (version 2, packet type 192-223, RFC 5761): feedback towards the origin
  (generic NACK, PLI, REMB) and the publisher's sender reports towards the far side,
  every one naming pipe SSRCs.
* **Control**: one JSON object (first byte ``{``): track announcements and the like,
  made reliable and ordered by ``sfu/pipe_control.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTROL",
    "RTCP",
    "RTP",
    "LayerAnnouncement",
    "TrackAnnouncement",
    "WireError",
    "build_rtx",
    "classify",
    "decode_control",
    "encode_control",
    "with_ssrc",
]

RTP = "rtp"
RTCP = "rtcp"
CONTROL = "control"

#: the RTX payload type used on the pipe when the publisher negotiated none (audio):
#: the far side routes RTX by SSRC, never by payload type
PIPE_RTX_PT = 127


class WireError(ValueError):
    """A control message that is not what the pipe's protocol says."""


def classify(data: bytes) -> str | None:
    """RTP, RTCP or CONTROL by the first bytes of a datagram; None: none of them."""
    if len(data) < 2:
        return None
    b0 = data[0]
    if b0 == 0x7B:  # "{"
        return CONTROL
    if b0 >> 6 != 2:
        return None
    if 192 <= data[1] <= 223:
        return RTCP
    return RTP if len(data) >= 12 else None


def with_ssrc(data: bytes, ssrc: int) -> bytes:
    """An RTP packet with its SSRC replaced (one copy, nothing else touched)."""
    return b"".join((data[:8], ssrc.to_bytes(4, "big"), data[12:]))


def build_rtx(
    data: bytes, payload_start: int, payload_end: int, rtx_pt: int, rtx_seq: int, rtx_ssrc: int
) -> bytes:
    """An RFC 4588 retransmission of RTP packet ``data``: its header (padding bit cleared)
    with ``rtx_pt``, ``rtx_seq`` and ``rtx_ssrc``, then the original sequence number and
    payload (its padding left out)."""
    return b"".join(
        (
            bytes((data[0] & 0xDF, (data[1] & 0x80) | rtx_pt)),
            (rtx_seq & 0xFFFF).to_bytes(2, "big"),
            data[4:8],
            rtx_ssrc.to_bytes(4, "big"),
            data[12:payload_start],
            data[2:4],
            data[payload_start:payload_end],
        )
    )


# --------------------------------------------------------------------------- control


@dataclass(frozen=True, slots=True)
class LayerAnnouncement:
    """One piped stream: a simulcast layer (``rid``) or the track's only stream."""

    rid: str | None
    ssrc: int
    rtx_ssrc: int


@dataclass(frozen=True, slots=True)
class TrackAnnouncement:
    """Everything the far side needs to receive a piped track as a published one."""

    room: str
    participant: str
    participant_name: str
    track: str
    kind: str
    mid: str
    codec: str
    clock_rate: int
    payload_type: int
    rtx_payload_type: int | None
    red_payload_type: int | None
    #: header-extension id of the audio level in the piped packets (0: none)
    audio_level_ext: int
    layers: tuple[LayerAnnouncement, ...]
    muted: bool = False
    #: the codec's format parameters (H.264: profile-level-id, packetization-mode)
    fmtp: tuple[tuple[str, str], ...] = ()
    #: the publisher's identity for the application (``Participant.identity``)
    identity: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            f: getattr(self, f) for f in self.__slots__ if f not in ("layers", "fmtp")
        }
        out["layers"] = [[la.rid, la.ssrc, la.rtx_ssrc] for la in self.layers]
        out["fmtp"] = [[k, v] for k, v in self.fmtp]
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrackAnnouncement:
        try:
            layers = tuple(
                LayerAnnouncement(_opt_str(rid), _u32(ssrc), _u32(rtx))
                for rid, ssrc, rtx in obj["layers"]
            )
            announcement = cls(
                room=_str(obj["room"]),
                participant=_str(obj["participant"]),
                participant_name=_str(obj["participant_name"]),
                track=_str(obj["track"]),
                kind=_str(obj["kind"]),
                mid=_str(obj["mid"]),
                codec=_str(obj["codec"]),
                clock_rate=_int(obj["clock_rate"], 1, 1 << 31),
                payload_type=_int(obj["payload_type"], 0, 127),
                rtx_payload_type=_opt_int(obj["rtx_payload_type"], 0, 127),
                red_payload_type=_opt_int(obj["red_payload_type"], 0, 127),
                audio_level_ext=_int(obj["audio_level_ext"], 0, 255),
                layers=layers,
                muted=bool(obj.get("muted", False)),
                fmtp=tuple((_str(k), _str(v)) for k, v in obj.get("fmtp", ())),
                identity=_opt_str(obj.get("identity")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, WireError):
                raise
            raise WireError(f"bad track announcement: {exc!r}") from exc
        if announcement.kind not in ("audio", "video"):
            raise WireError(f"bad track kind {announcement.kind!r}")
        if not layers:
            raise WireError("a track announcement needs at least one layer")
        return announcement


#: control message types and the fields each must have (besides ``t``)
MESSAGES: dict[str, tuple[str, ...]] = {
    # reliable (carry ``s``, the sender's session, and ``n``, their sequence number)
    "export": ("track",),  # a TrackAnnouncement
    "unexport": ("room", "participant", "track"),
    "leave": ("room", "participant"),
    "mute": ("room", "participant", "track", "muted"),
    # a data-channel message as relayed (``text``, or ``bin`` in base64; ``to`` if
    # targeted): sfu/pipe_data.py
    "data": ("room", "from"),
    "bye": (),
    # unreliable
    "ack": ("n",),
    "ping": (),
}


def encode_control(message: dict[str, Any]) -> bytes:
    """One control datagram (compact JSON)."""
    if message.get("t") not in MESSAGES:
        raise WireError(f"unknown control message {message.get('t')!r}")
    return json.dumps(message, separators=(",", ":")).encode()


def decode_control(data: bytes) -> dict[str, Any]:
    """A control datagram's message, checked: WireError when it is not one."""
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"control datagram is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise WireError("a control message is a JSON object")
    kind = message.get("t")
    if kind not in MESSAGES:
        raise WireError(f"unknown control message {kind!r}")
    missing = [f for f in MESSAGES[kind] if f not in message]
    if missing:
        raise WireError(f"{kind} lacks {missing}")
    if "n" in message:
        _int(message["n"], 0, 1 << 62)
    if kind == "export":
        if not isinstance(message["track"], dict):
            raise WireError("export: track is an object")
        message["track"] = TrackAnnouncement.from_json(message["track"])
    if "s" in message and not isinstance(message["s"], str):
        raise WireError(f"{kind}: s is a string")
    for field in ("room", "participant", "track"):
        if field in message and kind != "export" and not isinstance(message[field], str):
            raise WireError(f"{kind}: {field} is a string")
    return message


def _str(value: object) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise WireError(f"expected a string, got {value!r}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _int(value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise WireError(f"expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def _opt_int(value: object, lo: int, hi: int) -> int | None:
    return None if value is None else _int(value, lo, hi)


def _u32(value: object) -> int:
    return _int(value, 0, 0xFFFFFFFF)
