"""Data channel messages: the envelope, the limits, and what to relay to whom.

Pure logic, no aiortc: ``sfu/data_side.py`` wires it to a participant's data channel.

Every participant's *publish* connection carries one data channel, label ``"parley"``
(``DATA_CHANNEL_LABEL``), opened by the client (in-band, DCEP) in its publish offer's
``m=application`` SCTP m-line. The client sends on it; the server relays each message to
the other participants' own ``"parley"`` channels (docs/protocol.md, "Data channel").

Envelope, client to server:

* **text**: a JSON object ``{"data": <any JSON value>, "to": ["<participant id>", ...]}``;
  ``to`` is optional (absent: everyone else in the room). Relayed as the text
  ``{"from": "<sender id>", "data": <the same value>}`` (plus ``"to"`` when targeted).
* **binary**: one byte ``n`` (the number of recipients, 0 for the whole room), then ``n``
  times (one byte ``len``, ``len`` bytes of UTF-8 participant id), then the payload.
  Relayed as one byte ``len``, the sender id (UTF-8), then the payload unchanged.

Limits (``DataLimits``), checked in this order on the raw message: its size (the whole
envelope) against ``max_message_bytes``, then two token buckets (messages/s and
bytes/s, each with a burst). A refused message is dropped, counted, and reported to the
sender with an error code (``DATA_TOO_LARGE``, ``DATA_RATE_LIMITED``, ``BAD_DATA``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .token_bucket import TokenBucket

DATA_CHANNEL_LABEL = "parley"

#: error codes a sender is told (a signaling ``error`` message)
DATA_TOO_LARGE = "data_too_large"
DATA_RATE_LIMITED = "data_rate_limited"
BAD_DATA = "bad_data"

#: the most recipients one message may name
MAX_RECIPIENTS = 255
#: the longest participant id a binary envelope can carry (one length byte)
MAX_ID_BYTES = 255


@dataclass(frozen=True, slots=True)
class DataLimits:
    """What one participant may send on its data channel."""

    #: the largest message (the whole envelope, in bytes; text counted as UTF-8)
    max_message_bytes: int = 16 * 1024
    #: sustained messages per second, and how many may come at once
    messages_per_second: float = 50.0
    message_burst: float = 100.0
    #: sustained bytes per second, and how many may come at once
    bytes_per_second: float = 256 * 1024
    byte_burst: float = 512 * 1024
    #: a receiver whose channel has more than this queued (bytes) misses messages
    #: rather than grow the server's memory (counted as ``data_dropped_slow``)
    max_buffered_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_message_bytes <= 0 or self.byte_burst < self.max_message_bytes:
            raise ValueError("data limits: byte_burst must be at least max_message_bytes > 0")


class DataLimiter:
    """One participant's limits: size, then messages/s and bytes/s."""

    def __init__(self, limits: DataLimits, now: float) -> None:
        self.limits = limits
        self.messages = TokenBucket(limits.messages_per_second, limits.message_burst, now)
        self.bytes = TokenBucket(limits.bytes_per_second, limits.byte_burst, now)

    def check(self, size: int, now: float) -> str | None:
        """None when a message of ``size`` bytes may go (its tokens are spent), else the
        error code why not (nothing is spent)."""
        if size > self.limits.max_message_bytes:
            return DATA_TOO_LARGE
        if not (self.messages.has(1.0, now) and self.bytes.has(float(size), now)):
            return DATA_RATE_LIMITED
        self.messages.spend(1.0)
        self.bytes.spend(float(size))
        return None


class EnvelopeError(ValueError):
    """A message whose envelope cannot be read."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message as sent: to whom (None: the room) and what."""

    to: tuple[str, ...] | None
    #: the JSON value of a text message, or the payload bytes of a binary one
    data: object
    binary: bool


def message_size(message: str | bytes) -> int:
    return len(message.encode("utf-8")) if isinstance(message, str) else len(message)


def parse_envelope(message: str | bytes) -> Envelope:
    """Read a client's message; raises EnvelopeError."""
    if isinstance(message, str):
        return _parse_text(message)
    return _parse_binary(message)


def _check_recipients(ids: list[object]) -> tuple[str, ...]:
    if len(ids) > MAX_RECIPIENTS:
        raise EnvelopeError(f"'to' names more than {MAX_RECIPIENTS} participants")
    out: list[str] = []
    for item in ids:
        if not isinstance(item, str) or not item:
            raise EnvelopeError("'to' must be a list of participant ids (non-empty strings)")
        if len(item.encode("utf-8")) > MAX_ID_BYTES:
            raise EnvelopeError(f"a participant id in 'to' is longer than {MAX_ID_BYTES} bytes")
        out.append(item)
    return tuple(out)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_text(message: str) -> Envelope:
    try:
        value = json.loads(message, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # nesting too deep for the parser
        raise EnvelopeError(f"a text message must be a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise EnvelopeError("a text message must be a JSON object")
    if "data" not in value:
        raise EnvelopeError("a text message needs 'data'")
    to = value.get("to")
    if to is not None and not isinstance(to, list):
        raise EnvelopeError("'to' must be a list of participant ids")
    return Envelope(
        to=_check_recipients(to) if to is not None else None, data=value["data"], binary=False
    )


def _parse_binary(message: bytes) -> Envelope:
    if not message:
        raise EnvelopeError("a binary message needs at least its recipient count byte")
    count = message[0]
    pos = 1
    ids: list[object] = []
    for _ in range(count):
        if pos >= len(message):
            raise EnvelopeError("a binary message ends inside its recipient list")
        length = message[pos]
        end = pos + 1 + length
        if length == 0 or end > len(message):
            raise EnvelopeError("a binary message has a bad recipient id length")
        try:
            ids.append(message[pos + 1 : end].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EnvelopeError("a recipient id is not UTF-8") from exc
        pos = end
    to = _check_recipients(ids) if count else None
    return Envelope(to=to, data=bytes(message[pos:]), binary=True)


def encode_envelope(data: object, to: tuple[str, ...] | None = None) -> str | bytes:
    """A client's message (what bots send): bytes data gives a binary envelope."""
    if isinstance(data, bytes | bytearray):
        ids = to or ()
        if len(ids) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients")
        head = bytearray([len(ids)])
        for pid in ids:
            raw = pid.encode("utf-8")
            if not 0 < len(raw) <= MAX_ID_BYTES:
                raise ValueError("bad participant id")
            head += bytes([len(raw)]) + raw
        return bytes(head) + bytes(data)
    body: dict[str, object] = {"data": data}
    if to is not None:
        body["to"] = list(to)
    return json.dumps(body, separators=(",", ":"))


def relayed(sender: str, envelope: Envelope) -> str | bytes:
    """What the recipients of ``envelope`` receive: the sender's id and the data."""
    if envelope.binary:
        raw = sender.encode("utf-8")
        assert isinstance(envelope.data, bytes)
        return bytes([len(raw)]) + raw + envelope.data
    body: dict[str, object] = {"from": sender, "data": envelope.data}
    if envelope.to is not None:
        body["to"] = list(envelope.to)
    return json.dumps(body, separators=(",", ":"))


def decode_relayed(message: str | bytes) -> tuple[str, object]:
    """A received relayed message: (sender id, data). Raises EnvelopeError."""
    if isinstance(message, str):
        try:
            value = json.loads(message)
        except ValueError as exc:
            raise EnvelopeError(str(exc)) from exc
        if not isinstance(value, dict) or not isinstance(value.get("from"), str):
            raise EnvelopeError("a relayed text message is a JSON object with 'from'")
        return value["from"], value.get("data")
    if not message or len(message) < 1 + message[0]:
        raise EnvelopeError("a relayed binary message is too short")
    length = message[0]
    try:
        sender = message[1 : 1 + length].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("the sender id is not UTF-8") from exc
    return sender, bytes(message[1 + length :])


def recipients(sender: str, envelope: Envelope, present: list[str]) -> list[str]:
    """Who gets the message among the participants ``present`` (ids, in room order):
    everyone but the sender, or those named that are present (each once, never the
    sender). Names of participants not present are ignored."""
    if envelope.to is None:
        return [pid for pid in present if pid != sender]
    wanted = set(envelope.to)
    return [pid for pid in present if pid in wanted and pid != sender]
